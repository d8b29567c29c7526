"""Which constraint a refused write broke.

An ``IntegrityError`` is any constraint: a unique key, a NOT NULL, a foreign key, a
check. A store that answers "the name is taken" must know it was the name's unique key,
or a column left empty by a fault of jobfleet reaches the caller as a conflict of
theirs, and the fault is never seen. PostgreSQL names the constraint (asyncpg's
``constraint_name``, its name from ``tables.metadata``'s naming convention); SQLite
names the columns of the key in its message (``UNIQUE constraint failed: t.a, t.b``).
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import Table

from jobfleet.store.outage import exception_chain

# PostgreSQL's unique_violation
_PG_UNIQUE = "23505"
# SQLite's extended result code of a unique key (a primary key has its own)
_SQLITE_UNIQUE = 2067


def unique_violated(exc: BaseException, table: Table, *columns: str) -> bool:
    """Is ``exc`` the unique key of ``table`` on ``columns`` refusing a write?"""
    # the name tables.metadata's naming convention gives the key ("uq_%(table_name)s_…")
    name = f"uq_{table.name}_{'_'.join(columns)}"
    said = "UNIQUE constraint failed: " + ", ".join(f"{table.name}.{c}" for c in columns)
    for link in exception_chain(exc):
        # asyncpg's own error names the constraint; the driver's wrapping of it does not
        if (
            getattr(link, "sqlstate", None) == _PG_UNIQUE
            and getattr(link, "constraint_name", None) == name
        ):
            return True
        if isinstance(link, sqlite3.IntegrityError):
            code = getattr(link, "sqlite_errorcode", None)
            return code == _SQLITE_UNIQUE and str(link) == said
    return False
