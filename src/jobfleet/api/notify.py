"""jobfleet's own guard rails (docs/notifications.md): job-end notification configs,
running-job quotas of businesses and apps, and the audit log search."""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter

from jobfleet.api.auditing import audit
from jobfleet.api.params import get_bool, get_int, get_str
from jobfleet.api.routing import Call, add_own
from jobfleet.api.scope import held_scopes, require_admin
from jobfleet.domain.addresses import refusal
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import FINISHED_RUN_STATUSES, RunStatus
from jobfleet.domain.urls import url_problem
from jobfleet.store.audit import AuditQuery
from jobfleet.store.notify import (
    CHANNELS,
    EMAIL,
    WEBHOOK,
    NotifyConfig,
    NotifyStore,
    config_view,
    shown_target,
    shows,
)
from jobfleet.store.quotas import QuotaStore
from jobfleet.store.secrets import MASK

VIEW_NOTIFY = "view_notify_config"
MANAGE_NOTIFY = "manage_notify_config"
VIEW_QUOTA = "view_quota"
MANAGE_QUOTA = "manage_quota"
VIEW_AUDIT = "view_audit"

MAX_RECIPIENTS = 50
MIN_SECRET = 8
# one address, no display name: nothing that could break out of a mail header
ADDRESS = re.compile(r"^[^@\s,;<>\"'()\[\]\\]+@[A-Za-z0-9.-]+\.?[A-Za-z0-9-]*$")


# validation ---------------------------------------------------------------------------


