"""The database handle survives a statement cancelled while it waits for a lock, and a
connection dropped without a close."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import SAWarning

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


async def test_a_write_cancelled_mid_statement_leaves_no_lock_held(tmp_path: Path) -> None:
    # A stop cancels the result writer while its INSERT of many rows runs in the
    # driver's thread. The connection is then closed; a close alone, while the
    # cancelled statement's cursor is still referenced (its traceback, until the
    # cyclic collector runs), leaves SQLite's connection a zombie that keeps its write
    # transaction open, and every other writer of the file waits its busy timeout
    # (60 s) on that lock.
    file = tmp_path / "zombie.db"
    entered, release = threading.Event(), threading.Event()

    def hold() -> int:
        entered.set()
        release.wait(10)
        return 1

    db = Database(f"sqlite+aiosqlite:///{file}")
    event.listen(
        db.engine.sync_engine,
        "connect",
        lambda conn, _record: conn.create_function("hold", 0, hold),
    )
    async with db.begin() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))

    async def write() -> None:
        async with db.begin() as conn:
            # many rows: the driver's executemany, whose statement the cursor keeps
            await conn.execute(text("INSERT INTO t VALUES (hold() + :x)"), [{"x": 1}, {"x": 2}])

    # the cancelled statement's objects stay referenced as long as they would until
    # the collector's next pass
    gc.disable()
    try:
        task = asyncio.create_task(write())
        assert await asyncio.to_thread(entered.wait, 10)
        task.cancel()
        release.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
        other = sqlite3.connect(file, timeout=0.5)
        try:
            # raises "database is locked" while the cancelled write's transaction is open
            other.execute("INSERT INTO t VALUES (3)")
            other.commit()
        finally:
            other.close()
    finally:
        gc.enable()
    async with db.connect() as conn:
        # the cancelled write never committed
        assert (await conn.execute(text("SELECT x FROM t"))).scalars().all() == [3]
    await db.close()


async def test_a_connection_dropped_without_close_leaves_no_lock_held(tmp_path: Path) -> None:
    # A connection no one closed (its task was destroyed, its generator never finished)
    # is closed by the garbage collector, without a rollback; while a statement of its
    # is still referenced, SQLite keeps it a zombie with its write transaction open.
    file = tmp_path / "dropped.db"
    db = Database(f"sqlite+aiosqlite:///{file}")
    async with db.begin() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))
    dropped = await db.engine.connect()
    await dropped.begin()
    await dropped.execute(text("INSERT INTO t VALUES (1)"))
    driver = (await dropped.get_raw_connection()).driver_connection
    assert driver is not None
    # a statement left stepping, as one cancelled in the middle leaves it
    stepping = await driver.execute("SELECT x FROM t UNION ALL SELECT 2")
    await stepping.fetchone()
    del dropped, driver
    with pytest.warns(SAWarning, match="garbage collector"):
        gc.collect()
    other = sqlite3.connect(file, timeout=2)
    try:
        # raises "database is locked" while the dropped transaction is open
        other.execute("INSERT INTO t VALUES (3)")
        other.commit()
        # the dropped transaction never committed
        assert other.execute("SELECT x FROM t").fetchall() == [(3,)]
    finally:
        other.close()
        del stepping
    await db.close()
