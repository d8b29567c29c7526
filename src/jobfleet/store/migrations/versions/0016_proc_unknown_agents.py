"""A process operation's result for an agent id that names no host

Revision ID: 0016_proc_unknown_agents
Revises: 0015_sealed_callbacks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_proc_unknown_agents"
down_revision = "0015_sealed_callbacks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("proc_results") as batch:
        batch.alter_column("bk_host_id", existing_type=sa.BigInteger(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM proc_results WHERE bk_host_id IS NULL")
    with op.batch_alter_table("proc_results") as batch:
        batch.alter_column("bk_host_id", existing_type=sa.BigInteger(), nullable=False)
