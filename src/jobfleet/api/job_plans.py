"""Execution plans of job templates: bk-job's ``get_job_plan_list`` and
``get_job_plan_detail`` (§5.1, §5.2), and jobfleet's own ``/templates/{id}/plans`` and
``/plans`` routes (docs/templates.md)."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import Row

from jobfleet.api.auditing import audit
from jobfleet.api.params import get_int, get_list
from jobfleet.api.routing import Call
from jobfleet.api.template_views import (
    CREATE_PLAN,
    DELETE_PLAN,
    EDIT_PLAN,
    SYNC_PLAN,
    VIEW_PLAN,
    list_filter,
    page,
    page_of,
    path_id,
    scope_fields,
)
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.scripts import encode_base64
from jobfleet.domain.status import ScriptType, StepType, VariableType
from jobfleet.domain.templates import public_steps
from jobfleet.domain.variables import MASK, Variable
from jobfleet.store.database import change_stamps
from jobfleet.store.plans import PlanStore


def _step_ids(params: dict[str, Any]) -> list[int] | None:
    if params.get("enabled_step_ids") is None:
        return None
    out = []
    for raw in get_list(params, "enabled_step_ids"):
        value = get_int({"enabled_step_ids": raw}, "enabled_step_ids", minimum=1)
        if value is not None:
            out.append(value)
    return out


def plan_item(row: Row[Any]) -> dict[str, Any]:
    """A plan in a list (bk-job §5.1); ``row`` carries ``need_update``."""
    return {
        "id": row.id,
        "job_template_id": row.template_id,
        "name": row.name,
        **change_stamps(row),
        "need_update": bool(row.need_update),
        **scope_fields(row.bk_biz_id),
    }


def plan_view(store: PlanStore, row: Row[Any]) -> dict[str, Any]:
    return {
        **plan_item(row),
        "description": row.description,
        "template_version": row.template_version,
        "step_list": public_steps(store.steps(row)),
        "global_var_list": [v.public() for v in store.variables(row)],
    }


def _account(ref: Any, accounts: dict[int, Row[Any]]) -> dict[str, Any]:
    ref = ref if isinstance(ref, dict) else {}
    row = accounts.get(int(ref["id"])) if ref.get("id") is not None else None
    if row is None:
        return {"id": ref.get("id"), "name": None, "alias": ref.get("alias")}
    return {"id": row.id, "name": row.account, "alias": row.alias}


def _script_info(info: dict[str, Any], accounts: dict[int, Row[Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"script_type": info["script_type"]}
    if info["script_type"] == ScriptType.LOCAL:
        out["script_content"] = encode_base64(info.get("script_content") or "")
    else:
        out["script_id"] = info.get("script_id")
        out["script_version_id"] = info.get("script_version_id")
    param = info.get("script_param") or ""
    if info.get("is_param_sensitive") and param:
        param = MASK
    out.update(
        script_language=info.get("script_language"),
        script_param=encode_base64(param),
        script_timeout=info.get("script_timeout"),
        account=_account(info.get("account"), accounts),
        server=info.get("server"),
        is_param_sensitive=int(bool(info.get("is_param_sensitive"))),
        is_ignore_error=int(bool(info.get("is_ignore_error"))),
    )
    return out


def _file_info(info: dict[str, Any], accounts: dict[int, Row[Any]]) -> dict[str, Any]:
    sources = []
    for src in info.get("file_source_list") or []:
        item: dict[str, Any] = {"file_list": src.get("file_list"), "file_type": src["file_type"]}
        if "account" in src:
            item["account"] = _account(src["account"], accounts)
        if "server" in src:
            item["server"] = src["server"]
        for key in ("file_source_id", "file_source_code"):
            if key in src:
                item[key] = src[key]
        sources.append(item)
    dest = info.get("file_destination") or {}
    return {
        "file_source_list": sources,
        "file_destination": {
            "path": dest.get("path"),
            "account": _account(dest.get("account"), accounts),
            "server": dest.get("server"),
        },
        "timeout": info.get("timeout"),
        "source_speed_limit": info.get("source_speed_limit"),
        "destination_speed_limit": info.get("destination_speed_limit"),
        "transfer_mode": info.get("transfer_mode"),
        "is_ignore_error": int(bool(info.get("is_ignore_error"))),
    }


def _account_ids(steps: Iterable[dict[str, Any]]) -> set[int]:
    refs: list[Any] = []
    for step in steps:
        if "script_info" in step:
            refs.append(step["script_info"].get("account"))
        if "file_info" in step:
            info = step["file_info"]
            refs.extend(src.get("account") for src in info.get("file_source_list") or [])
            refs.append((info.get("file_destination") or {}).get("account"))
    return {int(r["id"]) for r in refs if isinstance(r, dict) and r.get("id") is not None}


def _texts(step: dict[str, Any]) -> list[str]:
    """The text of a step in which variables may appear, but for its stored script's."""
    out: list[str] = []
    info = step.get("script_info")
    if info:
        out += [info.get("script_content") or "", info.get("script_param") or ""]
    files = step.get("file_info")
    if files:
        for src in files.get("file_source_list") or []:
            out.extend(str(f) for f in src.get("file_list") or [])
        out.append(str((files.get("file_destination") or {}).get("path") or ""))
    return out


