"""Job templates and execution plans.

bk-job v3 reads (``get_job_template_list``, ``get_job_plan_list``,
``get_job_plan_detail``) and jobfleet's own REST API under ``/api/jobfleet/v1``
(``/templates``, ``/plans``, YAML export and import; docs/templates.md).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import APIRouter
from sqlalchemy import Row
from starlette.requests import Request
from starlette.responses import Response

from jobfleet.api import envelope
from jobfleet.api.auditing import audit, refusal
from jobfleet.api.auth import Caller
from jobfleet.api.params import get_bool, get_int, get_list, get_str
from jobfleet.api.routing import MAX_BODY, Call, Handler, add_api, make_endpoint, services_of
from jobfleet.domain import template_files
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.scripts import encode_base64
from jobfleet.domain.status import ScopeType, ScriptType, StepType, VariableType
from jobfleet.domain.templates import public_steps
from jobfleet.domain.variables import MASK, Variable
from jobfleet.engine.submit import Scope
from jobfleet.store.database import change_stamps
from jobfleet.store.plans import PlanStore
from jobfleet.store.templates import ListFilter, TemplateStore

log = logging.getLogger(__name__)

PREFIX = "/api/jobfleet/v1"
YAML_TYPE = "application/yaml"
# bk-job's IAM action ids, named in permission errors
VIEW_TEMPLATE = "view_job_template"
CREATE_TEMPLATE = "create_job_template"
EDIT_TEMPLATE = "edit_job_template"
DELETE_TEMPLATE = "delete_job_template"
VIEW_PLAN = "view_job_plan"
CREATE_PLAN = "create_job_plan"
EDIT_PLAN = "edit_job_plan"
DELETE_PLAN = "delete_job_plan"
SYNC_PLAN = "sync_plan"


# --- parameters -----------------------------------------------------------------


def _page(params: dict[str, Any]) -> tuple[int, int]:
    start = get_int(params, "start", default=0, minimum=0) or 0
    length = get_int(params, "length", default=20, minimum=1, maximum=1000) or 20
    return start, length


def _filter(params: dict[str, Any]) -> ListFilter:
    return ListFilter(
        creator=get_str(params, "creator"),
        name=get_str(params, "name", max_length=512),
        create_time_start=get_int(params, "create_time_start"),
        create_time_end=get_int(params, "create_time_end"),
        last_modify_user=get_str(params, "last_modify_user"),
        last_modify_time_start=get_int(params, "last_modify_time_start"),
        last_modify_time_end=get_int(params, "last_modify_time_end"),
    )


def _path_id(call: Call, name: str) -> int:
    raw = call.request.path_params.get(name, call.params.get(name))
    value = get_int({name: raw}, name, required=True, minimum=1)
    assert value is not None
    return value


def _step_ids(params: dict[str, Any]) -> list[int] | None:
    if params.get("enabled_step_ids") is None:
        return None
    out = []
    for raw in get_list(params, "enabled_step_ids"):
        value = get_int({"enabled_step_ids": raw}, "enabled_step_ids", minimum=1)
        if value is not None:
            out.append(value)
    return out


async def _biz_scope(call: Call, action: str) -> Scope:
    """The scope a template is created in: one business."""
    scope = await call.scope(action)
    if scope.scope_type != ScopeType.BIZ:
        raise JobError(
            ErrorCode.NOT_SUPPORTED,
            f"Job templates belong to a business: use bk_scope_type biz, not {scope.scope_type}",
        )
    return scope


async def _audit(
    call: Call,
    scope: Scope,
    action: str,
    resource_type: str,
    resource_id: int,
    detail: dict[str, Any] | None = None,
) -> None:
    await audit(
        call,
        action,
        resource_type,
        resource_id,
        scope_type=scope.scope_type,
        scope_id=scope.scope_id,
        detail=detail,
    )


# --- views ----------------------------------------------------------------------


def _scope_fields(bk_biz_id: int) -> dict[str, Any]:
    return {"bk_biz_id": bk_biz_id, "bk_scope_type": ScopeType.BIZ, "bk_scope_id": str(bk_biz_id)}


def template_item(row: Row[Any]) -> dict[str, Any]:
    """A template in a list (bk-job §5.1)."""
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        **change_stamps(row),
        **_scope_fields(row.bk_biz_id),
    }


def plan_item(row: Row[Any]) -> dict[str, Any]:
    """A plan in a list (bk-job §5.1); ``row`` carries ``need_update``."""
    return {
        "id": row.id,
        "job_template_id": row.template_id,
        "name": row.name,
        **change_stamps(row),
        "need_update": bool(row.need_update),
        **_scope_fields(row.bk_biz_id),
    }


def template_view(store: TemplateStore, row: Row[Any]) -> dict[str, Any]:
    """A whole template as jobfleet's own API shows it: scripts in plain text, secrets masked."""
    return {
        **template_item(row),
        "version": row.version,
        "step_list": public_steps(store.steps(row)),
        "global_var_list": [v.public() for v in store.variables(row)],
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


def _texts(step: dict[str, Any], contents: dict[int, str]) -> list[str]:
    """The text of a step in which variables may appear."""
    out: list[str] = []
    info = step.get("script_info")
    if info:
        version = info.get("script_version_id")
        out += [info.get("script_content") or "", info.get("script_param") or ""]
        if version is not None:
            out.append(contents.get(int(version), ""))
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


def _used(var: Variable, texts: str, host_vars: set[str]) -> bool:
    if var.name in host_vars:
        return True
    return (
        re.search(rf"\$(?:\{{{re.escape(var.name)}\}}|{re.escape(var.name)}\b)", texts) is not None
    )


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
    texts = "\n".join(t for s in steps for t in _texts(s, contents))
    host_vars = set().union(*(_host_vars(s) for s in steps)) if steps else set()
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
        **_scope_fields(row.bk_biz_id),
        "global_var_list": [
            _global_var(v, _used(v, texts, host_vars)) for v in store.variables(row)
        ],
        "step_list": step_list,
    }


