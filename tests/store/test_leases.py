"""LeaseStore on a real database: which node drives an active job."""

from __future__ import annotations

import asyncio
import time

import pytest

from jobfleet.domain.status import RunStatus
from jobfleet.store.database import Database, now_ms
from jobfleet.store.jobs import JobStore, NewJob, NewStep
from jobfleet.store.leases import CLOCK_OFFSET_ENV, LeaseStore


async def new_job(jobs: JobStore, status: RunStatus = RunStatus.RUNNING,
                  hosts: int = 1) -> tuple[int, int]:
    """A job of one script step on ``hosts`` hosts; its id and the step's."""
    now = now_ms()
    job = NewJob(
        values={"bk_biz_id": 2, "scope_type": "biz", "scope_id": "2", "name": "j", "type": 1,
                "launch_mode": 1, "operator": "alice", "app_code": "app",
                "status": int(status), "create_time": now},
        steps=[NewStep("s", 1, {"status": int(status), "create_time": now},
                       [{"bk_host_id": h, "bk_cloud_id": 0, "ip": f"127.0.0.{h}",
                         "execute_count": 0, "status": 1} for h in range(1, hosts + 1)])],
    )
    job_id, step_ids = await jobs.create(job)
    return job_id, step_ids[0]


async def test_claims_renewals_and_lapsed_leases(db: Database) -> None:
    jobs, leases = JobStore(db), LeaseStore(db)
    assert jobs.leases.db is db
    job_id, _ = await new_job(jobs)
    done, _ = await new_job(jobs, RunStatus.SUCCESS)
    # an unowned active job is anyone's; a finished one is nobody's
    assert await leases.claimable("a") == [job_id]
    assert not await leases.claim(done, "a", 60)
    assert await leases.claim(job_id, "a", 60)
    assert await leases.claim(job_id, "a", 60)  # its own owner may claim it again
    assert not await leases.claim(job_id, "b", 60)
    assert await leases.claimable("b") == []
    # a short lease that is not renewed lapses, and another node takes the job
    assert await leases.claim(job_id, "a", 0.05)
    await asyncio.sleep(0.1)
    assert await leases.claimable("b") == [job_id]
    # ... unless its owner renews it first
    await leases.renew("a", 60)
    assert not await leases.claim(job_id, "b", 60)
    assert (await jobs.job(job_id)).owner_node == "a"  # type: ignore[union-attr]


async def test_a_given_up_lease_is_not_renewed_and_anyone_may_claim_it(db: Database) -> None:
    jobs, leases = JobStore(db), LeaseStore(db)
    job_id, _ = await new_job(jobs)
    other, _ = await new_job(jobs)
    assert await leases.claim(job_id, "a", 60) and await leases.claim(other, "a", 60)
    await leases.give_up(job_id, "b")  # not b's: nothing changes
    assert await leases.claimable("b") == []
    await leases.give_up(job_id, "a")
    await leases.renew("a", 60, given_up={job_id})
    assert await leases.claimable("b") == [job_id]
    assert await leases.claim(job_id, "b", 60)
    assert (await jobs.job(other)).owner_node == "a"  # type: ignore[union-attr]


async def test_leases_follow_the_databases_clock_not_the_nodes(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose clock runs far ahead writes and reads leases as the database's
    clock has them: its own lease lasts ``ttl`` from now, and another node's live
    lease is not lapsed to it."""
    jobs, leases = JobStore(db), LeaseStore(db)
    job_id, _ = await new_job(jobs)
    other, _ = await new_job(jobs)
    assert await leases.claim(other, "a", 60)
    monkeypatch.setenv(CLOCK_OFFSET_ENV, "1000")
    assert await leases.claimable("b") == [job_id]
    assert not await leases.claim(other, "b", 60)
    assert await leases.claim(job_id, "b", 60)
    await leases.renew("b", 60)
    lease_until = (await jobs.job(job_id)).lease_until  # type: ignore[union-attr]
    assert abs(lease_until - (time.time() + 60)) < 5


async def test_a_lapsed_lease_names_no_owner(db: Database) -> None:
    """Routes that tell a job's driver (cancel, wake, results stored elsewhere) ask who
    owns it: a node whose lease lapsed may be dead, so it owns nothing until the job is
    claimed again."""
    jobs, leases = JobStore(db), LeaseStore(db)
    job_id, step_id = await new_job(jobs)
    other, other_step = await new_job(jobs)
    assert await leases.claim(job_id, "a", 60) and await leases.claim(other, "a", 0.05)
    await asyncio.sleep(0.1)
    assert await leases.owner_of_job(job_id) == "a"
    assert await leases.owners_of_steps([step_id, other_step]) == {step_id: "a"}
    assert await leases.owner_of_job(other) is None
    # claimed again: its new driver is its owner
    assert await leases.claim(other, "b", 60)
    assert await leases.owner_of_job(other) == "b"
    assert await leases.owners_of_steps([other_step]) == {other_step: "b"}
    # a given-up lease lapses at once
    await leases.give_up(job_id, "a")
    assert await leases.owner_of_job(job_id) is None
    assert await leases.owners_of_steps([step_id]) == {}
