"""bk-job v3 cron calls: save_cron, get_cron_list, get_cron_detail, update_cron_status, delete_cron.

Cron objects carry times in epoch seconds (bk-job's crontab module does), and
``execute_time`` only for one-shot crons. ``update_cron_status`` answers what
bk-job's code answers: the cron object with only ``id`` set.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from jobfleet.api.auditing import audit
from jobfleet.api.params import get_int, get_str, need_int, positive_id
from jobfleet.api.routing import Call, add_api
from jobfleet.api.services import Services
from jobfleet.domain.cron import (
    DEFAULT_TIMEZONE,
    CronClock,
    Schedule,
    check_execute_time,
    check_name,
    check_timezone,
    parse_expression,
)
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import CronStatus, ScopeType, VariableType
from jobfleet.domain.variables import (
    MASK,
    Variable,
    apply_overrides,
    check_required,
    entry_key,
)
from jobfleet.engine.submit import Scope
from jobfleet.store.crons import name_taken, open_values, seal_values
from jobfleet.store.database import now_ms

MANAGE = "manage_cron"
VIEW = "view_cron"
VIEW_KEYS = (
    "id",
    "name",
    "status",
    "job_plan_id",
    "expression",
    "execute_time_zone",
    "creator",
    "create_time",
    "last_modify_user",
    "last_modify_time",
    "bk_biz_id",
    "bk_scope_type",
    "bk_scope_id",
)


# views ------------------------------------------------------------------------
def _public_entry(entry: dict[str, Any]) -> dict[str, Any]:
    var_type = entry.get("type")
    value = entry.get("value")
    if var_type == VariableType.PASSWORD and value:
        value = MASK
    return {
        "id": entry.get("id"),
        "name": entry.get("name"),
        "type": var_type,
        "value": None if var_type == VariableType.HOST_LIST else (value or ""),
        "server": entry.get("server") if var_type == VariableType.HOST_LIST else None,
    }


def cron_view(row: Any, *, with_vars: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "job_plan_id": row.plan_id,
        "expression": row.expression,
        "execute_time_zone": row.timezone,
        "creator": row.creator,
        "create_time": row.create_time // 1000,
        "last_modify_user": row.last_modify_user,
        "last_modify_time": row.last_modify_time // 1000,
        "bk_biz_id": row.bk_biz_id,
        "bk_scope_type": row.scope_type,
        "bk_scope_id": row.scope_id,
    }
    if not row.expression and row.execute_time is not None:
        out["execute_time"] = row.execute_time
    if with_vars:
        out["global_var_list"] = [_public_entry(e) for e in row.variables or []]
    return out


# helpers --------------------------------------------------------------------
def clock_of(services: Services) -> CronClock:
    """The cron clock this node runs (faster than the wall clock in tests)."""
    return CronClock(services.engine.settings.cron_time_scale)


def _clock(call: Call) -> CronClock:
    return clock_of(call.services)


async def _record(
    call: Call, scope: Scope, action: str, cron_id: int, detail: dict[str, Any] | None = None
) -> None:
    await audit(
        call,
        action,
        "cron",
        cron_id,
        scope=scope,
        detail=detail,
    )


async def _plan(call: Call, scope: Scope, plan_id: int) -> Any:
    return await call.services.plans.plan_in_scope(plan_id, scope, ErrorCode.JOB_PLAN_NOT_EXIST)


def _find(entry: dict[str, Any], variables: list[Variable]) -> Variable | None:
    var_id, name = entry_key(entry)
    if var_id is not None:
        return next((v for v in variables if v.id == var_id), None)
    return next((v for v in variables if v.name == name), None)


def _values(call: Call, plan: Any, raw: Any, kept: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cron's variable values, checked against its plan as a launch would check them.

    A password sent as ``******`` (what get_cron_detail shows) keeps the cron's
    value, or the plan's when the cron has none.
    """
    if raw in (None, ""):
        raw = []
    if not isinstance(raw, list):
        raise JobError.invalid("global_var_list", "must be a list")
    variables = call.services.job_plans.variables(plan)
    kept_by_name = {e.get("name"): e for e in kept}
    entries: list[dict[str, Any]] = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise JobError.invalid("global_var_list", "each entry is an object")
        var = _find(entry, variables)
        if var is not None and var.type == VariableType.PASSWORD and entry.get("value") == MASK:
            old = kept_by_name.get(var.name)
            if old is None:
                continue
            entry = {**entry, "value": old.get("value")}
        entries.append(entry)
    merged = apply_overrides(variables, entries)
    check_required(merged)
    named: list[int] = []
    for entry in entries:
        var = _find(entry, variables)
        if var is not None and var.id not in named:
            named.append(var.id)
    out = []
    for var in merged:
        if var.id not in named:
            continue
        item: dict[str, Any] = {"id": var.id, "name": var.name, "type": int(var.type)}
        if var.type == VariableType.HOST_LIST:
            item["server"] = var.server or {}
        else:
            item["value"] = var.value
        out.append(item)
    out.sort(key=lambda e: named.index(e["id"]))
    return out


