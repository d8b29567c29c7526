"""step_hosts drops log_size

The column was written 0 when a host row was made and never updated nor read: the
size of a host's output is known from its log rows, so a second copy would only cost a
write on the output path to keep it true.

Revision ID: 0027_drop_log_size
Revises: 0026_lease_generation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027_drop_log_size"
down_revision = "0026_lease_generation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("step_hosts", schema=None) as batch_op:
        batch_op.drop_column("log_size")


def downgrade() -> None:
    with op.batch_alter_table("step_hosts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("log_size", sa.BigInteger(), nullable=False, server_default="0")
        )
