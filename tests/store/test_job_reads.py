"""Host rows of a step, filtered in SQL: what a query for some hosts reads."""

from __future__ import annotations

import ipaddress

from jobfleet.store.database import Database, now_ms
from jobfleet.store.jobs import JobStore, NewJob, NewStep

MAPPED_2 = str(ipaddress.IPv6Address("::ffff:127.0.0.2"))


async def _step(jobs: JobStore) -> int:
    """A step on five hosts: two clouds share one IPv4; one host also has an IPv6, one
    reports another host's IPv4 in IPv6 form."""
    now = now_ms()
    hosts = [
        {"bk_host_id": 1, "bk_cloud_id": 0, "ip": "127.0.0.1", "tag": "a", "status": 9},
        {"bk_host_id": 2, "bk_cloud_id": 0, "ip": "127.0.0.2", "tag": "b", "status": 4},
        {"bk_host_id": 3, "bk_cloud_id": 1, "ip": "127.0.0.1", "tag": "a", "status": 9},
        {"bk_host_id": 4, "bk_cloud_id": 0, "ip": "127.0.1.4", "ipv6": "::1", "status": 9},
        {"bk_host_id": 5, "bk_cloud_id": 0, "ip": "127.168.0.5", "tag": "a", "status": 9,
         "ipv6": MAPPED_2},
    ]
    job = NewJob(
        values={"bk_biz_id": 2, "scope_type": "biz", "scope_id": "2", "name": "j", "type": 1,
                "launch_mode": 1, "operator": "alice", "app_code": "app", "status": 3,
                "create_time": now},
        steps=[NewStep("s", 1, {"status": 3, "create_time": now},
                       [{"execute_count": 0, "tag": "", "ipv6": "", **h} for h in hosts])],
    )
    _, steps = await jobs.create(job)
    return steps[0]


def _ids(rows: list) -> list[int]:  # type: ignore[type-arg]
    return [int(r.bk_host_id) for r in rows]


async def test_host_rows_filtered_in_sql(db: Database) -> None:
    jobs = JobStore(db)
    step = await _step(jobs)
    assert _ids(await jobs.hosts(step, 0)) == [1, 2, 3, 4, 5]
    assert _ids(await jobs.hosts(step, 0, host_ids=[5, 2, 2, 99])) == [2, 5]
    assert await jobs.hosts(step, 0, host_ids=[]) == []
    assert _ids(await jobs.hosts(step, 0, tag="a")) == [1, 3, 5]
    assert _ids(await jobs.hosts(step, 0, tag="a", statuses=[9], host_ids=[1, 2, 5])) == [1, 5]
    assert _ids(await jobs.hosts(step, 0, ip_contains="127.0.0.")) == [1, 2, 3]
    assert _ids(await jobs.hosts(step, 0, ip_contains="::")) == [4, 5]
    # LIKE wildcards in the address part are plain characters
    assert await jobs.hosts(step, 0, ip_contains="127_0") == []
    assert await jobs.hosts(step, 1) == []


async def test_host_rows_by_output(db: Database) -> None:
    jobs = JobStore(db)
    step = await _step(jobs)
    chunk = {"step_instance_id": step, "execute_count": 0, "seq": 0}
    await jobs.ingest([
        {**chunk, "bk_host_id": 2, "content": "disk full\n"},
        {**chunk, "bk_host_id": 4, "content": "disk ok\n"},
    ], [])
    assert _ids(await jobs.hosts(step, 0, output_contains="disk")) == [2, 4]
    assert _ids(await jobs.hosts(step, 0, output_contains="full", tag="b")) == [2]
    assert await jobs.hosts(step, 0, output_contains="100%") == []


async def test_host_rows_at_addresses(db: Database) -> None:
    jobs = JobStore(db)
    step = await _step(jobs)
    # the cloud tells apart two hosts of one IPv4
    assert _ids(await jobs.hosts_at(step, 0, [(1, "127.0.0.1")])) == [3]
    assert _ids(await jobs.hosts_at(step, 0, [(0, "127.0.0.1"), (0, "::1")])) == [1, 4]
    # 127.0.0.2 in IPv6 form is 127.0.0.2, not the address of the host reporting it
    assert await jobs.hosts_at(step, 0, [(0, MAPPED_2)]) == []
    assert await jobs.hosts_at(step, 0, [(2, "127.0.0.1"), (0, "127.9.9.9")]) == []
    assert await jobs.hosts_at(step, 0, []) == []


async def test_a_job_and_its_steps_read_together(db: Database) -> None:
    jobs = JobStore(db)
    now = now_ms()
    job_id, step_ids = await jobs.create(NewJob(
        values={"bk_biz_id": 2, "scope_type": "biz", "scope_id": "2", "name": "j", "type": 1,
                "launch_mode": 1, "operator": "alice", "app_code": "app", "status": 3,
                "create_time": now},
        steps=[NewStep(name, 1, {"status": 3, "create_time": now},
                       [{"bk_host_id": 1, "bk_cloud_id": 0, "ip": "127.0.0.1",
                         "execute_count": 0, "tag": "", "ipv6": "", "status": 9}])
               for name in ("first", "second")],
    ))
    job, steps = await jobs.job_and_steps(job_id)
    assert job is not None and job.id == job_id
    assert [s.id for s in steps] == step_ids == [s.id for s in await jobs.steps(job_id)]
    assert await jobs.job_and_steps(job_id + 1000) == (None, [])
