"""``POST /api/jobfleet/v1/dangerous-rules/check``: bk-job's ``check_script``, with
what each finding would do to a launch (the rule's id and its action, 1 warn or
2 block) and whether the script would be refused; the console's "try it" box."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jobfleet.api.routing import OWN_PREFIX, Call, make_endpoint, services_of
from jobfleet.api.rules import check_language_and_content
from jobfleet.domain.dangerous import RuleAction, blocking


async def try_script(call: Call) -> dict[str, Any]:
    language, content = check_language_and_content(call.params)
    findings = await call.services.rules.check(content, language)
    return {
        "blocked": blocking(findings) is not None,
        "findings": [
            {**f.view(), "rule_id": f.rule.id, "action": int(f.rule.action)} for f in findings
        ],
        "actions": {int(a): a.name for a in RuleAction},
    }


def register(router: APIRouter) -> None:
    router.add_api_route(
        OWN_PREFIX + "/dangerous-rules/check",
        make_endpoint(services_of, try_script),
        methods=["POST"],
        name="POST dangerous-rules check",
    )