def _page_of(start: int, length: int, total: int, data: list[Any]) -> dict[str, Any]:
    return {"start": start, "length": length, "total": total, "data": data}


# --- bk-job v3 reads ------------------------------------------------------------


async def get_job_template_list(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW_TEMPLATE)
    start, length = _page(call.params)
    total, rows = await call.services.templates.list_templates(
        scope.biz_ids, _filter(call.params), start, length
    )
    return _page_of(start, length, total, [template_item(r) for r in rows])


async def get_job_plan_list(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW_PLAN)
    start, length = _page(call.params)
    total, rows = await call.services.job_plans.list_plans(
        scope.biz_ids,
        _filter(call.params),
        template_id=get_int(call.params, "job_template_id", minimum=1),
        offset=start,
        limit=length,
    )
    return _page_of(start, length, total, [plan_item(r) for r in rows])


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


# --- jobfleet's own routes: templates -------------------------------------------


async def create_template(call: Call) -> dict[str, Any]:
    scope = await _biz_scope(call, CREATE_TEMPLATE)
    p, store = call.params, call.services.templates
    template_id = await store.create_template(
        scope.bk_biz_id,
        p.get("name"),
        p.get("description"),
        p.get("step_list"),
        p.get("global_var_list"),
        call.caller.username,
    )
    await _audit(call, scope, "create_job_template", "job_template", template_id)
    return template_view(store, await store.get_template(scope.biz_ids, template_id))


async def list_templates(call: Call) -> dict[str, Any]:
    return await get_job_template_list(call)


async def get_template(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW_TEMPLATE)
    store = call.services.templates
    return template_view(store, await store.get_template(scope.biz_ids, _path_id(call, "id")))


async def update_template(call: Call) -> dict[str, Any]:
    scope = await call.scope(EDIT_TEMPLATE)
    p, store = call.params, call.services.templates
    template_id = _path_id(call, "id")
    row = await store.update_template(
        scope.biz_ids,
        template_id,
        p.get("name"),
        p.get("description"),
        p.get("step_list"),
        p.get("global_var_list"),
        call.caller.username,
    )
    await _audit(
        call, scope, "update_job_template", "job_template", template_id, {"version": row.version}
    )
    return template_view(store, row)


async def delete_template(call: Call) -> dict[str, Any]:
    scope = await call.scope(DELETE_TEMPLATE)
    template_id = _path_id(call, "id")
    row, plan_ids = await call.services.templates.delete_template(
        scope.biz_ids, template_id, cascade=get_bool(call.params, "cascade")
    )
    await _audit(
        call,
        scope,
        "delete_job_template",
        "job_template",
        template_id,
        {"name": row.name, "deleted_plan_ids": plan_ids},
    )
    return {"id": template_id, "deleted_plan_ids": plan_ids}


# --- jobfleet's own routes: plans -----------------------------------------------


async def create_plan(call: Call) -> dict[str, Any]:
    scope = await call.scope(CREATE_PLAN)
    p, store = call.params, call.services.job_plans
    template_id = _path_id(call, "id")
    plan_id = await store.create_plan(
        scope.biz_ids,
        template_id,
        p.get("name"),
        _step_ids(p),
        p.get("global_var_list"),
        call.caller.username,
        p.get("description"),
    )
    await _audit(
        call, scope, "create_job_plan", "job_plan", plan_id, {"job_template_id": template_id}
    )
    return plan_view(store, await store.get_plan(scope.biz_ids, plan_id))


async def list_plans(call: Call) -> dict[str, Any]:
    call.params["job_template_id"] = _path_id(call, "id")
    return await get_job_plan_list(call)


async def get_plan(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW_PLAN)
    store = call.services.job_plans
    return plan_view(store, await store.get_plan(scope.biz_ids, _path_id(call, "id")))


async def update_plan(call: Call) -> dict[str, Any]:
    scope = await call.scope(EDIT_PLAN)
    p, store = call.params, call.services.job_plans
    plan_id = _path_id(call, "id")
    row = await store.update_plan(
        scope.biz_ids,
        plan_id,
        user=call.caller.username,
        name=p.get("name"),
        description=p.get("description"),
        enabled_step_ids=_step_ids(p),
        values=p.get("global_var_list"),
    )
    await _audit(call, scope, "update_job_plan", "job_plan", plan_id)
    return plan_view(store, row)


