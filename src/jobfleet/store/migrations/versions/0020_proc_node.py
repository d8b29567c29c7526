"""The node that asks a process operation's agents

A node keeps an operation's waits for its agents in memory: a node that dies (SIGKILL)
leaves its hosts "handling" for ever unless, started again, it finds its own
operations and answers what their agents had not.

Revision ID: 0020_proc_node
Revises: 0019_list_indexes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_proc_node"
down_revision = "0019_list_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("proc_operations") as batch:
        batch.add_column(sa.Column("node_id", sa.String(length=64), nullable=True))
        batch.create_index(batch.f("ix_proc_operations_node_id"), ["node_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("proc_operations") as batch:
        batch.drop_index(batch.f("ix_proc_operations_node_id"))
        batch.drop_column("node_id")
