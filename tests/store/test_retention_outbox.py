"""A job's purge waits for its pending deliveries: a callback still being retried (its
retry span may outlast a short job period) is not deleted with its job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from jobfleet.store.database import Database
from jobfleet.store.retention import RetentionStore
from jobfleet.store.tables import job_instances, outbox


async def _old_job(db: Database, state: str) -> int:
    async with db.begin() as conn:
        job_id = int((await conn.execute(insert(job_instances).values(
            bk_biz_id=2, scope_type="biz", scope_id="2", name="old", type=0, launch_mode=1,
            operator="admin", app_code="ci", status=3, create_time=1000, end_time=2000,
        ))).inserted_primary_key[0])
        await conn.execute(insert(outbox).values(
            kind="callback", job_instance_id=job_id, target="sealed", payload="{}",
            attempts=1, max_attempts=10, next_attempt_at=time.time() + 60, state=state,
            last_error="", create_time=2000))
    return job_id


async def _count(db: Database, job_id: int) -> tuple[int, int]:
    async with db.connect() as conn:
        jobs = (await conn.execute(select(func.count()).select_from(job_instances).where(
            job_instances.c.id == job_id))).scalar_one()
        rows = (await conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.job_instance_id == job_id))).scalar_one()
    return int(jobs), int(rows)


async def test_a_job_whose_callback_is_pending_is_kept_until_it_is_delivered(
        db: Database, tmp_path: Path) -> None:
    pending = await _old_job(db, "pending")
    sent = await _old_job(db, "done")
    store = RetentionStore(db, tmp_path)
    assert await store.purge_jobs(10_000, 10) == 1
    assert await _count(db, pending) == (1, 1)
    assert await _count(db, sent) == (0, 0)
    async with db.begin() as conn:
        await conn.execute(update(outbox).where(outbox.c.job_instance_id == pending).values(
            state="failed"))
    assert await store.purge_jobs(10_000, 10) == 1
    assert await _count(db, pending) == (0, 0)


async def test_a_callback_made_pending_after_the_pick_keeps_its_job(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job picked as done with its callback is retried and finishes again, with a new
    callback pending, before its rows are deleted: it is kept, callback and all."""
    job_id = await _old_job(db, "done")
    store = RetentionStore(db, tmp_path)
    pick = store._old_finished_jobs

    async def pick_then_finish_again(conn: Any, before_ms: int, limit: int) -> list[int]:
        ids = await pick(conn, before_ms, limit)
        await conn.execute(insert(outbox).values(
            kind="callback", job_instance_id=job_id, target="sealed", payload="{}",
            attempts=0, max_attempts=10, next_attempt_at=time.time(), state="pending",
            last_error="", create_time=3000))
        return ids
    monkeypatch.setattr(store, "_old_finished_jobs", pick_then_finish_again)
    assert await store.purge_jobs(10_000, 10) == 0
    assert await _count(db, job_id) == (1, 2)
