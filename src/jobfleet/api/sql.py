"""bk-job v3 fast_execute_sql: SQL run on target hosts through a database account."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jobfleet.api.auditing import audit
from jobfleet.api.execute import check_callback_url
from jobfleet.api.params import get_bool, get_int, get_str
from jobfleet.api.routing import Call, add_api
from jobfleet.domain.errors import JobError
from jobfleet.domain.scripts import (
    MAX_SCRIPT_BYTES,
    MAX_TASK_NAME,
    check_timeout,
    decode_base64_script,
)
from jobfleet.domain.status import ScriptLanguage
from jobfleet.domain.targets import parse_target
from jobfleet.engine.sql_submit import fast_sql


async def _sql(call: Call, biz_ids: set[int]) -> tuple[str, dict[str, Any]]:
    """The statements to run: a stored SQL script (by version or script id) or the
    base64 ``script_content``."""
    p = call.params
    version_id = get_int(p, "script_version_id", minimum=1, maximum=2**63 - 1)
    script_id = get_str(p, "script_id")
    if version_id is not None or script_id:
        found = await call.services.scripts.resolve_version(
            bk_biz_ids=biz_ids, script_id=script_id, script_version_id=version_id
        )
        if found.language != ScriptLanguage.SQL:
            raise JobError.invalid("script_id", "the script is not an SQL script")
        return found.content, {"script_id": found.script_id, "script_version_id": found.version_id}
    content = get_str(p, "script_content")
    if content is None:
        raise JobError.missing("script_version_id|script_id|script_content")
    # the SQL reaches the client as sent, whatever its encoding (a GBK dump)
    sql = decode_base64_script(content, "script_content", MAX_SCRIPT_BYTES)
    if not sql.strip():
        raise JobError.missing("script_content")
    if "\x00" in sql:
        raise JobError.invalid("script_content", "the decoded SQL contains NUL bytes")
    return sql, {}


async def fast_execute_sql(call: Call) -> dict[str, Any]:
    p = call.params
    scope = await call.scope("quick_execute_script")
    sql, stored = await _sql(call, {scope.bk_biz_id})
    db_account_id = get_int(p, "db_account_id", required=True, minimum=1, maximum=2**63 - 1)
    assert db_account_id is not None
    await call.services.rules.enforce(sql, ScriptLanguage.SQL)
    timeout = check_timeout(get_int(p, "timeout"), call.services.engine.settings.max_timeout)
    name = get_str(p, "task_name", max_length=MAX_TASK_NAME)
    spec = parse_target(p.get("target_server"))
    hosts = await call.services.submitter.resolve_hosts(spec, scope)
    job_id, job_name, step_id = await fast_sql(
        call.services.submitter,
        scope,
        name=name,
        sql=sql,
        db_account_id=db_account_id,
        timeout=timeout,
        hosts=hosts,
        callback_url=check_callback_url(get_str(p, "callback_url")),
        start=get_bool(p, "start_task", True),
        operator=call.caller.username,
        app_code=call.caller.app_code,
    )
    await audit(
        call,
        "fast_execute_sql",
        "job_instance",
        job_id,
        scope=scope,
        detail={"hosts": len(hosts), "db_account_id": db_account_id, **stored},
    )
    return {"job_instance_id": job_id, "job_instance_name": job_name, "step_instance_id": step_id}


def register(router: APIRouter) -> None:
    add_api(router, "fast_execute_sql", fast_execute_sql, query=False)
