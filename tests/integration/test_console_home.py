"""The console's home page for a user who holds many businesses: the confirmations
waiting for the user in all of them, for as many statements as with one business, on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
from sqlalchemy import event, insert
from sqlalchemy.engine import Connection
from tests.integration.harness import Running

from jobfleet.domain.status import RunStatus, StepType
from jobfleet.store.tables import businesses, job_instances, step_instances

FIRST = 500


async def seed(running: Running, biz_ids: list[int], now: int) -> dict[int, list[int]]:
    """In each business a confirmation waiting for the admin (and an older one), one
    waiting for someone else and a finished one; the ids the admin must see, per
    business, newest first."""
    shown: dict[int, list[int]] = {}
    async with running.server.db.begin() as conn:
        for biz in biz_ids:
            await conn.execute(insert(businesses).values(
                bk_biz_id=biz, name=f"biz-{biz}", create_time=now))
            shown[biz] = []
            for k, (approver, status, age) in enumerate([
                ("admin", RunStatus.WAITING_USER, 60_000),
                ("admin", RunStatus.WAITING_USER, 3_600_000),
                ("carol", RunStatus.WAITING_USER, 120_000),
                ("admin", RunStatus.SUCCESS, 180_000),
            ]):
                job = (await conn.execute(insert(job_instances).values(
                    bk_biz_id=biz, scope_type="biz", scope_id=str(biz),
                    name=f"job-{biz}-{k}", type=0, launch_mode=1, operator="bob",
                    app_code="test", status=int(status), create_time=now - age,
                ).returning(job_instances.c.id))).scalar_one()
                for order, (kind, step_status) in enumerate([
                    (StepType.SCRIPT, RunStatus.SUCCESS), (StepType.MANUAL_CONFIRM, status),
                ]):
                    await conn.execute(insert(step_instances).values(
                        job_instance_id=job, step_order=order, name=f"confirm-{job}",
                        type=int(kind), status=int(step_status), create_time=now - age,
                        config={"approval_info": {"approval_user": {"user_list": [approver]}}},
                    ))
                if approver == "admin" and status == RunStatus.WAITING_USER:
                    shown[biz].append(int(job))
    return shown


async def home(running: Running, http: httpx.AsyncClient) -> tuple[int, str]:
    """The home page and how many statements serving it sent (those of the tasks
    that serve the request, not of the server's loops already running)."""
    before = asyncio.all_tasks()
    sent: list[str] = []

    def record(_c: Connection, _cur: Any, statement: str, *_: Any) -> None:
        if asyncio.current_task() not in before:
            sent.append(statement)

    engine = running.server.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        resp = await http.get("/")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert resp.status_code == 200, resp.text[:500]
    return len(sent), resp.text


async def test_home_statements_do_not_grow_with_the_businesses(running: Running) -> None:
    now = int(time.time() * 1000)
    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as http:
        login = await http.post("/login", data={
            "username": "admin", "password": running.boot["admin_password"], "next": "/"})
        assert login.status_code == 303
        shown = await seed(running, [FIRST], now)
        await home(running, http)  # caches filled
        few, page = await home(running, http)
        waiting = [int(i) for i in re.findall(r'<tr class="waiting"><td><a href="/api_execute/'
                                              r'(\d+)', page)]
        assert waiting == shown[FIRST]

        shown.update(await seed(running, list(range(FIRST + 1, FIRST + 30)), now))
        await home(running, http)
        many, page = await home(running, http)
        assert many == few, (few, many)
        waiting = [int(i) for i in re.findall(r'<tr class="waiting"><td><a href="/api_execute/'
                                              r'(\d+)', page)]
        held = re.findall(r'<td>(\d+)</td><td class="ok">', page)
        # business by business as the page lists them, newest first in each
        assert waiting == [job for biz in held for job in shown.get(int(biz), [])]
        assert len(waiting) == 2 * 30
