"""The database handle survives a statement cancelled while it waits for a lock."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from jobfleet.store.database import Database


async def test_a_statement_cancelled_twice_leaves_nothing_hanging(tmp_path: Path) -> None:
    # a stop that times out cancels a task a second time while its statement still
    # waits for SQLite's write lock; nothing may be left waiting on the connection
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}")
    async with db.begin() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))
    holder = await db.engine.connect()
    await holder.execute(text("BEGIN IMMEDIATE"))
    await holder.execute(text("INSERT INTO t VALUES (1)"))

    async def write() -> None:
        async with db.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (2)"))

    task = asyncio.create_task(write())
    await asyncio.sleep(0.3)
    task.cancel()
    await asyncio.sleep(0.1)
    task.cancel()
    await holder.rollback()
    await holder.close()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
    await asyncio.wait_for(db.close(), 10)
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert left == []
    async with db.connect() as conn:  # the engine still serves new connections
        # the holder rolled back and the cancelled write never committed
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 0
    await db.close()
