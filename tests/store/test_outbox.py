"""The outbox on a real database: rows added with a job's end, claimed once, recorded."""

from __future__ import annotations

import time

from tests.store.test_leases import new_job

from jobfleet.domain.status import RunStatus
from jobfleet.store.database import Database
from jobfleet.store.jobs import JobStore
from jobfleet.store.outbox import OutboxStore

CALLBACK = ("http://127.0.0.1:9/cb", '{"status": 3}', 5)
NOTICE = {"kind": "webhook", "target": "http://127.0.0.1:9/hook", "payload": "{}",
          "max_attempts": 2}


async def test_rows_come_with_the_final_status_and_each_attempt_is_taken_once(
    db: Database,
) -> None:
    jobs, outbox = JobStore(db), OutboxStore(db)
    job_id, _ = await new_job(jobs)
    assert await outbox.due(time.time(), 50) == []
    await jobs.finish_job(job_id, int(RunStatus.SUCCESS), CALLBACK, [NOTICE])
    assert (await jobs.job(job_id)).status == RunStatus.SUCCESS  # type: ignore[union-attr]
    rows = await outbox.due(time.time() + 1, 50)
    assert [(r.kind, r.target, r.max_attempts, r.state) for r in rows] == [
        ("callback", CALLBACK[0], 5, "pending"), ("webhook", NOTICE["target"], 2, "pending")]
    assert all(r.job_instance_id == job_id and r.attempts == 0 for r in rows)
    assert len(await outbox.due(time.time() + 1, 1)) == 1
    first = rows[0]
    # the first claim wins; a second one of the same read does not
    assert await outbox.claim(first, time.time() + 120, "node-a")
    assert not await outbox.claim(first, time.time() + 120, "node-b")
    assert [r.id for r in await outbox.due(time.time() + 1, 50)] == [rows[1].id]
    await outbox.record(first.id, {"attempts": 1, "last_error": "", "state": "done"})
    later = await outbox.due(time.time() + 1000, 50)
    assert [r.id for r in later] == [rows[1].id]


async def test_a_job_without_callback_or_notices_adds_nothing(db: Database) -> None:
    jobs, outbox = JobStore(db), OutboxStore(db)
    job_id, _ = await new_job(jobs)
    await jobs.finish_job(job_id, int(RunStatus.FAIL), None, [])
    assert await outbox.due(time.time() + 1, 50) == []


async def test_held_rows_wait_without_an_attempt_and_claimed_rows_are_left_alone(
    db: Database,
) -> None:
    outbox = OutboxStore(db)
    ids = [await outbox.add("webhook", f"http://127.0.0.1:9/{n}", "{}", 3) for n in range(3)]
    now = time.time() + 1
    rows = await outbox.due(now, 50)
    assert await outbox.claim(rows[0], now + 120, "node-a")
    await outbox.hold(ids, now, now + 2)
    assert await outbox.due(now, 50) == []
    held = await outbox.due(now + 2, 50)
    assert [(r.id, r.attempts, r.state) for r in held] == [
        (ids[1], 0, "pending"), (ids[2], 0, "pending")]
    claimed = await outbox.get(ids[0])
    assert claimed is not None and claimed.next_attempt_at == now + 120
