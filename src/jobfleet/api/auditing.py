"""What the API writes to the audit log: calls that changed or read something, and refusals."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import HTTPConnection

from jobfleet.api.auth import Caller
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.audit import AuditLog
from jobfleet.store.outage import disk_refused

if TYPE_CHECKING:
    from jobfleet.api.routing import Call

log_ = logging.getLogger(__name__)

# refusals of who the caller is or what it may do (not bad input)
REFUSAL_REASONS: dict[int, str] = {
    ErrorCode.SERVICE_AUTH_FAIL: "bad_credentials",
    ErrorCode.MISSING_APP_CODE: "bad_credentials",
    ErrorCode.MISSING_USER: "bad_credentials",
    ErrorCode.USER_NOT_LOGIN: "bad_credentials",
    ErrorCode.PERMISSION_DENIED: "permission_denied",
    ErrorCode.APP_FORBIDDEN: "permission_denied",
}


def source_of(request: HTTPConnection) -> str:
    return request.client.host if request.client else ""


class Scoped(Protocol):
    """Anything that names a scope: an API ``Scope``, a job instance row."""

    @property
    def scope_type(self) -> str: ...

    @property
    def scope_id(self) -> str: ...


async def audit(
    call: Call,
    action: str,
    resource_type: str,
    resource_id: Any = "",
    *,
    scope: Scoped | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """One entry for a call: who (app, user, address), what, on which resource, in which scope
    (none for what belongs to no business: rules, apps, public scripts)."""
    await as_caller(
        call.services.audit,
        call.caller,
        call.request,
        action,
        resource_type,
        resource_id,
        scope_type=scope.scope_type if scope else None,
        scope_id=scope.scope_id if scope else None,
        detail=detail,
    )


async def as_caller(
    log: AuditLog,
    caller: Caller,
    request: HTTPConnection,
    action: str,
    resource_type: str,
    resource_id: Any = "",
    *,
    scope_type: str | None = None,
    scope_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """The same, for endpoints that authenticate on their own (downloads)."""
    await log.record(
        app_code=caller.app_code,
        username=caller.username,
        action=action,
        resource_type=resource_type,
        resource_id="" if resource_id is None else str(resource_id),
        scope_type=scope_type,
        scope_id=scope_id,
        detail=detail,
        source_ip=source_of(request),
    )


async def refusal(
    log: AuditLog, request: HTTPConnection, exc: JobError, caller: Caller | None = None
) -> None:
    """Audit ``exc`` if it refused the caller (credentials, permissions); other errors pass."""
    reason = REFUSAL_REASONS.get(exc.code)
    if reason is None:
        return
    try:
        await log.refused(
            source_ip=source_of(request),
            reason=reason,
            app_code=caller.app_code if caller else "",
            username=caller.username if caller else "",
            detail={"path": request.url.path[:256], "message": exc.message[:512]},
        )
    except Exception:
        # the refusal still reaches the caller; a store that cannot take it is logged
        log_.exception("refusal_audit_failed path=%s", request.url.path)


async def audit_log_read(call: Call, job: Any, step_id: int | None, hosts: int) -> None:
    """Reading a job's logs: one entry per caller, address and job a minute, counting the
    reads, since clients poll logs (bk-log every few seconds) and a row each would make the
    audit log a write per poll."""
    source = source_of(call.request)
    try:
        await call.services.audit.coalesced(
            ("read_logs", call.caller.app_code, call.caller.username, source, str(job.id)),
            app_code=call.caller.app_code,
            username=call.caller.username,
            action="read_logs",
            resource_type="job",
            resource_id=str(job.id),
            scope_type=job.scope_type,
            scope_id=job.scope_id,
            detail={"step_instance_id": step_id, "hosts": hosts},
            source_ip=source,
        )
    except Exception as exc:
        why = disk_refused(exc)
        if why is None:
            raise
        # while the disk is full the logs are what an operator reads to find out why:
        # the read is answered, and the server's own log (the journal) keeps the entry
        log_.warning(
            "audit_not_written action=read_logs app=%s user=%s source=%s job=%s reason=%s",
            call.caller.app_code,
            call.caller.username,
            source,
            job.id,
            why,
        )
