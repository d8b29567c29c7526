"""Lists that cost their page: jobs by status, operator or cron, audit entries by scope,
the outbox by state, scripts by business

- ``job_instances (scope_type, scope_id, status | operator | cron_id, create_time)``: a
  business's jobs of one status (the job list's status filter, the console's running,
  failed and waiting jobs), one operator or one cron in a time range read those jobs
  only, not every job of the range.
- ``audit_log (scope_type, scope_id, id)``: a scope's entries, newest first, and their
  count, without reading the entries of every other scope.
- ``outbox (state, next_attempt_at)``: the due pending rows without reading the
  delivered ones, which are nearly all of the table.
- ``scripts (bk_biz_id, last_modify_time)``: a page of a business's scripts, the last
  changed first, without sorting all of them.

Revision ID: 0019_list_indexes
Revises: 0018_lookup_indexes
"""

from __future__ import annotations

from alembic import op

revision = "0019_list_indexes"
down_revision = "0018_lookup_indexes"
branch_labels = None
depends_on = None

INDEXES = [
    ("job_instances", ["scope_type", "scope_id", "status", "create_time"]),
    ("job_instances", ["scope_type", "scope_id", "operator", "create_time"]),
    ("job_instances", ["scope_type", "scope_id", "cron_id", "create_time"]),
    ("audit_log", ["scope_type", "scope_id", "id"]),
    ("outbox", ["state", "next_attempt_at"]),
    ("scripts", ["bk_biz_id", "last_modify_time"]),
]


def _name(table: str, columns: list[str]) -> str:
    return f"ix_{table}_{'_'.join(columns)}"


def upgrade() -> None:
    for table, columns in INDEXES:
        op.create_index(_name(table, columns), table, columns, unique=False)


def downgrade() -> None:
    for table, columns in reversed(INDEXES):
        op.drop_index(_name(table, columns), table_name=table)
