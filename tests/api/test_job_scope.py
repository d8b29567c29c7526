"""A job read by id under a business the caller may not see: whether the job is there
shows in nothing the caller gets back, not even in how much the store was asked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from tests.api.support import USER, Parts, build_app, client

from jobfleet.api.execute import job_in_scope
from jobfleet.api.routing import Call
from jobfleet.store.database import now_ms
from jobfleet.store.jobs import JobStore, NewJob, NewStep


@dataclass
class WithJobs(Parts):
    jobs: JobStore


async def _job(jobs: JobStore, biz: int) -> int:
    now = now_ms()
    job_id, _ = await jobs.create(NewJob(
        values={"bk_biz_id": biz, "scope_type": "biz", "scope_id": str(biz), "name": "j",
                "type": 1, "launch_mode": 1, "operator": "bob", "app_code": "app",
                "status": 3, "create_time": now},
        steps=[NewStep("s", 1, {"status": 3, "create_time": now}, [])],
    ))
    return job_id


async def status(call: Call) -> dict[str, Any]:
    job = await job_in_scope(call, "view_history")
    return {"job_instance_id": job.id}


async def test_a_stranger_learns_nothing_of_a_job_of_another_business(parts: Parts) -> None:
    """alice may not see business 3 (no grant), then may but through an app limited to
    business 2: a job of business 3 and a job that does not exist are refused alike,
    with the same statements run, and the job is never read for them."""
    await parts.identity.create_business(3, "other")
    whole = WithJobs(**vars(parts), jobs=JobStore(parts.db))
    theirs = await _job(whole.jobs, 3)
    missing = theirs + 1000
    statements: list[str] = []

    def executed(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = parts.db.engine.sync_engine
    async with client(build_app(whole, {"status": status})) as http:

        async def ask(job_id: int) -> tuple[dict[str, Any], list[str]]:
            await parts.audit.flush()
            statements.clear()
            event.listen(engine, "before_cursor_execute", executed)
            try:
                answer = (await http.get("/t/status", headers=parts.headers(), params={
                    "bk_biz_id": 3, "job_instance_id": job_id})).json()
            finally:
                event.remove(engine, "before_cursor_execute", executed)
            await parts.audit.flush()
            return answer, [s for s in statements if "audit" not in s]

        for held in (False, True):
            if held:
                # the grant is alice's; the app still may touch business 2 only
                await parts.identity.grant(USER, "biz", "3")
            await ask(missing)  # the caller's app and user read once, then cached
            real, real_sql = await ask(theirs)
            none, none_sql = await ask(missing)
            assert real["result"] is False and real["code"] == 9900403, real
            assert (real["code"], real["message"]) == (none["code"], none["message"])
            assert real_sql == none_sql, (held, real_sql, none_sql)
            assert not any("job_instance" in s for s in real_sql), real_sql
