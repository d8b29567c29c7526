"""The plans of the SQL a store call sends, on the backend under test.

PostgreSQL plans a table of a few test rows as a sequential scan whatever its indexes;
with sequential scans, sorts and bitmap scans priced out the plan shows whether an index
serves the query, in the order asked, as it would on a table of a million rows. SQLite
has no statistics here (a store test runs no ANALYZE; the server samples its tables at
start and hourly) and plans the same way at any size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection

from jobfleet.store.database import Database


async def plans_of(db: Database, call: Callable[[], Awaitable[Any]]) -> list[str]:
    """Each SELECT ``call`` sends, its statement and plan as one line of text."""
    seen: list[tuple[str, Any]] = []

    def record(_c: Connection, _cur: Any, statement: str, params: Any, _x: Any, _m: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, params))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        await call()
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    found = []
    async with db.connect() as conn:
        if not db.is_sqlite:
            # and sorts and bitmap scans: an index read in order shows itself
            for knob in ("enable_seqscan", "enable_sort", "enable_bitmapscan"):
                await conn.exec_driver_sql(f"SET {knob} = off")
        for statement, params in seen:
            prefix = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
            rows = (await conn.exec_driver_sql(prefix + statement, params)).all()
            plan = " | ".join(str(r[-1] if db.is_sqlite else r[0]) for r in rows)
            found.append(f"{' '.join(statement.split())} => {plan}")
    return found


def plan_for(plans: list[str], table: str) -> str:
    """The one plan of a statement that reads ``table``."""
    hits = [p for p in plans if f"FROM {table} " in p or p.split(" => ")[0].endswith(table)]
    assert len(hits) == 1, plans
    return hits[0].split(" => ", 1)[1]


def sorts_all(plan: str) -> bool:
    """Whether the plan sorts every row it found to return a few: SQLite's temporary
    tree for the whole ORDER BY, PostgreSQL's Sort node (not an incremental sort of the
    ties of an order an index gives)."""
    for node in plan.split(" | "):
        node = node.strip().removeprefix("->").strip()
        if node.startswith("Sort  (") or "USE TEMP B-TREE FOR ORDER BY" in node:
            return True
    return False
