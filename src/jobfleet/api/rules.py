"""bk-job v3 dangerous-statement rules (§8): the rule calls and ``check_script``.

Rules are global, not per business. Any authenticated user reads them and checks a
script; only administrators change them (others get 9900403, as bk-job answers
without its ``high_risk_detect_rule`` permission).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from jobfleet.api.auditing import audit
from jobfleet.api.params import get_int, get_str, need_int
from jobfleet.api.routing import Call, add_api
from jobfleet.domain.dangerous import (
    LANGUAGES,
    MAX_DESCRIPTION,
    RuleStatus,
    check_action,
    check_languages,
    check_posix_classes,
    compile_expression,
    probe_expression,
)
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.scripts import MAX_SCRIPT_BYTES, decode_base64_script

# bk-job's IAM action for every change of a rule
MANAGE = "high_risk_detect_rule"
MAX_ID = 2**63 - 1


def _require_admin(call: Call) -> None:
    if call.caller.is_admin:
        return
    who = (
        f"App {call.caller.app_code!r} is not an administration app"
        if call.caller.user.is_admin
        else f"User {call.caller.username!r}"
    )
    raise JobError(
        ErrorCode.PERMISSION_DENIED,
        f"{who}: changing dangerous-statement rules needs an administrator",
        permission={
            "system_id": "bk_job",
            "system_name": "JOB",
            "actions": [{"id": MANAGE, "name": MANAGE, "related_resource_types": []}],
        },
    )


async def _record(call: Call, action: str, view: dict[str, Any]) -> None:
    await audit(
        call,
        action,
        "dangerous_rule",
        view["id"],
        detail={
            k: view[k]
            for k in ("expression", "script_language_list", "action", "status", "description")
        },
    )


# parameters ----------------------------------------------------------------------
def _id(p: dict[str, Any]) -> int:
    return need_int(p, "id", minimum=1, maximum=MAX_ID)


async def _expression(p: dict[str, Any], *, required: bool) -> str | None:
    value = p.get("expression")
    if value is None or value == "":
        if required:
            raise JobError.missing("expression")
        return None
    if not isinstance(value, str):
        raise JobError.invalid("expression", "must be a string")
    # one meaning for the checker and the matcher; stored rules are not checked again
    check_posix_classes(value)
    # a rule every script will meet must not backtrack for ever on a crafted line
    await asyncio.to_thread(probe_expression, compile_expression(value))
    return value


def _languages(p: dict[str, Any], *, required: bool) -> list[int] | None:
    """A JSON list, or in a query string ``1,4`` (or one number)."""
    name = "script_language_list"
    value = p.get(name)
    if value is None or value == "" or value == []:
        if required:
            raise JobError.missing(name)
        return None
    if isinstance(value, str):
        value = value.replace("[", "").replace("]", "").split(",")
    elif isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise JobError.invalid(name, "must be a list of script languages")
    return check_languages(value, name)


def _action(p: dict[str, Any], *, required: bool) -> int | None:
    value = get_int(p, "action", required=required)
    return None if value is None else int(check_action(value))


def _description(p: dict[str, Any]) -> str | None:
    value = get_str(p, "description", max_length=MAX_DESCRIPTION)
    if value is None and p.get("description") == "":
        return ""
    return value


# calls ---------------------------------------------------------------------------
async def get_dangerous_rule_list(call: Call) -> list[dict[str, Any]]:
    p = call.params
    return await call.services.rules.search(
        expression=get_str(p, "expression", max_length=1024),
        description=get_str(p, "description", max_length=MAX_DESCRIPTION),
        languages=_languages(p, required=False),
        action=_action(p, required=False),
    )


async def create_dangerous_rule(call: Call) -> dict[str, Any]:
    _require_admin(call)
    p = call.params
    expression = await _expression(p, required=True)
    languages = _languages(p, required=True)
    action = _action(p, required=True)
    assert expression is not None and languages is not None and action is not None
    # a rule works as soon as it is made, unless the caller asks for it off
    status = get_int(p, "status", default=int(RuleStatus.ENABLED))
    if status not in (int(RuleStatus.ENABLED), int(RuleStatus.DISABLED)):
        raise JobError.invalid("status", "0 (off) or 1 (on)")
    view = await call.services.rules.create(
        expression=expression,
        languages=languages,
        action=action,
        description=_description(p) or "",
        user=call.caller.username,
        status=status,
    )
    await _record(call, "create_dangerous_rule", view)
    return view


async def update_dangerous_rule(call: Call) -> dict[str, Any]:
    _require_admin(call)
    p = call.params
    rule_id = _id(p)
    view = await call.services.rules.update(
        rule_id,
        user=call.caller.username,
        expression=await _expression(p, required=False),
        languages=_languages(p, required=False),
        action=_action(p, required=False),
        description=_description(p),
    )
    await _record(call, "update_dangerous_rule", view)
    return view


async def delete_dangerous_rule(call: Call) -> None:
    _require_admin(call)
    view = await call.services.rules.delete(_id(call.params))
    await _record(call, "delete_dangerous_rule", view)


async def _set_status(call: Call, status: RuleStatus, action: str) -> dict[str, Any]:
    _require_admin(call)
    view = await call.services.rules.update(
        _id(call.params), user=call.caller.username, status=int(status)
    )
    await _record(call, action, view)
    return {"id": view["id"], "status": view["status"]}


async def enable_dangerous_rule(call: Call) -> dict[str, Any]:
    return await _set_status(call, RuleStatus.ENABLED, "enable_dangerous_rule")


async def disable_dangerous_rule(call: Call) -> dict[str, Any]:
    return await _set_status(call, RuleStatus.DISABLED, "disable_dangerous_rule")


def check_language_and_content(p: dict[str, Any]) -> tuple[int, str]:
    """``script_language`` and the script of a check, from its base64 ``content``."""
    language = get_int(p, "script_language", required=True)
    if language not in LANGUAGES:
        raise JobError.invalid(
            "script_language", "1 shell, 2 bat, 3 perl, 4 python, 5 powershell, 6 sql"
        )
    assert language is not None
    raw = get_str(p, "content", required=True)
    assert raw is not None
    # any encoding: the check matches its text view, as a launch does
    return language, decode_base64_script(raw, "content", MAX_SCRIPT_BYTES)


async def check_script(call: Call) -> list[dict[str, Any]]:
    language, content = check_language_and_content(call.params)
    findings = await call.services.rules.check(content, language)
    return [f.view() for f in findings]


def register(router: APIRouter) -> None:
    # bk-job serves the list on POST; GET works too, as for every query here
    add_api(router, "get_dangerous_rule_list", get_dangerous_rule_list, query=True)
    add_api(router, "check_script", check_script, query=False)
    for handler in (
        create_dangerous_rule,
        update_dangerous_rule,
        delete_dangerous_rule,
        enable_dangerous_rule,
        disable_dangerous_rule,
    ):
        add_api(router, handler.__name__, handler, query=False)