def _host_vars(step: dict[str, Any]) -> set[str]:
    servers = []
    if "script_info" in step:
        servers.append(step["script_info"].get("server"))
    if "file_info" in step:
        info = step["file_info"]
        servers += [src.get("server") for src in info.get("file_source_list") or []]
        servers.append((info.get("file_destination") or {}).get("server"))
    return {str(s["variable"]) for s in servers if isinstance(s, dict) and s.get("variable")}


def used_names(names: Collection[str], texts: Iterable[str]) -> set[str]:
    """Which of ``names`` a text refers to, as ``$name`` or ``${name}``.

    One pass over each text for all the names: a plan's stored scripts may hold megabytes,
    and a search per variable over every step's copy of them held the server for as
    long as a minute."""
    left = set(names)
    found: set[str] = set()
    if not left:
        return found
    alternatives = "|".join(re.escape(n) for n in sorted(left))
    pattern = re.compile(rf"\$(?:\{{({alternatives})\}}|({alternatives})\b)")
    for text in texts:
        for match in pattern.finditer(text):
            found.add(match.group(1) or match.group(2))
            if found == left:
                return found
    return found


def _global_var(var: Variable, used: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": var.id,
        "name": var.name,
        "type": int(var.type),
        "description": var.description,
        "required": int(var.required),
        "value": None,
        "used": used,
    }
    if var.type == VariableType.HOST_LIST:
        out["server"] = var.server or {}
    elif var.type == VariableType.PASSWORD:
        out["value"] = MASK if var.value else ""
    else:
        out["value"] = var.value
    return out


async def plan_detail(call: Call, row: Row[Any]) -> dict[str, Any]:
    """``get_job_plan_detail`` data (bk-job §5.2): the enabled steps only, base64 scripts."""
    store = call.services.job_plans
    steps = [s for s in store.steps(row) if s.get("enabled", True)]
    accounts = await call.services.accounts.by_ids(_account_ids(steps))
    versions = {
        int(s["script_info"]["script_version_id"])
        for s in steps
        if s.get("script_info") and s["script_info"].get("script_version_id") is not None
    }
    contents = await call.services.scripts.contents(versions)
    variables = store.variables(row)
    host_vars = set().union(*(_host_vars(s) for s in steps)) if steps else set()
    # each stored script once, however many steps run it
    texts = [*(t for s in steps for t in _texts(s)), *contents.values()]
    used = host_vars | used_names({v.name for v in variables} - host_vars, texts)
    step_list = []
    for step in steps:
        item: dict[str, Any] = {"id": step["id"], "name": step["name"], "type": step["type"]}
        if step["type"] == StepType.SCRIPT:
            item["script_info"] = _script_info(step["script_info"], accounts)
        elif step["type"] == StepType.FILE:
            item["file_info"] = _file_info(step["file_info"], accounts)
        else:
            item["approval_info"] = step.get("approval_info")
        step_list.append(item)
    return {
        "id": row.id,
        "job_plan_id": row.id,
        "job_template_id": row.template_id,
        "name": row.name,
        **change_stamps(row),
        **scope_fields(row.bk_biz_id),
        "global_var_list": [_global_var(v, v.name in used) for v in variables],
        "step_list": step_list,
    }


