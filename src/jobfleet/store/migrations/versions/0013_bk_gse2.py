"""The last load each agent reported (CPU, memory, its start), for list_agent_info

Revision ID: 0013_bk_gse2
Revises: 0012_procs_heal
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_bk_gse2"
down_revision = "0012_procs_heal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_loads",
        sa.Column("bk_host_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("cpu", sa.Float(), nullable=False),
        sa.Column("mem", sa.Float(), nullable=False),
        sa.Column("started", sa.BigInteger(), nullable=False),
        sa.Column("report_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bk_host_id", name=op.f("pk_agent_loads")),
    )


def downgrade() -> None:
    op.drop_table("agent_loads")
