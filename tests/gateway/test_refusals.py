"""gateway/refusals.py: bad agent messages are counted always, logged and audited a
bounded amount: one entry per agent, reason and window."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text

from jobfleet.gateway import refusals as refusals_module
from jobfleet.gateway.refusals import AUDIT_ACTION, Refusals
from jobfleet.store.audit import AuditLog
from jobfleet.store.database import Database


@dataclass
class Conn:
    agent_id: str
    bk_host_id: int
    peer: str


@pytest.fixture
async def audit(database_url: str) -> AsyncIterator[AuditLog]:
    db = Database(database_url)
    await db.migrate()
    try:
        yield AuditLog(db)
    finally:
        await db.close()


async def test_one_entry_per_agent_and_reason_with_the_count(audit: AuditLog) -> None:
    refusals = Refusals(audit, window=3600)
    a, b = Conn("agent-a", 1, "127.0.0.1"), Conn("agent-b", 2, "127.0.0.2")
    for _ in range(3):
        refusals.refuse(a, "bad_seq", "out.seq: too large\x00")
    refusals.refuse(a, "bad_json", "x")
    refusals.refuse(b, "bad_seq", "y")
    refusals.refuse(a, "duplicate", "a repeat", audit=False)
    await refusals.stop()
    assert refusals.counts == {"bad_seq": 4, "bad_json": 1, "duplicate": 1}
    entries = {(e["resource_id"], e["detail"]["reason"]): e for e in await audit.recent(10)}
    assert set(entries) == {("agent-a", "bad_seq"), ("agent-a", "bad_json"), ("agent-b", "bad_seq")}
    first = entries[("agent-a", "bad_seq")]
    assert first["action"] == AUDIT_ACTION and first["source_ip"] == "127.0.0.1"
    assert first["detail"]["count"] == 3 and first["detail"]["bk_host_id"] == 1
    assert "\x00" not in first["detail"]["first"]


async def test_the_log_says_each_kind_once_and_pauses_under_a_flood(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(refusals_module, "LOG_LINES_PER_WINDOW", 3)
    caplog.set_level(logging.WARNING, "jobfleet.gateway.refusals")
    refusals = Refusals(None, window=3600)
    for n in range(10):
        for _ in range(5):
            refusals.refuse(Conn(f"agent-{n}", n, ""), "bad_type", "t: unknown")
    await refusals.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert lines[-1].startswith("agent_message_refused_log_paused")
    assert refusals.counts["bad_type"] == 50


async def test_audit_writes_the_database_refuses_are_one_line_without_traceback(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(database_url)
    await db.migrate()
    refusals = Refusals(AuditLog(db), window=3600)
    for n in range(5):
        for _ in range(n + 1):
            refusals.refuse(Conn(f"agent-{n}", n, "127.0.0.1"), "bad_seq", "x")
    # every write fails, as when the database went away before the gateway's last flush
    async with db.begin() as conn:
        await conn.execute(text("DROP TABLE audit_log"))
    caplog.set_level(logging.WARNING, "jobfleet.gateway.refusals")
    caplog.clear()
    try:
        await refusals.stop()
    finally:
        await db.close()
    failed = [r for r in caplog.records if "refusal_audit" in r.getMessage()]
    assert len(failed) == 1, [r.getMessage() for r in failed]
    assert failed[0].exc_info is None
    assert "refusals=15 agents=5" in failed[0].getMessage()


async def test_stop_returns_after_a_periodic_flush_under_way_has_written(
    audit: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The periodic flush has taken the window's entries and waits on the database when
    the stop comes: the stop ends after that write, not while it is still going on."""
    real = audit.record_all
    in_flight, release = asyncio.Event(), asyncio.Event()

    async def record_all(rows: list[dict[str, Any]]) -> None:
        in_flight.set()
        await release.wait()
        await real(rows)

    monkeypatch.setattr(audit, "record_all", record_all)
    refusals = Refusals(audit, window=0.01)
    refusals.refuse(Conn("agent-a", 1, "127.0.0.1"), "bad_seq", "x")
    await asyncio.wait_for(in_flight.wait(), 10)
    stop = asyncio.create_task(refusals.stop())
    await asyncio.sleep(0.2)
    stopped_early = stop.done()
    release.set()
    await asyncio.wait_for(stop, 10)
    assert not stopped_early
    assert [e["resource_id"] for e in await audit.recent(10)] == ["agent-a"]


async def test_a_long_detail_is_logged_and_audited_bounded(
    audit: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "jobfleet.gateway.refusals")
    refusals = Refusals(audit, window=3600)
    refusals.refuse(Conn("agent-a", 1, "127.0.0.1"), "bad_extra", "y" * 5000)
    await refusals.stop()
    [line] = [r.getMessage() for r in caplog.records]
    assert "y" * refusals_module.DETAIL_CHARS in line and len(line) < 400
    [stored] = await audit.recent(10)
    assert stored["detail"]["first"] == "y" * refusals_module.DETAIL_CHARS
