"""The database holds the check values of the keys its servers must share

A server whose secret key is not the one the stored secrets were sealed with (or whose
agent CA is not the one agents pinned) is refused at start, before it writes anything
(store/key_checks.py); the first server on a database writes them.

Revision ID: 0025_key_checks
Revises: 0024_step_hosts_ip
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025_key_checks"
down_revision = "0024_step_hosts_ip"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_checks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
        sa.Column("create_time", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_checks")
