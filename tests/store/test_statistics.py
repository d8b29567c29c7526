"""SQLite's planner statistics: gathered when the server starts on a database that has
none and again every interval, whatever tables were read; PostgreSQL is left to its
autovacuum."""

from __future__ import annotations

import asyncio

from sqlalchemy import insert, text

from jobfleet.store.database import Database
from jobfleet.store.statistics import Statistics
from jobfleet.store.tables import job_instances


async def _fill(db: Database, count: int) -> None:
    async with db.begin() as conn:
        await conn.execute(insert(job_instances), [
            {"bk_biz_id": 2, "scope_type": "biz", "scope_id": "2", "name": f"j{i}", "type": 0,
             "launch_mode": 1, "operator": "admin", "app_code": "t", "status": 3,
             "create_time": i} for i in range(count)])


async def _stats(db: Database) -> dict[str, str]:
    async with db.connect() as conn:
        if not (await conn.execute(text(
                "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"))).scalar_one():
            return {}
        rows = await conn.execute(text(
            "SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'job_instances'"))
        return {str(idx): str(stat) for idx, stat in rows}


def _rows(stats: dict[str, str]) -> int:
    return int(stats.get("ix_job_instances_status", "0").split()[0])


async def _wait_stats(db: Database, at_least: int) -> dict[str, str]:
    for _ in range(200):
        stats = await _stats(db)
        if _rows(stats) >= at_least:
            return stats
        await asyncio.sleep(0.05)
    return await _stats(db)


async def test_statistics_at_start_and_every_interval(database_url: str) -> None:
    db = Database(database_url)
    try:
        await _fill(db, 50)
        if not db.is_sqlite:
            await db.analyze()  # nothing to do: autovacuum analyzes
            return
        assert await _stats(db) == {}
        keeper = Statistics(db, interval=0.2, first=0)
        keeper.start()
        try:
            # each index of the table is described: rows, then rows per value
            stats = await _wait_stats(db, 50)
            assert stats["ix_job_instances_status"].split()[:2] == ["50", "50"], stats
            # grown, and read by no connection: still found at the next pass
            await _fill(db, 5000)
            # (the sample estimates the count of a table larger than it)
            stats = await _wait_stats(db, 2500)
            assert 2500 <= _rows(stats) <= 10_000, stats
        finally:
            await keeper.stop()
    finally:
        await db.close()
