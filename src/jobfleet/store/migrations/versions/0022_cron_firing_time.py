"""Cron firings are found by their age: retention purges them with the jobs' period

Revision ID: 0022_cron_firing_time
Revises: 0021_stable_ids
"""

from __future__ import annotations

from alembic import op

revision = "0022_cron_firing_time"
down_revision = "0021_stable_ids"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_cron_firings_create_time"), "cron_firings", ["create_time"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_cron_firings_create_time"), table_name="cron_firings")
