"""Host results are found by address: the job list filtered by ip reads only those

Without it PostgreSQL answered the filter by a scan of every host result of every
business and year (~320 ms at a million jobs, growing with history), and SQLite by a
lookup per job of the range.

Revision ID: 0024_step_hosts_ip
Revises: 0023_cron_name_unique
"""

from __future__ import annotations

from alembic import op

revision = "0024_step_hosts_ip"
down_revision = "0023_cron_name_unique"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_step_hosts_ip"), "step_hosts", ["ip"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_step_hosts_ip"), table_name="step_hosts")
