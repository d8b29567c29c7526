"""Callback URLs stored encrypted: room for the longer text

Revision ID: 0015_sealed_callbacks
Revises: 0014_web_catalog
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_sealed_callbacks"
down_revision = "0014_web_catalog"
branch_labels = None
depends_on = None

COLUMNS = (("job_instances", "callback_url", True), ("outbox", "target", False))


def _retype(to: sa.types.TypeEngine[str], existing: sa.types.TypeEngine[str]) -> None:
    # SQLite holds text of any length in a VARCHAR: only PostgreSQL needs the change,
    # and there it rewrites nothing (varchar to text)
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, nullable in COLUMNS:
        op.alter_column(table, column, type_=to, existing_type=existing, existing_nullable=nullable)


def upgrade() -> None:
    _retype(sa.Text(), sa.String(1024))


def downgrade() -> None:
    _retype(sa.String(1024), sa.Text())
