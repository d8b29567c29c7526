"""A purge's statements stay within what a database driver takes: asyncpg refuses a
statement of more than 32,767 arguments, so no statement may list one per row owned."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, insert, select

from jobfleet.store.database import Database
from jobfleet.store.retention import RetentionStore
from jobfleet.store.tables import job_instances, step_hosts, step_instances

STEPS = 33_000


async def test_a_job_of_more_steps_than_a_statement_takes_arguments_is_purged(
        db: Database, tmp_path: Path) -> None:
    async with db.begin() as conn:
        job_id = (await conn.execute(insert(job_instances).values(
            bk_biz_id=2, scope_type="biz", scope_id="2", name="many", type=0, launch_mode=1,
            operator="admin", app_code="ci", status=3, create_time=1000, end_time=2000,
        ))).inserted_primary_key[0]
        await conn.execute(insert(step_instances), [
            {"job_instance_id": job_id, "step_order": n, "name": "s", "type": 1, "status": 3,
             "create_time": 1000} for n in range(STEPS)])
        first = (await conn.execute(select(func.min(step_instances.c.id)))).scalar_one()
        await conn.execute(insert(step_hosts).values(
            step_instance_id=first, execute_count=0, bk_host_id=1, bk_cloud_id=0,
            ip="127.0.0.1", status=9))
    assert await RetentionStore(db, tmp_path).purge_jobs(10_000, 10) == 1
    async with db.connect() as conn:
        for table in (job_instances, step_instances, step_hosts):
            left = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            assert left == 0, table.name


async def test_two_nodes_purging_at_once_purge_each_job_once(
        db: Database, tmp_path: Path) -> None:
    """Every node of a cluster runs the purge: two passes over the same old jobs at once
    neither fail nor count a job twice."""
    async with db.begin() as conn:
        for _ in range(40):
            job_id = (await conn.execute(insert(job_instances).values(
                bk_biz_id=2, scope_type="biz", scope_id="2", name="old", type=0,
                launch_mode=1, operator="admin", app_code="ci", status=3, create_time=1000,
                end_time=2000))).inserted_primary_key[0]
            await conn.execute(insert(step_instances), [
                {"job_instance_id": job_id, "step_order": n, "name": "s", "type": 1,
                 "status": 3, "create_time": 1000} for n in range(3)])
    other = Database(db.url)
    try:
        stores = [RetentionStore(db, tmp_path), RetentionStore(other, tmp_path)]

        async def node(store: RetentionStore) -> int:
            total = 0
            while count := await store.purge_jobs(10_000, 7):
                total += count
            return total
        counts = await asyncio.gather(*(node(s) for s in stores))
    finally:
        await other.close()
    assert sum(counts) == 40, counts
    async with db.connect() as conn:
        for table in (job_instances, step_instances):
            left = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            assert left == 0, table.name
