"""api/auditing.py: one entry per call, with who, from where, what and in which scope;
refusals of the caller (not bad input) counted per address."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest
from tests.api.support import APP, USER, Parts
from tests.api.test_auth import fields, request

from jobfleet.api.auditing import audit, refusal
from jobfleet.api.routing import Call
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.engine.submit import Scope
from jobfleet.store.audit import AuditLog
from jobfleet.store.database import Database


@dataclass
class JobRow:
    id: int
    scope_type: str
    scope_id: str


async def call_of(parts: Parts) -> Call:
    req = request(header=fields(parts))
    caller = await parts.auth.authenticate(req, {})
    return Call(req, {}, caller, parts)  # type: ignore[arg-type]


async def only_entry(log: AuditLog) -> dict[str, Any]:
    [entry] = await log.recent(10)
    return entry


async def test_an_entry_names_caller_source_resource_and_scope(parts: Parts) -> None:
    call = await call_of(parts)
    scope = Scope("biz", "2", 2, {2})
    await audit(call, "create_cron", "cron", 7, scope=scope, detail={"name": "nightly"})
    entry = await only_entry(parts.audit)
    assert entry["action"] == "create_cron"
    assert (entry["app_code"], entry["username"], entry["source_ip"]) == (APP, USER, "127.0.0.9")
    assert (entry["resource_type"], entry["resource_id"]) == ("cron", "7")
    assert (entry["scope_type"], entry["scope_id"]) == ("biz", "2")
    assert entry["detail"] == {"name": "nightly"}


async def test_a_job_names_its_scope_and_no_scope_is_none(parts: Parts) -> None:
    call = await call_of(parts)
    await audit(call, "operate_job_instance:2", "job_instance", 9, scope=JobRow(9, "biz_set", "9"))
    await audit(call, "create_dangerous_rule", "dangerous_rule", None)
    rule, job = await parts.audit.recent(10)
    assert (job["scope_type"], job["scope_id"], job["resource_id"]) == ("biz_set", "9", "9")
    assert (rule["scope_type"], rule["scope_id"], rule["resource_id"]) == (None, None, "")


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (ErrorCode.SERVICE_AUTH_FAIL, "bad_credentials"),
        (ErrorCode.MISSING_USER, "bad_credentials"),
        (ErrorCode.PERMISSION_DENIED, "permission_denied"),
        (ErrorCode.INVALID_PARAM_WITH_REASON, None),
        (ErrorCode.INTERNAL_ERROR, None),
    ],
)
async def test_only_refusals_of_the_caller_are_audited(
    parts: Parts, code: int, reason: str | None
) -> None:
    req = request()
    await refusal(parts.audit, req, JobError(code, "m" * 2000))
    await parts.audit.flush()
    entries = await parts.audit.recent(10)
    if reason is None:
        assert entries == []
        return
    [entry] = entries
    assert entry["detail"]["reason"] == reason
    assert len(entry["detail"]["message"]) == 512  # bounded, whatever the message


async def test_repeated_refusals_from_one_address_share_an_entry(parts: Parts) -> None:
    for _ in range(5):
        await refusal(parts.audit, request(), JobError(ErrorCode.SERVICE_AUTH_FAIL, "no"))
    await parts.audit.flush()
    entry = await only_entry(parts.audit)
    assert entry["detail"]["count"] == 5


async def test_a_store_that_cannot_take_a_refusal_does_not_hide_it(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.db'}")
    try:
        caplog.set_level(logging.ERROR, "jobfleet.api.auditing")
        await refusal(AuditLog(db), request(), JobError(ErrorCode.SERVICE_AUTH_FAIL, "no"))
    finally:
        await db.close()
    assert "refusal_audit_failed" in caplog.text