def _webhook_url(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise JobError.invalid("target", "a webhook's target is its http(s) URL")
    if len(value) > 1024:
        raise JobError.invalid("target", "longer than 1024 characters")
    problem = url_problem(value)
    if problem:
        raise JobError.invalid("target", problem)
    if MASK in value:
        # a URL as shown to those who may not see it whole, but not of this config's
        raise JobError.invalid(
            "target",
            f"holds {MASK}, which stands for the hidden part of a stored URL: send the whole "
            "URL, or the config's own as it was shown to keep it",
        )
    return value


def _addresses(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise JobError.invalid("target", "an email config's target is a list of addresses")
    found: list[str] = []
    for item in items:
        address = item.strip() if isinstance(item, str) else ""
        if len(address) > 254 or not ADDRESS.match(address):
            raise JobError.invalid("target", f"{item!r} is not a plain email address")
        if address not in found:
            found.append(address)
    if not found or len(found) > MAX_RECIPIENTS:
        raise JobError.invalid("target", f"give 1 to {MAX_RECIPIENTS} addresses")
    return found


def _target(channel: str, value: Any) -> Any:
    if value is None or value == "":
        raise JobError.missing("target")
    return _webhook_url(value) if channel == WEBHOOK else _addresses(value)


def _sendable_target(call: Call, channel: str, value: Any) -> Any:
    target = _target(channel, value)
    if channel == WEBHOOK:
        _check_destination(call, target)
    return target


def _check_destination(call: Call, url: str) -> None:
    """Refuse a webhook at an address the outbound guard would never send to, rather than
    save a config whose every delivery fails. A name is not resolved here: what it points
    to may change, and is checked at each delivery."""
    outbound = call.services.outbound
    if outbound is None:
        return
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return
    why = refusal(address, allow=outbound.allow, own=outbound.own)
    if why is not None:
        raise JobError.invalid(
            "target",
            f"{host} is not an allowed destination: {why} "
            "(jobfleet server --callback-allow CIDR allows a range)",
        )


def no_mail_relay() -> JobError:
    return JobError(
        ErrorCode.NOT_SUPPORTED,
        "Email notifications are not available: this server has no mail relay configured. "
        "Start it with --smtp-host HOST (or JOBFLEET_SMTP_HOST, or smtp.host in its config "
        "file) and, as the relay needs, --smtp-port, --smtp-from, --smtp-starttls, --smtp-user",
    )


def _check_mail(call: Call, channel: str, *, enabled: bool) -> None:
    """Refuse to save an enabled email config no mail could ever go out for, as a webhook
    at a refused address is: the operator hears of it now, not from a job that ended
    unnoticed. Disabling one (made while the server had a relay) stays possible."""
    if channel == EMAIL and enabled and not call.services.mail_relay:
        raise no_mail_relay()


def _run_status(item: Any) -> RunStatus | None:
    """A status by number (3, "3") or name ("FAIL", "fail")."""
    if isinstance(item, str):
        text = item.strip()
        if not text.isdecimal():
            return RunStatus.__members__.get(text.upper())
        if len(text) > 9:  # no status has so many digits (nor is read from them at once)
            return None
        item = int(text)
    if not isinstance(item, int) or isinstance(item, bool):
        return None
    try:
        return RunStatus(item)
    except ValueError:
        return None


def _statuses(value: Any) -> list[int]:
    if value is None or value == "":
        raise JobError.missing("statuses")
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise JobError.invalid("statuses", "a list of final job statuses, e.g. [4, 9]")
    found: set[int] = set()
    for item in items:
        status = _run_status(item)
        if status is None or status not in FINISHED_RUN_STATUSES:
            finals = ", ".join(f"{int(s)} {s.name}" for s in sorted(FINISHED_RUN_STATUSES))
            raise JobError.invalid("statuses", f"{item!r} is not a final job status ({finals})")
        found.add(int(status))
    return sorted(found)


def _secret(channel: str, value: Any, *, required: bool) -> str | None:
    if value is None or value == "":
        if required and channel == WEBHOOK:
            raise JobError.missing("secret")
        return None
    if channel != WEBHOOK:
        raise JobError.invalid("secret", "only webhooks are signed")
    if not isinstance(value, str) or not MIN_SECRET <= len(value) <= 1024:
        raise JobError.invalid("secret", f"a string of {MIN_SECRET} to 1024 characters")
    return value


# helpers ------------------------------------------------------------------------------


def _notify_store(call: Call) -> NotifyStore:
    return NotifyStore(call.services.db, call.services.engine.cipher)


def _config_id(call: Call) -> int:
    value = get_int(call.params, "id", required=True, minimum=1, maximum=2**63 - 1)
    assert value is not None
    return value


def _view(call: Call, row: Any) -> dict[str, Any]:
    """A config as the caller may see it: a webhook's whole URL for administrators."""
    return config_view(row, whole_url=call.caller.is_admin)


def _keeps(current: NotifyConfig, sent: Any) -> bool:
    """``sent`` is the target as a user who may not see the whole URL was shown it (by
    this server or an earlier version of it, on a page still open): the URL stays."""
    if sent == shown_target(current.channel, current.target):
        return True
    return (
        current.channel == WEBHOOK
        and isinstance(sent, str)
        and isinstance(current.target, str)
        and shows(current.target, sent)
    )


def _detail(row: Any) -> dict[str, Any]:
    """What the audit keeps of a config, read by every user of its business."""
    view = config_view(row)
    return {k: view[k] for k in ("channel", "target", "statuses", "enabled")}


# notification configs ---------------------------------------------------------------


async def list_configs(call: Call) -> list[dict[str, Any]]:
    scope = await call.scope(VIEW_NOTIFY)
    return [_view(call, r) for r in await _notify_store(call).of_business(scope.bk_biz_id)]


async def get_config(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW_NOTIFY)
    return _view(call, await _notify_store(call).get(scope.bk_biz_id, _config_id(call)))


async def create_config(call: Call) -> dict[str, Any]:
    scope = await call.scope(MANAGE_NOTIFY)
    p = call.params
    channel = get_str(p, "channel", required=True)
    if channel not in CHANNELS:
        raise JobError.invalid("channel", f"one of {', '.join(CHANNELS)}")
    target = _sendable_target(call, channel, p.get("target"))
    secret = _secret(channel, p.get("secret"), required=True)
    statuses = _statuses(p.get("statuses"))
    enabled = get_bool(p, "enabled", True)
    _check_mail(call, channel, enabled=enabled)
    row = await _notify_store(call).create(
        scope.bk_biz_id,
        channel=channel,
        target=target,
        secret=secret,
        statuses=statuses,
        enabled=enabled,
        user=call.caller.username,
    )
    await audit(
        call,
        "create_notify_config",
        "notify_config",
        str(row.id),
        scope=scope,
        detail=_detail(row),
    )
    return _view(call, row)


async def update_config(call: Call) -> dict[str, Any]:
    scope = await call.scope(MANAGE_NOTIFY)
    p, store = call.params, _notify_store(call)
    config_id = _config_id(call)
    current = await store.get(scope.bk_biz_id, config_id)
    changes: dict[str, Any] = {}
    if "target" in p and not _keeps(current, p["target"]):
        changes["target"] = _sendable_target(call, current.channel, p["target"])
    if "statuses" in p:
        changes["statuses"] = _statuses(p["statuses"])
    if "enabled" in p:
        changes["enabled"] = get_bool(p, "enabled")
    if "secret" in p:
        # a webhook keeps a key: an empty value cannot take it away
        changes["secret"] = _secret(current.channel, p["secret"], required=True)
    if not changes:
        raise JobError(
            ErrorCode.MISSING_PARAM, "Nothing to change: give target, statuses, enabled or secret"
        )
    _check_mail(call, current.channel, enabled=changes.get("enabled", current.enabled))
    row = await store.update(scope.bk_biz_id, config_id, user=call.caller.username, **changes)
    detail = _detail(row) | {"secret_changed": "secret" in changes}
    await audit(
        call, "update_notify_config", "notify_config", str(config_id), scope=scope, detail=detail
    )
    return _view(call, row)


async def delete_config(call: Call) -> dict[str, Any]:
    scope = await call.scope(MANAGE_NOTIFY)
    row = await _notify_store(call).delete(scope.bk_biz_id, _config_id(call))
    await audit(
        call,
        "delete_notify_config",
        "notify_config",
        str(row.id),
        scope=scope,
        detail=_detail(row),
    )
    return _view(call, row)


# quotas -------------------------------------------------------------------------------


def _limit(call: Call) -> int | None:
    if call.request.method == "DELETE":
        return None
    if "max_running_jobs" not in call.params:
        raise JobError.missing("max_running_jobs")
    # null (or "") lifts the limit
    return get_int(call.params, "max_running_jobs", minimum=0, maximum=1_000_000)


async def get_business_quota(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW_QUOTA)
    limit, running = await QuotaStore(call.services.db).business(scope.bk_biz_id)
    return {"bk_biz_id": scope.bk_biz_id, "max_running_jobs": limit, "running_jobs": running}


async def set_business_quota(call: Call) -> dict[str, Any]:
    scope = await call.scope(MANAGE_QUOTA)
    limit = _limit(call)
    store = QuotaStore(call.services.db)
    await store.set_business(scope.bk_biz_id, limit)
    await audit(
        call,
        "set_business_quota",
        "business",
        str(scope.bk_biz_id),
        scope=scope,
        detail={"max_running_jobs": limit},
    )
    _, running = await store.business(scope.bk_biz_id)
    return {"bk_biz_id": scope.bk_biz_id, "max_running_jobs": limit, "running_jobs": running}


def _admin(call: Call) -> None:
    require_admin(call.caller, "see or set app quotas")


async def get_app_quota(call: Call) -> dict[str, Any]:
    _admin(call)
    code = str(call.params["app_code"])
    limit, running = await QuotaStore(call.services.db).app(code)
    return {"app_code": code, "max_running_jobs": limit, "running_jobs": running}


async def set_app_quota(call: Call) -> dict[str, Any]:
    _admin(call)
    code = str(call.params["app_code"])
    limit = _limit(call)
    store = QuotaStore(call.services.db)
    await store.set_app(code, limit)
    await audit(call, "set_app_quota", "app", code, detail={"max_running_jobs": limit})
    _, running = await store.app(code)
    return {"app_code": code, "max_running_jobs": limit, "running_jobs": running}


# audit --------------------------------------------------------------------------------


async def search_audit(call: Call) -> dict[str, Any]:
    """Admins search everything; other users search the scope they name and hold."""
    p = call.params
    named = any(p.get(k) not in (None, "") for k in ("bk_scope_type", "bk_scope_id", "bk_biz_id"))
    scope = await call.scope(VIEW_AUDIT) if named else None
    offset = get_int(p, "start", default=0, minimum=0) or 0
    length = get_int(p, "length", default=20, minimum=1, maximum=1000) or 20
    since = get_int(p, "create_time_start", minimum=0)
    until = get_int(p, "create_time_end", minimum=0)
    if since is not None and until is not None and since > until:
        raise JobError.invalid("create_time_end", "earlier than create_time_start")
    # without a scope named, a user who is not an admin sees the scopes they hold
    # that the app may touch too (a business set: all of its members)
    held = None
    if scope is None and not call.caller.is_admin:
        held = await held_scopes(call.services.identity, call.caller)
    query = AuditQuery(
        since=since,
        until=until,
        username=get_str(p, "username", max_length=128),
        app_code=get_str(p, "app_code", max_length=128),
        action=get_str(p, "action", max_length=64),
        resource_type=get_str(p, "resource_type", max_length=64),
        resource_id=get_str(p, "resource_id", max_length=128),
        scope_type=scope.scope_type if scope else None,
        scope_id=scope.scope_id if scope else None,
        scopes=held,
    )
    total, rows = await call.services.audit.query(query, offset=offset, limit=length)
    return {"start": offset, "length": length, "total": total, "data": rows}


# routes -------------------------------------------------------------------------------


def register(router: APIRouter) -> None:
    add = functools.partial(add_own, router)

    configs = "/businesses/{bk_biz_id}/notify-configs"
    add("GET", configs, list_configs)
    add("POST", configs, create_config)
    add("GET", configs + "/{id}", get_config)
    add("PUT", configs + "/{id}", update_config)
    add("DELETE", configs + "/{id}", delete_config)
    add("GET", "/businesses/{bk_biz_id}/quota", get_business_quota)
    add("PUT", "/businesses/{bk_biz_id}/quota", set_business_quota)
    add("DELETE", "/businesses/{bk_biz_id}/quota", set_business_quota)
    add("GET", "/apps/{app_code}/quota", get_app_quota)
    add("PUT", "/apps/{app_code}/quota", set_app_quota)
    add("DELETE", "/apps/{app_code}/quota", set_app_quota)
    add("GET", "/audit/entries", search_audit)
