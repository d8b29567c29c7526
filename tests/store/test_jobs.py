"""JobStore's output search on a real database."""

from __future__ import annotations

from tests.store.test_leases import new_job

from jobfleet.store.database import Database
from jobfleet.store.jobs import JobStore


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