async def get_job_plan_list(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW_PLAN)
    start, length = page(call.params)
    total, rows = await call.services.job_plans.list_plans(
        scope.biz_ids,
        list_filter(call.params),
        template_id=get_int(call.params, "job_template_id", minimum=1),
        offset=start,
        limit=length,
    )
    return page_of(start, length, total, [plan_item(r) for r in rows])


async def get_job_plan_detail(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW_PLAN)
    try:
        plan_id = get_int(call.params, "job_plan_id", minimum=1)
    except JobError:
        plan_id = None
    if plan_id is None:
        raise JobError(
            ErrorCode.MISSING_OR_INVALID_PARAM, "Missing or invalid parameter [job_plan_id]"
        )
    row = await call.services.job_plans.get_plan(scope.biz_ids, plan_id)
    return await plan_detail(call, row)


async def create_plan(call: Call) -> dict[str, Any]:
    scope = await call.scope(CREATE_PLAN)
    p, store = call.params, call.services.job_plans
    template_id = path_id(call, "id")
    plan_id = await store.create_plan(
        scope.biz_ids,
        template_id,
        p.get("name"),
        _step_ids(p),
        p.get("global_var_list"),
        call.caller.username,
        p.get("description"),
    )
    await audit(
        call,
        "create_job_plan",
        "job_plan",
        plan_id,
        scope=scope,
        detail={"job_template_id": template_id},
    )
    return plan_view(store, await store.get_plan(scope.biz_ids, plan_id))


async def list_plans(call: Call) -> dict[str, Any]:
    call.params["job_template_id"] = path_id(call, "id")
    return await get_job_plan_list(call)


async def get_plan(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW_PLAN)
    store = call.services.job_plans
    return plan_view(store, await store.get_plan(scope.biz_ids, path_id(call, "id")))


async def update_plan(call: Call) -> dict[str, Any]:
    scope = await call.scope(EDIT_PLAN)
    p, store = call.params, call.services.job_plans
    plan_id = path_id(call, "id")
    row = await store.update_plan(
        scope.biz_ids,
        plan_id,
        user=call.caller.username,
        name=p.get("name"),
        description=p.get("description"),
        enabled_step_ids=_step_ids(p),
        values=p.get("global_var_list"),
    )
    await audit(call, "update_job_plan", "job_plan", plan_id, scope=scope)
    return plan_view(store, row)


async def delete_plan(call: Call) -> dict[str, Any]:
    scope = await call.scope(DELETE_PLAN)
    plan_id = path_id(call, "id")
    row = await call.services.job_plans.delete_plan(scope.biz_ids, plan_id)
    await audit(
        call,
        "delete_job_plan",
        "job_plan",
        plan_id,
        scope=scope,
        detail={"name": row.name, "job_template_id": row.template_id},
    )
    return {"id": plan_id}


async def sync_plan(call: Call) -> dict[str, Any]:
    scope = await call.scope(SYNC_PLAN)
    store = call.services.job_plans
    plan_id = path_id(call, "id")
    row = await store.sync_plan(scope.biz_ids, plan_id, call.caller.username)
    await audit(
        call,
        "sync_job_plan",
        "job_plan",
        plan_id,
        scope=scope,
        detail={"template_version": row.template_version},
    )
    return plan_view(store, row)
