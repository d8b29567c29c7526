"""A process operation on many hosts, on a real database with agents that answer
in-process: every host's answer is written, and the hosts that answer together take one
connection between them, not one each."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from sqlalchemy import event

from jobfleet.domain import protocol
from jobfleet.engine.procs import HANDLING, ProcManager, ProcOperation
from jobfleet.store.database import Database
from jobfleet.store.procs import ProcStore

HOSTS = 300


class Answering:
    """Agents that each answer an operation at once, all of them together."""

    async def call(self, host: int, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"proc": {"code": 0, "message": "success", "pid": 1000 + host, "status": 1}}


def spec(name: str) -> protocol.ProcSpec:
    return protocol.ProcSpec(
        namespace="nodeman", name=name, proc_name=name, setup_path="/opt", pid_file="",
        account="root", start_cmd="", stop_cmd="", restart_cmd="", reload_cmd="",
        kill_cmd="", start_check_secs=0)


async def test_the_answers_of_many_hosts_take_one_connection(db: Database) -> None:
    store = ProcStore(db)
    manager = ProcManager(Answering(), store, parallel=64)
    held = most = 0

    def checkout(*_args: Any) -> None:
        nonlocal held, most
        held += 1
        most = max(most, held)

    def checkin(*_args: Any) -> None:
        nonlocal held
        held -= 1

    pool = db.engine.sync_engine.pool
    event.listen(pool, "checkout", checkout)
    event.listen(pool, "checkin", checkin)
    try:
        operation = ProcOperation(protocol.PROC_STATUS, spec("agent"),
                                  [(host, f"0:127.0.1.{host % 250}") for host in
                                   range(1, HOSTS + 1)])
        task_id = await manager.operate([operation], biz_ids=[2], operator="admin",
                                        app_code="bk_nodeman")
        deadline = time.monotonic() + 120
        while True:
            results = await store.results(task_id)
            if all(r.error_code != HANDLING for r in results) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    finally:
        event.remove(pool, "checkout", checkout)
        event.remove(pool, "checkin", checkin)
        await manager.stop()
    assert len(results) == HOSTS
    assert {r.error_code for r in results} == {0}, {r.error_code for r in results}
    assert {r.bk_host_id for r in results if '"pid":' + str(1000 + r.bk_host_id) in
            r.content} == set(range(1, HOSTS + 1))
    # the writes, and this test's own polls: two at a time at most
    assert most <= 2, most


class Trickling:
    """Agents that answer one after another, over a second or so."""

    async def call(self, host: int, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        await asyncio.sleep(host * 0.01)
        return {"proc": {"code": 0, "message": "success", "pid": 1000 + host, "status": 1}}


async def test_answers_that_cannot_be_written_while_the_database_is_away_log_one_line(
        db: Database, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = ProcStore(db)
    manager = ProcManager(Trickling(), store, parallel=64)
    writes = 0

    async def away(_answers: Any) -> None:
        nonlocal writes
        writes += 1
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    try:
        operation = ProcOperation(protocol.PROC_STATUS, spec("agent"),
                                  [(host, f"0:127.0.1.{host}") for host in range(1, 101)])
        with caplog.at_level(logging.INFO, logger="jobfleet.engine.procs"):
            monkeypatch.setattr(store, "finish", away)
            await manager.operate([operation], biz_ids=[2], operator="admin",
                                  app_code="bk_nodeman")
            deadline = time.monotonic() + 30
            while writes < 10:
                assert time.monotonic() < deadline, writes
                await asyncio.sleep(0.05)
    finally:
        await manager.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "reason=database_unreachable error=ConnectionRefusedError" in lines[0], lines
    assert lines[0].startswith("proc_result_write_failed tasks="), lines