def _first_slot(call: Call, expression: str | None, timezone: str, execute_time: int | None) -> int:
    """The slot a cron starts from: strictly after now, or its one-shot time."""
    clock = _clock(call)
    if expression:
        slot = Schedule(expression, timezone).after(clock.now(time.time()))
        if slot is None:
            raise JobError(ErrorCode.CRON_TIME_PASSED, f"{expression!r} never fires again")
        return slot
    if execute_time is None:
        raise JobError.missing("expression|execute_time")
    check_execute_time(execute_time, time.time())
    return clock.slot_of(execute_time)


def _schedule_params(call: Call) -> tuple[str | None, int | None]:
    p = call.params
    expression = p.get("expression")
    if expression not in (None, ""):
        # an expression wins over execute_time, as in bk-job
        return parse_expression(expression), None
    execute_time = get_int(p, "execute_time", minimum=1)
    if execute_time is not None:
        check_execute_time(execute_time, time.time())
    return None, execute_time


def _detail(row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "job_plan_id": row.plan_id,
        "expression": row.expression,
        "execute_time": row.execute_time,
        "execute_time_zone": row.timezone,
        "status": row.status,
    }


MAX_SECONDS = (2**63 - 1) // 1000 - 1
# a save or status change read again after the scheduler (or another call) moved the cron
STATUS_ATTEMPTS = 5


# handlers -------------------------------------------------------------------
async def save_cron(call: Call) -> dict[str, Any]:
    scope = await call.scope(MANAGE)
    cron_id = get_int(call.params, "id", minimum=1)
    if cron_id is None:
        row = await _create(call, scope)
        await _record(call, scope, "create_cron", row.id, _detail(row))
    else:
        row = await _update(call, scope, cron_id)
        await _record(call, scope, "update_cron", row.id, _detail(row))
    return cron_view(row, with_vars=True)


async def _refuse_taken(call: Call, scope: Scope, name: str, cron_id: int | None = None) -> None:
    """bk-job's check: a name is held by one cron of a business (checked on create and on
    a rename), so the crons of a business can be told apart by name. Two saves that read
    at once are told apart by the store's unique index."""
    holder = await call.services.crons.named(
        scope.scope_type, scope.scope_id, name, other_than=cron_id
    )
    if holder is not None:
        raise name_taken(name, holder)


