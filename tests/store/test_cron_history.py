"""A cron's history of firings: pages of firings with their job's status, and the last
firing of each cron, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import insert

from jobfleet.store.crons import FAILED, FIRED, SKIPPED, CronStore
from jobfleet.store.database import Database, now_ms
from jobfleet.store.tables import job_instances


async def new_cron(store: CronStore, name: str) -> int:
    return await store.create({
        "bk_biz_id": 2, "scope_type": "biz", "scope_id": "2", "name": name, "plan_id": 1,
        "expression": "* * * * *", "timezone": "UTC", "variables": [],
    })


async def new_job(db: Database, status: int) -> int:
    async with db.begin() as conn:
        res = await conn.execute(insert(job_instances).values(
            bk_biz_id=2, scope_type="biz", scope_id="2", name="cron job", type=0,
            launch_mode=3, operator="admin", app_code="tests", status=status,
            create_time=now_ms()))
    return int(res.inserted_primary_key[0])  # type: ignore[index]


async def test_history_pages_newest_first_with_job_status(db: Database) -> None:
    store = CronStore(db)
    cron_id, other = await new_cron(store, "every minute"), await new_cron(store, "other")
    done, running = await new_job(db, 3), await new_job(db, 2)
    async with db.begin() as conn:
        await store.record(conn, cron_id, 60, FIRED, node="a", job_instance_id=done)
        await store.record(conn, cron_id, 120, SKIPPED, node="a", message="missed")
        await store.record(conn, cron_id, 180, FAILED, node="b", message="no such plan")
        await store.record(conn, cron_id, 240, FIRED, node="b", job_instance_id=running)
        await store.record(conn, other, 60, FIRED, node="a", job_instance_id=done)
    total, rows = await store.history(cron_id, limit=2)
    assert total == 4
    assert [(r.slot, r.outcome, r.job_instance_id, r.job_status) for r in rows] == [
        (240, FIRED, running, 2), (180, FAILED, None, None)]
    total, rows = await store.history(cron_id, offset=2, limit=10)
    assert [(r.slot, r.outcome, r.message, r.job_status) for r in rows] == [
        (120, SKIPPED, "missed", None), (60, FIRED, "", 3)]
    assert await store.history(12345) == (0, [])


async def test_last_firing_of_each_cron(db: Database) -> None:
    store = CronStore(db)
    first, second, never = [await new_cron(store, n) for n in ("one", "two", "never")]
    job = await new_job(db, 4)
    async with db.begin() as conn:
        await store.record(conn, first, 60, FIRED, node="a", job_instance_id=job)
        await store.record(conn, first, 120, SKIPPED, node="a")
        await store.record(conn, second, 60, FIRED, node="a", job_instance_id=job)
    last = await store.last_firings([first, second, never])
    assert set(last) == {first, second}
    assert (last[first].slot, last[first].outcome, last[first].job_status) == (120, SKIPPED, None)
    assert (last[second].slot, last[second].job_instance_id, last[second].job_status) == (
        60, job, 4)
    assert await store.last_firings([]) == {}
