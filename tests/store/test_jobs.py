"""JobStore's output search on a real database."""

from __future__ import annotations

import pytest
from tests.store.test_leases import new_job

from jobfleet.domain.status import RunStatus
from jobfleet.store.database import Database
from jobfleet.store.jobs import JobStore, LostJob


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
    """``owner``: the job's and its steps' state is written only while the job's row
    names the driver's node; else nothing is written and ``LostJob`` says why."""
    jobs = JobStore(db)
    job_id, step_id = await new_job(jobs)
    assert await jobs.leases.claim(job_id, "a", 60)
    await jobs.update_step(step_id, current_batch=1, owner="a")
    assert await jobs.update_step_if(step_id, int(RunStatus.RUNNING), current_batch=2, owner="a")
    # a condition that fails with the job still owned is only a failed condition
    assert not await jobs.update_step_if(step_id, int(RunStatus.BLANK), current_batch=3,
                                         owner="a")
    assert not await jobs.update_job_if(job_id, int(RunStatus.BLANK), status=1, owner="a")
    with pytest.raises(LostJob):
        await jobs.update_step(step_id, current_batch=4, owner="b")
    with pytest.raises(LostJob):
        await jobs.update_step_if(step_id, int(RunStatus.RUNNING), current_batch=4, owner="b")
    with pytest.raises(LostJob):
        await jobs.update_job_if(job_id, int(RunStatus.RUNNING), status=3, owner="b")
    with pytest.raises(LostJob):
        await jobs.finish_job(job_id, int(RunStatus.SUCCESS), ("http://127.0.0.1:9/", "{}", 3),
                              owner="b")
    step, job = await jobs.step(step_id), await jobs.job(job_id)
    assert step is not None and step.current_batch == 2
    assert job is not None and job.status == RunStatus.RUNNING and job.owner_node == "a"
    # a write with no owner (the API's) lands whoever drives
    await jobs.update_step(step_id, current_batch=5)
    await jobs.finish_job(job_id, int(RunStatus.SUCCESS), None, owner="a")
    job = await jobs.job(job_id)
    assert job is not None and job.status == RunStatus.SUCCESS and job.owner_node is None
