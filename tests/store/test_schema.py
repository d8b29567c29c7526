"""The migrations build the schema ``store/tables.py`` describes, on every backend."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from jobfleet.store.database import Database
from jobfleet.store.tables import metadata

# 0015 widened these to TEXT on PostgreSQL only: SQLite keeps text of any length in a
# VARCHAR, so its columns stay as first created
SQLITE_VARCHARS = {("job_instances", "callback_url"), ("outbox", "target")}


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _known(diff: Any, sqlite: bool) -> bool:
    # a column's changes come as a list of tuples, a table's or an index's as one tuple
    if isinstance(diff, list) and len(diff) == 1 and diff[0][0] == "modify_type":
        _, _, table, column, *_ = diff[0]
        return sqlite and (table, column) in SQLITE_VARCHARS
    return False


async def test_the_migrated_schema_is_the_one_the_tables_describe(db: Database) -> None:
    async with db.connect() as conn:
        differences = await conn.run_sync(_differences)
    assert [d for d in differences if not _known(d, db.is_sqlite)] == []