async def _create(call: Call, scope: Scope) -> Any:
    p = call.params
    name = check_name(get_str(p, "name", required=True) or "")
    plan = await _plan(call, scope, need_int(p, "job_plan_id", minimum=1))
    expression, execute_time = _schedule_params(call)
    if expression is None and execute_time is None:
        raise JobError(
            ErrorCode.MISSING_PARAM_WITH_NAME,
            "Missing parameter [expression|execute_time]: "
            "a cron needs an expression or a one-shot execute_time",
        )
    zone = get_str(p, "execute_time_zone")
    if zone is not None:
        timezone = check_timezone(zone)
    elif scope.scope_type == ScopeType.BIZ:
        timezone = await call.services.crons.business_timezone(scope.bk_biz_id) or DEFAULT_TIMEZONE
    else:
        timezone = DEFAULT_TIMEZONE
    values = _values(call, plan, p.get("global_var_list"), [])
    # checked last, as bk-job checks it after the expression and the variables
    await _refuse_taken(call, scope, name)
    user = call.caller.username
    crons = call.services.crons
    cron_id = await crons.create(
        {
            "bk_biz_id": scope.bk_biz_id,
            "scope_type": scope.scope_type,
            "scope_id": scope.scope_id,
            "name": name,
            "plan_id": plan.id,
            "expression": expression,
            "execute_time": execute_time,
            "timezone": timezone,
            "variables": seal_values(values, call.services.job_plans.cipher),
            "next_fire_at": None,
            "operator": user,
            "app_code": call.caller.app_code,
            "creator": user,
            "last_modify_user": user,
        }
    )
    return await crons.get(scope.scope_type, scope.scope_id, cron_id)


async def _update(call: Call, scope: Scope, cron_id: int) -> Any:
    crons = call.services.crons
    for _attempt in range(STATUS_ATTEMPTS):
        row = await crons.get(scope.scope_type, scope.scope_id, cron_id)
        # written only over the status and slot read here: a firing in between (a
        # one-shot's pauses it with no slot left) is read again, not overwritten
        if await crons.change(row, await _update_values(call, scope, row)):
            return await crons.get(scope.scope_type, scope.scope_id, cron_id)
    raise JobError(ErrorCode.CONFLICT, f"Cron {cron_id} kept changing while it was saved: retry")


async def _update_values(call: Call, scope: Scope, row: Any) -> dict[str, Any]:
    """What a save writes over ``row``, the cron as read."""
    p = call.params
    cipher = call.services.job_plans.cipher
    user = call.caller.username
    values: dict[str, Any] = {
        "last_modify_user": user,
        "last_modify_time": now_ms(),
        # a cron's jobs run as whoever changed it last, as in bk-job
        "operator": user,
        "app_code": call.caller.app_code,
    }
    name = get_str(p, "name")
    if name is not None:
        values["name"] = check_name(name)
    plan_id = get_int(p, "job_plan_id", minimum=1)
    plan = await _plan(call, scope, plan_id if plan_id is not None else row.plan_id)
    values["plan_id"] = plan.id
    expression, execute_time = _schedule_params(call)
    if expression is not None or execute_time is not None:
        values["expression"] = expression
        values["execute_time"] = execute_time
    zone = get_str(p, "execute_time_zone")
    if zone is not None:
        values["timezone"] = check_timezone(zone)
    kept = open_values(row.variables, cipher)
    if "global_var_list" in p:
        fresh = _values(call, plan, p.get("global_var_list"), kept)
    else:
        # the same values checked again, by name: the plan may have changed
        fresh = _values(call, plan, [{k: v for k, v in e.items() if k != "id"} for e in kept], [])
    values["variables"] = seal_values(fresh, cipher)
    rescheduled = any(k in values for k in ("expression", "timezone"))
    if rescheduled and row.status == CronStatus.RUNNING:
        values["next_fire_at"] = _first_slot(
            call,
            values.get("expression", row.expression),
            values.get("timezone", row.timezone),
            values.get("execute_time", row.execute_time),
        )
    if "name" in values and values["name"] != row.name:
        # a cron saved again under the name it has passes, as it would in bk-job, even
        # one of two that shared a name before names were held (clients send it whole)
        await _refuse_taken(call, scope, values["name"], row.id)
    return values


