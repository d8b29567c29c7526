"""Lists cost their page, not their table: each filter is searched through an index,
on both backends (a database a year old holds a million jobs and host results)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import insert, update
from tests.store.query_plans import plan_for, plans_of, sorts_all
from tests.store.test_leases import new_job

from jobfleet.domain.status import RunStatus
from jobfleet.store.audit import AuditLog, AuditQuery
from jobfleet.store.database import Database
from jobfleet.store.job_reads import JobReads
from jobfleet.store.jobs import JobStore
from jobfleet.store.outbox import OutboxStore
from jobfleet.store.scripts import ScriptStore
from jobfleet.store.tables import job_instances, step_hosts, step_instances

DAY_MS = 86_400_000


async def _history(db: Database) -> None:
    """Older jobs of a few businesses: PostgreSQL's statistics then tell its indexes
    apart, as a year of jobs would."""
    old = int(time.time() * 1000) - 7 * DAY_MS
    async with db.begin() as conn:
        await conn.execute(insert(job_instances), [
            {"bk_biz_id": 2 + i % 5, "scope_type": "biz", "scope_id": str(2 + i % 5),
             "name": f"old {i}", "type": 1, "launch_mode": 1, "operator": f"user{i % 20}",
             "app_code": "app", "status": int(RunStatus.SUCCESS), "create_time": old - i}
            for i in range(3000)])


async def _list(reads: JobReads, **filters: Any) -> list[int]:
    now = int(time.time() * 1000)
    _total, rows = await reads.list_jobs(scope_type="biz", scope_id="2", start_ms=now - DAY_MS,
                                         end_ms=now + DAY_MS, filters=filters, offset=0,
                                         limit=20)
    return [r.id for r in rows]


@pytest.mark.parametrize(
    ("column", "wanted"),
    [("status", int(RunStatus.FAIL)), ("operator", "bob"), ("job_cron_id", 7)],
)
async def test_the_job_list_by_status_operator_or_cron_reads_those_jobs_only(
    db: Database, column: str, wanted: Any
) -> None:
    jobs, reads = JobStore(db), JobReads(db)
    await _history(db)
    done, _ = await new_job(jobs, RunStatus.SUCCESS)
    failed, _ = await new_job(jobs, RunStatus.FAIL)
    async with db.begin() as conn:
        await conn.execute(
            update(job_instances).where(job_instances.c.id == failed)
            .values(operator="bob", cron_id=7, launch_mode=3))
        if not db.is_sqlite:
            await conn.exec_driver_sql("ANALYZE job_instances")
    assert await _list(reads, **{column: wanted}) == [failed]
    assert await _list(reads, status=int(RunStatus.SUCCESS)) == [done]
    plans = await plans_of(db, lambda: _list(reads, **{column: wanted}))
    assert len(plans) == 2, plans  # the count and the page
    index = "cron_id" if column == "job_cron_id" else column
    for plan in plans:
        assert f"ix_job_instances_scope_type_scope_id_{index}_create_time" in plan, plan
        assert not sorts_all(plan), plan


async def _ran_elsewhere(db: Database, count: int) -> None:
    """Jobs of the range that ran on other addresses, each of its own: the statistics
    then tell a lookup by address from one per job apart, as a year of jobs would."""
    now = int(time.time() * 1000)
    async with db.begin() as conn:
        first = 1_000_000
        await conn.execute(insert(job_instances), [
            {"id": first + i, "bk_biz_id": 2, "scope_type": "biz", "scope_id": "2",
             "name": f"elsewhere {i}", "type": 1, "launch_mode": 1, "operator": "user",
             "app_code": "app", "status": int(RunStatus.SUCCESS), "create_time": now - i}
            for i in range(count)])
        await conn.execute(insert(step_instances), [
            {"id": first + i, "job_instance_id": first + i, "step_order": 1, "name": "s",
             "type": 1, "status": int(RunStatus.SUCCESS), "create_time": now - i}
            for i in range(count)])
        await conn.execute(insert(step_hosts), [
            {"step_instance_id": first + i, "execute_count": 0, "bk_host_id": 1000 + i,
             "bk_cloud_id": 0, "ip": f"127.1.{i // 256}.{i % 256}", "status": 9}
            for i in range(count)])
        if not db.is_sqlite:
            await conn.exec_driver_sql("ANALYZE")
    # SQLite's sampled statistics, as the server gathers them at start
    await db.analyze()


async def test_the_job_list_by_ip_reads_the_host_results_of_that_address(db: Database) -> None:
    jobs, reads = JobStore(db), JobReads(db)
    await _ran_elsewhere(db, 2000)
    one, _ = await new_job(jobs, RunStatus.SUCCESS, hosts=1)
    three, _ = await new_job(jobs, RunStatus.SUCCESS, hosts=3)
    assert await _list(reads, ip="127.0.0.1") == [three, one]
    assert await _list(reads, ip="127.0.0.3") == [three]
    assert await _list(reads, ip="127.0.0.9") == []
    plans = await plans_of(db, lambda: _list(reads, ip="127.0.0.3"))
    assert len(plans) == 2, plans  # the count and the page
    for plan in plans:
        plan = plan.split(" => ", 1)[1]
        # found once by address through its index: neither a scan of every host result
        # nor a lookup for each job of the range
        assert "ix_step_hosts_ip" in plan, plan
        assert "SCAN step_hosts" not in plan and "Seq Scan on step_hosts" not in plan, plan
        assert "CORRELATED" not in plan and "SubPlan" not in plan, plan


async def test_a_scopes_audit_entries_are_searched_by_scope(db: Database) -> None:
    audit = AuditLog(db)
    for scope in ("2", "3", "2"):
        await audit.record(app_code="a", username="u", action="x", resource_type="job",
                           scope_type="biz", scope_id=scope)
    query = AuditQuery(scope_type="biz", scope_id="2")
    total, rows = await audit.query(query, limit=20)
    assert total == 2 and [r["scope_id"] for r in rows] == ["2", "2"]
    assert rows[0]["id"] > rows[1]["id"]
    plans = await plans_of(db, lambda: audit.query(query, limit=20))
    assert len(plans) == 2, plans
    for plan in plans:
        assert "ix_audit_log_scope_type_scope_id_id" in plan, plan
        assert not sorts_all(plan), plan


async def test_the_outbox_finds_due_rows_among_pending_ones_only(db: Database) -> None:
    store = OutboxStore(db)
    first = await store.add("callback", "x", "{}", 3)
    second = await store.add("callback", "x", "{}", 3)
    await store.record(first, {"state": "done"})
    assert [r.id for r in await store.due(time.time() + 60, 10)] == [second]
    plan = plan_for(await plans_of(db, lambda: store.due(time.time(), 10)), "outbox")
    assert "ix_outbox_state_next_attempt_at" in plan, plan
    assert not sorts_all(plan), plan


async def test_a_page_of_a_businesss_scripts_is_read_in_order_of_change(db: Database) -> None:
    store = ScriptStore(db)
    script = {"language": 1, "description": "", "content": "echo", "version": "v1",
              "version_desc": "", "user": "u"}
    made = [await store.create_script(2, name=f"s{i}", **script) for i in range(3)]
    await store.create_script(3, name="other", **script)
    total, rows = await store.list_scripts(2, limit=2)
    assert total == 3 and len(rows) == 2
    assert {r["id"] for r in rows} <= {m["script_id"] for m in made}
    plans = await plans_of(db, lambda: store.list_scripts(2, limit=2))
    [plan] = [p.split(" => ")[1] for p in plans if p.startswith("SELECT scripts.id")]
    assert "ix_scripts_bk_biz_id_last_modify_time" in plan, plan
    assert not sorts_all(plan), plan
