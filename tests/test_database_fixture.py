"""The database fixtures hand out working databases on each backend: one migrated to head,
and an empty one that migrates."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.conftest import PostgresqlPool

from jobfleet.store.database import Database

VERSION = "SELECT version_num FROM alembic_version"


def _table_names(conn: Connection) -> list[str]:
    return inspect(conn).get_table_names()


async def test_select_one(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_migrate_creates_hosts(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        async with db.connect() as conn:
            assert await conn.run_sync(_table_names) == []
        await db.migrate()
        async with db.connect() as conn:
            assert "hosts" in await conn.run_sync(_table_names)
    finally:
        await db.close()


async def test_database_url_is_at_head_and_has_no_jobs(database_url: str) -> None:
    db = Database(database_url)
    try:
        async with db.connect() as conn:
            assert "hosts" in await conn.run_sync(_table_names)
            jobs = await conn.execute(text("SELECT count(*) FROM job_instances"))
            assert jobs.scalar_one() == 0
            before = (await conn.execute(text(VERSION))).scalar_one()
        await db.migrate()
        async with db.connect() as conn:
            assert (await conn.execute(text(VERSION))).scalar_one() == before
    finally:
        await db.close()


async def test_a_pool_that_cannot_start_fails_every_take_with_the_cause(
    monkeypatch: pytest.MonkeyPatch, unused_tcp_port: int
) -> None:
    # nothing listens there: the pool's thread ends at once
    url = f"postgresql://jobfleet@127.0.0.1:{unused_tcp_port}/postgres"
    monkeypatch.setenv("JOBFLEET_TEST_PG_URL", url)
    pool = PostgresqlPool("jf_template_none")
    try:
        for _ in range(3):
            with pytest.raises(RuntimeError, match="pool has stopped") as caught:
                await asyncio.wait_for(pool.take(), 30)
            assert isinstance(caught.value.__cause__, OSError)
    finally:
        pool.close()
