"""File log rows found by their full key: a step's result for one file is one index look-up

A file step of thousands of files updates each file's row by (step, execute count,
host, mode, seq); with the index ending at the host, every update scanned all of that
host's rows, so a step cost the square of its file count.

Revision ID: 0017_file_log_index
Revises: 0016_proc_unknown_agents
"""

from __future__ import annotations

from alembic import op

revision = "0017_file_log_index"
down_revision = "0016_proc_unknown_agents"
branch_labels = None
depends_on = None

OLD = "ix_file_logs_step_instance_id_execute_count_bk_host_id"
NEW = "ix_file_logs_step_instance_id_execute_count_bk_host_id_mode_seq"


def upgrade() -> None:
    with op.batch_alter_table("file_logs", schema=None) as batch_op:
        batch_op.create_index(
            NEW, ["step_instance_id", "execute_count", "bk_host_id", "mode", "seq"], unique=False
        )
        batch_op.drop_index(OLD)


def downgrade() -> None:
    with op.batch_alter_table("file_logs", schema=None) as batch_op:
        batch_op.create_index(
            OLD, ["step_instance_id", "execute_count", "bk_host_id"], unique=False
        )
        batch_op.drop_index(NEW)
