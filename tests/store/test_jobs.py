"""JobStore's output search on a real database."""

from __future__ import annotations

import pytest
from tests.store.test_leases import new_job

from jobfleet.domain.status import RunStatus
from jobfleet.store.database import Database
from jobfleet.store.jobs import JobLease, JobStore, LostJob


async def test_hosts_whose_output_holds_a_keyword(db: Database) -> None:
    jobs = JobStore(db)
    _, step = await new_job(jobs, hosts=3)
    chunk = {"step_instance_id": step, "execute_count": 0}
    await jobs.ingest([
        {**chunk, "bk_host_id": 1, "seq": 0, "content": "deploy ok\n"},
        {**chunk, "bk_host_id": 2, "seq": 0, "content": "disk 100%_full\n"},
        {**chunk, "bk_host_id": 2, "seq": 1, "content": "deploy ok\n"},
    ], [])
    assert await jobs.hosts_with_output(step, 0, "deploy") == {1, 2}
    # LIKE wildcards in the keyword are plain characters
    assert await jobs.hosts_with_output(step, 0, "100%_") == {2}
    assert await jobs.hosts_with_output(step, 0, "1_0") == set()
    assert await jobs.hosts_with_output(step, 1, "deploy") == set()


async def test_a_drivers_writes_land_only_while_its_node_owns_the_job(db: Database) -> None:
    """A driver's ``JobLease``: the job's and its steps' state is written only while the
    job's row is as the driver's claim left it; else nothing is written and ``LostJob``
    says why."""
    jobs = JobStore(db)
    job_id, step_id = await new_job(jobs)
    lease = await jobs.claim(job_id, "a", 60)
    assert lease is not None and lease.job_id == job_id
    await lease.update_step(step_id, current_batch=1)
    assert await lease.update_step_if(step_id, int(RunStatus.RUNNING), current_batch=2)
    # a condition that fails with the job still owned is only a failed condition
    assert not await lease.update_step_if(step_id, int(RunStatus.BLANK), current_batch=3)
    assert not await lease.update_job_if(int(RunStatus.BLANK), status=1)
    # a's lease given up, and another node's claim
    await jobs.leases.give_up(job_id, "a")
    other = await jobs.claim(job_id, "b", 60)
    assert other is not None
    await _refused(lease, step_id)
    step, job = await jobs.step(step_id), await jobs.job(job_id)
    assert step is not None and step.current_batch == 2
    assert job is not None and job.status == RunStatus.RUNNING and job.owner_node == "b"
    # a write with no lease (the API's) lands whoever drives
    await jobs.update_step(step_id, current_batch=5)
    await other.finish(int(RunStatus.SUCCESS), None)
    job = await jobs.job(job_id)
    assert job is not None and job.status == RunStatus.SUCCESS and job.owner_node is None


async def test_a_claim_by_the_same_node_fences_off_its_earlier_driver(db: Database) -> None:
    """Two drivers of one job on one node id (the first stuck while its lease lapsed,
    the second from the node's claim since): only the second one's writes land."""
    jobs = JobStore(db)
    job_id, step_id = await new_job(jobs)
    old = await jobs.claim(job_id, "a", 60)
    new = await jobs.claim(job_id, "a", 60)
    assert old is not None and new is not None
    await _refused(old, step_id)
    await new.update_step(step_id, current_batch=7)
    step = await jobs.step(step_id)
    assert step is not None and step.current_batch == 7
    await new.finish(int(RunStatus.SUCCESS), None)


async def test_the_lease_keepers_take_leaves_a_drivers_claim_holding(db: Database) -> None:
    """The lease keeper takes a job it found claimable just as a driver of this node
    claimed it (a submit's): the driver it launches claims the job itself, and the take
    does not fence off the driver already there."""
    jobs = JobStore(db)
    job_id, step_id = await new_job(jobs)
    lease = await jobs.claim(job_id, "a", 60)
    assert lease is not None
    assert await jobs.leases.take(job_id, "a", 60)
    assert not await jobs.leases.take(job_id, "b", 60)
    await lease.update_step(step_id, current_batch=3)
    step = await jobs.step(step_id)
    assert step is not None and step.current_batch == 3


async def _refused(lease: JobLease, step_id: int) -> None:
    """Every write of ``lease``'s raises ``LostJob``."""
    with pytest.raises(LostJob):
        await lease.update_step(step_id, current_batch=4)
    with pytest.raises(LostJob):
        await lease.update_step_if(step_id, int(RunStatus.RUNNING), current_batch=4)
    with pytest.raises(LostJob):
        await lease.update_job_if(int(RunStatus.RUNNING), status=3)
    with pytest.raises(LostJob):
        await lease.finish(int(RunStatus.SUCCESS), ("http://127.0.0.1:9/", "{}", 3))
