"""Alert-driven self-healing (docs/self-healing.md): the inbound webhook of each rule,
the rules of a business, and the decisions taken."""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from jobfleet.api import envelope
from jobfleet.api.auditing import audit, source_of
from jobfleet.api.params import get_bool, get_int, get_str
from jobfleet.api.routing import OWN_PREFIX, Call, add_own, services_of
from jobfleet.domain import heal
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.engine.heal import Healer
from jobfleet.engine.submit import Scope
from jobfleet.store.heal import HealStore, decision_view, rule_view

log = logging.getLogger(__name__)

VIEW = "view_heal_rule"
MANAGE = "manage_heal_rule"
MIN_SECRET = 16
HOOK_PATH = OWN_PREFIX + "/heal/hooks/{rule_id}"
# name, default, minimum, maximum
LIMITS = (
    ("max_hosts", 10, 1, 1000),
    ("rate_limit", 10, 1, 100_000),
    ("host_rate_limit", 3, 1, 10_000),
    ("rate_window", 3600, 1, 30 * 86400),
    ("cooldown", 0, 0, 7 * 86400),
    ("host_cooldown", 300, 0, 7 * 86400),
)


def _healer(call: Call) -> Healer:
    healer = call.services.healer
    if healer is None:
        raise JobError(ErrorCode.NOT_SUPPORTED, "Self-healing is not available here")
    return healer


def _store(call: Call) -> HealStore:
    return _healer(call).store


# validation ---------------------------------------------------------------------------


def _names(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(
        isinstance(i, str) and 0 < len(i) <= 255 for i in items
    ):
        raise JobError.invalid(name, "a list of names")
    return list(items)


def _pairs(value: Any, name: str, limit: int) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 100:
        raise JobError.invalid(name, "an object of at most 100 names and texts")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str | int) or isinstance(item, bool):
            raise JobError.invalid(f"{name}.{key}", "a text")
        text = str(item)
        if not 0 < len(key) <= 255 or len(text) > limit or "\x00" in text:
            raise JobError.invalid(f"{name}.{key}", f"a name and a text of at most {limit}")
        out[key] = text
    return out