async def delete_plan(call: Call) -> dict[str, Any]:
    scope = await call.scope(DELETE_PLAN)
    plan_id = _path_id(call, "id")
    row = await call.services.job_plans.delete_plan(scope.biz_ids, plan_id)
    await _audit(
        call,
        scope,
        "delete_job_plan",
        "job_plan",
        plan_id,
        {"name": row.name, "job_template_id": row.template_id},
    )
    return {"id": plan_id}


async def sync_plan(call: Call) -> dict[str, Any]:
    scope = await call.scope(SYNC_PLAN)
    store = call.services.job_plans
    plan_id = _path_id(call, "id")
    row = await store.sync_plan(scope.biz_ids, plan_id, call.caller.username)
    await _audit(
        call,
        scope,
        "sync_job_plan",
        "job_plan",
        plan_id,
        {"template_version": row.template_version},
    )
    return plan_view(store, row)


# --- YAML export and import -----------------------------------------------------


async def export_template(call: Call) -> str:
    scope = await call.scope(VIEW_TEMPLATE)
    store, plan_store = call.services.templates, call.services.job_plans
    row = await store.get_template(scope.biz_ids, _path_id(call, "id"))
    plans = [
        (p.name, p.description, *plan_store.exported_plan(p, row))
        for p in await plan_store.plans_of(row.id)
    ]
    return template_files.dump(
        template_files.build(
            row.name, row.description, store.steps(row), store.variables(row), plans
        )
    )


async def import_template(call: Call) -> dict[str, Any]:
    scope = await _biz_scope(call, CREATE_TEMPLATE)
    store = call.services.templates
    body = await call.request.body()
    if len(body) > MAX_BODY:
        raise JobError(ErrorCode.BAD_REQUEST, f"Request body larger than {MAX_BODY} bytes")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise JobError(ErrorCode.BAD_REQUEST, "The template document is not UTF-8") from None
    doc = template_files.load(text)
    update = get_bool(call.params, "update")
    result = await call.services.template_import.import_template(
        scope.bk_biz_id, doc, update_existing=update, user=call.caller.username
    )
    plans = [{"id": p.id, "name": p.name, "created": p.created} for p in result.plans]
    await _audit(
        call,
        scope,
        "import_job_template",
        "job_template",
        result.template_id,
        {"name": doc.name, "created": result.created, "plans": plans},
    )
    row = await store.get_template(scope.biz_ids, result.template_id)
    return {"created": result.created, "template": template_view(store, row), "plans": plans}


# --- routes ---------------------------------------------------------------------


def _yaml_endpoint(
    handler: Callable[[Call], Awaitable[str]],
) -> Callable[[Request], Awaitable[Response]]:
    """Answers the YAML text itself, or the usual envelope on an error."""

    async def endpoint(request: Request) -> Response:
        request_id = uuid.uuid4().hex
        services = services_of(request)
        caller: Caller | None = None
        try:
            params: dict[str, Any] = dict(request.query_params)
            caller = await services.auth.authenticate(request, params, need_user=True)
            text = await handler(Call(request, params, caller, services))
            return Response(text, media_type=YAML_TYPE)
        except JobError as exc:
            await refusal(services.audit, request, exc, caller)
            return envelope.error(exc, request_id)
        except Exception:
            log.exception("request_failed path=%s request_id=%s", request.url.path, request_id)
            return envelope.error(
                JobError(ErrorCode.INTERNAL_ERROR, f"Internal error (request {request_id})"),
                request_id,
            )

    return endpoint


def register(router: APIRouter) -> None:
    add_api(router, "get_job_template_list", get_job_template_list, query=True)
    add_api(router, "get_job_plan_list", get_job_plan_list, query=True)
    add_api(router, "get_job_plan_detail", get_job_plan_detail, query=True)

    def add(method: str, path: str, handler: Handler, *, raw_body: bool = False) -> None:
        router.add_api_route(
            PREFIX + path,
            make_endpoint(services_of, handler, raw_body=raw_body),
            methods=[method],
            name=f"{method} {path}",
        )

    add("POST", "/templates", create_template)
    add("GET", "/templates", list_templates)
    add("POST", "/templates/import", import_template, raw_body=True)
    add("GET", "/templates/{id}", get_template)
    add("PUT", "/templates/{id}", update_template)
    add("DELETE", "/templates/{id}", delete_template)
    add("POST", "/templates/{id}/plans", create_plan)
    add("GET", "/templates/{id}/plans", list_plans)
    add("GET", "/plans/{id}", get_plan)
    add("PUT", "/plans/{id}", update_plan)
    add("DELETE", "/plans/{id}", delete_plan)
    add("POST", "/plans/{id}/sync", sync_plan)
    router.add_api_route(
        PREFIX + "/templates/{id}/export",
        _yaml_endpoint(export_template),
        methods=["GET"],
        name="GET /templates/{id}/export",
    )
