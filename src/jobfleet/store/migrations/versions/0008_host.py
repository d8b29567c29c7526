"""blobs: the writer holding a blob while it is written

Revision ID: 0008_host
Revises: 0007_agents
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_host"
down_revision = "0007_agents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("write_token", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_column("write_token")