async def get_cron_list(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW)
    p = call.params
    offset = get_int(p, "start", default=0, minimum=0) or 0
    length = get_int(p, "length", default=20, minimum=1, maximum=1000) or 20

    def span(prefix: str) -> tuple[int | None, int | None]:
        # seconds here, milliseconds in the store: the product must still fit in 64 bits
        low = get_int(p, f"{prefix}_start", minimum=0, maximum=MAX_SECONDS)
        high = get_int(p, f"{prefix}_end", minimum=0, maximum=MAX_SECONDS)
        return (
            None if low is None else low * 1000,
            None if high is None else high * 1000 + 999,
        )

    total, rows = await call.services.crons.page(
        scope.scope_type,
        scope.scope_id,
        cron_id=get_int(p, "id", minimum=1),
        name=get_str(p, "name"),
        status=get_int(p, "status"),
        creator=get_str(p, "creator"),
        last_modify_user=get_str(p, "last_modify_user"),
        create_range=span("create_time"),
        modify_range=span("last_modify_time"),
        offset=offset,
        limit=length,
    )
    return {
        "start": offset,
        "length": length,
        "total": total,
        "data": [cron_view(r, with_vars=False) for r in rows],
    }


async def get_cron_detail(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW)
    cron_id = positive_id(call.params, "id", ErrorCode.INVALID_PARAM)
    row = await call.services.crons.get(scope.scope_type, scope.scope_id, cron_id)
    # a value given to what became a password of the plan since is sealed before it shows
    row = await call.services.crons.seal_passwords(row, call.services.job_plans.cipher)
    return cron_view(row, with_vars=True)


async def _status_values(call: Call, scope: Scope, row: Any, status: int) -> dict[str, Any]:
    user = call.caller.username
    values: dict[str, Any] = {"last_modify_user": user, "last_modify_time": now_ms()}
    if status == CronStatus.RUNNING:
        await _plan(call, scope, row.plan_id)
        if row.status != CronStatus.RUNNING or row.next_fire_at is None:
            values["next_fire_at"] = _first_slot(
                call, row.expression, row.timezone, row.execute_time
            )
        values.update(status=int(CronStatus.RUNNING), operator=user, app_code=call.caller.app_code)
    else:
        values.update(status=int(CronStatus.PAUSED), next_fire_at=None)
    return values


async def update_cron_status(call: Call) -> dict[str, Any]:
    scope = await call.scope(MANAGE)
    p = call.params
    # bk-job's own check: a missing id or status is invalid (1241010), not missing
    cron_id = get_int(p, "id")
    if cron_id is None or cron_id < 1:
        raise JobError.invalid("id", "id must be a positive integer")
    status = get_int(p, "status")
    if status is None:
        raise JobError.invalid("status", "1 (start) or 2 (pause)")
    if status not in (CronStatus.RUNNING, CronStatus.PAUSED):
        raise JobError.invalid("status", "1 (start) or 2 (pause)")
    crons = call.services.crons
    for _attempt in range(STATUS_ATTEMPTS):
        row = await crons.get(scope.scope_type, scope.scope_id, cron_id)
        # written only over the status and slot read here: a firing in between (a
        # one-shot's pauses it with no slot left) is read again, not overwritten
        if await crons.change(row, await _status_values(call, scope, row, status)):
            break
    else:
        raise JobError(
            ErrorCode.CONFLICT, f"Cron {cron_id} kept changing while its status was set: retry"
        )
    action = "start_cron" if status == CronStatus.RUNNING else "pause_cron"
    await _record(call, scope, action, cron_id)
    # bk-job's code answers a cron object with only its id set
    return {**dict.fromkeys(VIEW_KEYS), "id": cron_id}


async def delete_cron(call: Call) -> None:
    scope = await call.scope(MANAGE)
    cron_id = need_int(call.params, "id", minimum=1)
    row = await call.services.crons.get(scope.scope_type, scope.scope_id, cron_id)
    await call.services.crons.delete(cron_id)
    await _record(call, scope, "delete_cron", cron_id, _detail(row))


def register(router: APIRouter) -> None:
    add_api(router, "save_cron", save_cron, query=False)
    add_api(router, "get_cron_list", get_cron_list, query=True)
    add_api(router, "get_cron_detail", get_cron_detail, query=True)
    add_api(router, "update_cron_status", update_cron_status, query=False)
    add_api(router, "delete_cron", delete_cron, query=False)
