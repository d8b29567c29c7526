"""AuditLog on a real database: the detail bound, column widths, coalesced refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from jobfleet.store import audit as audit_module
from jobfleet.store.audit import MAX_DETAIL, TRUNCATED, AuditLog, AuditQuery, bound_detail
from jobfleet.store.database import Database
from jobfleet.store.tables import audit_log


@pytest.fixture
async def log(database_url: str) -> AsyncIterator[AuditLog]:
    db = Database(database_url)
    await db.migrate()
    try:
        yield AuditLog(db)
    finally:
        await db.close()


async def rows(log: AuditLog, **query: str) -> list[dict[str, object]]:
    return (await log.query(AuditQuery(**query), limit=1000))[1]  # type: ignore[arg-type]


def test_small_details_are_kept_whole_and_large_ones_cut_with_a_marker() -> None:
    assert bound_detail(None) is None
    assert bound_detail({"a": 1, "b": [1, 2]}) == {"a": 1, "b": [1, 2]}
    big = bound_detail({"blob": "x" * 100_000})
    assert big is not None and big["truncated"] is True and big["size"] > 100_000
    assert big["preview"].endswith(TRUNCATED) and len(big["preview"]) <= MAX_DETAIL


async def test_long_values_are_cut_to_their_columns(log: AuditLog) -> None:
    await log.record(app_code="a" * 500, username="u" * 500, action="x" * 500,
                     resource_type="r" * 500, resource_id="i" * 500, source_ip="s" * 500,
                     detail={"k": "v" * 50_000})
    (row,) = await rows(log)
    assert len(str(row["action"])) == 64 and str(row["action"]).endswith("...")
    assert len(str(row["resource_id"])) == 128 and len(str(row["source_ip"])) == 64
    assert row["detail"]["truncated"] is True  # type: ignore[index]


async def test_repeated_refusals_share_one_entry_with_a_count(log: AuditLog) -> None:
    for _ in range(50):
        await log.refused(source_ip="127.0.0.1", reason="bad_credentials", detail={"path": "/p"})
    await log.refused(source_ip="127.0.0.1", reason="permission_denied")
    await log.refused(source_ip="127.0.0.2", reason="bad_credentials")
    async with log.db.connect() as conn:
        written = (await conn.execute(select(func.count()).select_from(audit_log))).scalar_one()
    assert written == 3
    found = {(r["source_ip"], r["resource_id"]): r for r in await rows(log, action="refused")}
    assert found[("127.0.0.1", "bad_credentials")]["detail"] == {
        "reason": "bad_credentials", "path": "/p", "count": 50}
    assert found[("127.0.0.1", "permission_denied")]["detail"]["count"] == 1  # type: ignore[index]


async def test_a_new_window_starts_a_new_entry(log: AuditLog,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(audit_module.time, "time", lambda: now[0])
    for _ in range(3):
        await log.refused(source_ip="127.0.0.1", reason="bad_credentials")
    now[0] += audit_module.REFUSAL_WINDOW
    await log.refused(source_ip="127.0.0.1", reason="bad_credentials")
    counts = sorted(r["detail"]["count"] for r in await rows(log))  # type: ignore[index]
    assert counts == [1, 3]


async def test_entries_of_a_past_window_are_written_and_let_go(
        log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(audit_module.time, "time", lambda: now[0])
    for job in range(20):
        for _ in range(2):
            await log.coalesced(("read_logs", str(job)), app_code="app", username="u",
                                action="read_logs", resource_type="job", resource_id=str(job))
    now[0] += audit_module.REFUSAL_WINDOW
    await log.refused(source_ip="127.0.0.1", reason="bad_credentials")
    # a server reading the logs of job after job keeps only the current window's entries
    assert len(log._refusals) == 1
    async with log.db.connect() as conn:
        details = (await conn.execute(
            select(audit_log.c.detail).where(audit_log.c.action == "read_logs"))).scalars()
        assert [d["count"] for d in details] == [2] * 20


async def test_too_many_addresses_share_one_overflow_entry(
        log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_module, "MAX_REFUSAL_KEYS", 5)
    for i in range(20):
        await log.refused(source_ip=f"127.0.1.{i}", reason="bad_credentials")
    entries = await rows(log)
    assert len(entries) == 6
    (overflow,) = [e for e in entries if e["action"] == "refused_overflow"]
    assert overflow["detail"]["count"] == 15  # type: ignore[index]
