"""Ids of script versions, accounts, templates and plans are never given out twice

Plan steps name script versions and accounts by id, and clients keep template and plan
ids. SQLite gives a new row the largest id in use plus one, so after the row holding
the largest id was deleted its id went to the next row: a plan then ran another script,
or as another account, and a saved plan id launched another plan. AUTOINCREMENT makes
SQLite remember every id it gave out; PostgreSQL sequences already never go back.

Revision ID: 0021_stable_ids
Revises: 0020_proc_node
"""

from __future__ import annotations

from alembic import op

revision = "0021_stable_ids"
down_revision = "0020_proc_node"
branch_labels = None
depends_on = None

TABLES = ("script_versions", "accounts", "job_templates", "job_plans")


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        # the copy of the rows sets the table's counter to the largest id it holds
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