def _match(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - {"alertname", "severity", "labels"}:
        raise JobError.invalid("match", "an object of alertname, severity and labels")
    return {
        "alertname": _names(value.get("alertname"), "match.alertname"),
        "severity": _names(value.get("severity"), "match.severity"),
        "labels": _pairs(value.get("labels"), "match.labels", 1024),
    }


def _secret(value: Any) -> str:
    if not isinstance(value, str) or not MIN_SECRET <= len(value) <= 1024:
        raise JobError.invalid("secret", f"a text of {MIN_SECRET} to 1024 characters")
    return value


def _fields(p: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if creating or "name" in p:
        name = get_str(p, "name", required=True, max_length=255)
        out["name"] = name
    if creating or "job_plan_id" in p:
        out["job_plan_id"] = get_int(p, "job_plan_id", required=True, minimum=1)
    for key in ("enabled", "dry_run"):
        if creating or key in p:
            out[key] = get_bool(p, key, key == "enabled")
    if creating or "match" in p:
        out["match"] = _match(p.get("match"))
    if creating or "variables" in p:
        out["variables"] = _pairs(p.get("variables"), "variables", 4096)
    for key, fallback in (("host_variable", ""), ("host_label", "instance")):
        if creating or key in p:
            out[key] = get_str(p, key, max_length=255) or fallback
    if creating or "host_kind" in p:
        kind = get_str(p, "host_kind") or "ip"
        if kind not in heal.HOST_KINDS:
            raise JobError.invalid("host_kind", f"one of {', '.join(heal.HOST_KINDS)}")
        out["host_kind"] = kind
    for key, initial, low, high in LIMITS:
        if creating or key in p:
            out[key] = get_int(p, key, default=initial, minimum=low, maximum=high)
    return out


def _rule_id(call: Call) -> int:
    return get_int(call.params, "id", required=True, minimum=1) or 0


# rules --------------------------------------------------------------------------------


async def list_rules(call: Call) -> list[dict[str, Any]]:
    scope = await call.scope(VIEW)
    return [rule_view(r) for r in await _store(call).rules(scope.bk_biz_id)]


async def get_rule(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW)
    return rule_view(await _store(call).rule(scope.bk_biz_id, _rule_id(call)))


async def _plan_exists(
    call: Call, scope: Scope, fields: dict[str, Any], current: Any = None
) -> None:
    """A rule names a plan of its business (a plan deleted later refuses the alerts),
    and none of that plan's password variables."""
    plan = None
    if "job_plan_id" in fields:
        plan = await call.services.plans.plan_in_scope(
            fields["job_plan_id"], scope, ErrorCode.JOB_PLAN_NOT_EXIST
        )
    elif "variables" in fields and current is not None:
        plan = await call.services.job_plans.plan(current.job_plan_id)
    if plan is None:
        return
    kept = current.variables if current is not None else None
    variables = fields.get("variables", kept or {})
    secret = heal.password_names(plan.variables, variables)
    if secret:
        raise JobError.invalid(
            "variables",
            f"{', '.join(secret)[:500]} of plan {plan.id} is a password: a rule, and what "
            "it decides, is shown to whoever views the rules; it keeps the plan's value",
        )


async def create_rule(call: Call) -> dict[str, Any]:
    scope = await call.scope(MANAGE)
    p = call.params
    fields = _fields(p, creating=True)
    secret = _secret(p.get("secret"))
    await _plan_exists(call, scope, fields)
    row = await _store(call).create_rule(
        scope.bk_biz_id,
        secret=secret,
        user=call.caller.username,
        app_code=call.caller.app_code,
        **fields,
    )
    view = rule_view(row)
    await audit(call, "create_heal_rule", "heal_rule", str(row.id), scope=scope, detail=view)
    return {**view, "webhook_path": HOOK_PATH.format(rule_id=row.id)}


async def update_rule(call: Call) -> dict[str, Any]:
    scope = await call.scope(MANAGE)
    p = call.params
    changes = _fields(p, creating=False)
    if "secret" in p:
        changes["secret"] = _secret(p["secret"])
    if not changes:
        raise JobError(ErrorCode.MISSING_PARAM, "Nothing to change")
    current = await _store(call).rule(scope.bk_biz_id, _rule_id(call))
    await _plan_exists(call, scope, changes, current)
    row = await _store(call).update_rule(
        scope.bk_biz_id, _rule_id(call), user=call.caller.username, **changes
    )
    view = rule_view(row)
    await audit(call, "update_heal_rule", "heal_rule", str(row.id), scope=scope, detail=view)
    return view


async def delete_rule(call: Call) -> dict[str, Any]:
    scope = await call.scope(MANAGE)
    row = await _store(call).delete_rule(scope.bk_biz_id, _rule_id(call))
    await audit(call, "delete_heal_rule", "heal_rule", str(row.id), scope=scope)
    return rule_view(row)


async def list_decisions(call: Call) -> dict[str, Any]:
    """Newest first, with the job each started and that job's status."""
    scope = await call.scope(VIEW)
    p = call.params
    decision = get_str(p, "decision")
    if decision and decision not in heal.DECISIONS:
        raise JobError.invalid("decision", f"one of {', '.join(heal.DECISIONS)}")
    offset = get_int(p, "start", default=0, minimum=0) or 0
    length = get_int(p, "length", default=20, minimum=1, maximum=1000) or 20
    total, rows = await _store(call).decisions(
        scope.bk_biz_id,
        rule_id=get_int(p, "rule_id", minimum=1),
        decision=decision,
        offset=offset,
        limit=length,
    )
    jobs = call.services.jobs
    data = []
    for row in rows:
        view = decision_view(row)
        job = await jobs.job(row.job_instance_id) if row.job_instance_id else None
        view["job_status"] = job.status if job is not None else None
        data.append(view)
    return {"start": offset, "length": length, "total": total, "data": data}


# the webhook --------------------------------------------------------------------------


async def receive(request: Request) -> Response:
    """An alert from a monitoring system: authenticated by the rule's secret, not by an
    app (Alertmanager sends no BlueKing credentials)."""
    request_id = uuid.uuid4().hex
    services = services_of(request)
    try:
        raw_id = str(request.path_params.get("rule_id", ""))
        if not raw_id.isdecimal() or len(raw_id) > 18:
            raise JobError(ErrorCode.SERVICE_AUTH_FAIL, "Unknown rule or bad credentials")
        healer = services.healer
        if healer is None:
            raise JobError(ErrorCode.NOT_SUPPORTED, "Self-healing is not available here")
        body = await request.body()
        decisions = await healer.receive(int(raw_id), body, request.headers, source_of(request))
        return envelope.ok({"decisions": decisions}, request_id)
    except JobError as exc:
        return envelope.error(exc, request_id, envelope.request_language(request))
    except Exception:
        log.exception("heal_webhook_failed request_id=%s", request_id)
        return envelope.error(
            JobError(ErrorCode.INTERNAL_ERROR, f"Internal error (request {request_id})"),
            request_id,
            envelope.request_language(request),
        )


def register(router: APIRouter) -> None:
    add = functools.partial(add_own, router)

    rules = "/businesses/{bk_biz_id}/heal-rules"
    add("GET", rules, list_rules)
    add("POST", rules, create_rule)
    add("GET", rules + "/{id}", get_rule)
    add("PUT", rules + "/{id}", update_rule)
    add("DELETE", rules + "/{id}", delete_rule)
    add("GET", "/businesses/{bk_biz_id}/heal-decisions", list_decisions)
    router.add_api_route(HOOK_PATH, receive, methods=["POST"], name="POST heal hook")
