"""bk-job v3 execution calls: fast_execute_script and operate_job_instance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jobfleet.api.auditing import audit
from jobfleet.api.params import get_bool, get_int, get_str, positive_id
from jobfleet.api.routing import Call, add_api
from jobfleet.api.scope import named_business
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.rolling import parse_rolling
from jobfleet.domain.scripts import (
    MAX_PARAM_BYTES,
    MAX_SCRIPT_BYTES,
    MAX_SENSITIVE_PARAM_BYTES,
    MAX_TASK_NAME,
    check_language,
    check_script_nul,
    check_timeout,
    decode_base64,
    decode_base64_script,
    read_script,
    split_params,
)
from jobfleet.domain.status import FINISHED_RUN_STATUSES, JobOperation, RunStatus, ScriptLanguage
from jobfleet.domain.targets import parse_target
from jobfleet.domain.urls import url_problem
from jobfleet.engine.submit import Scope, ScriptRequest

# the column that keeps it (and the outbox's target) holds this many characters
MAX_CALLBACK_URL = 1024


def check_callback_url(value: str | None) -> str | None:
    if not value:
        return None
    if len(value) > MAX_CALLBACK_URL:
        raise JobError(
            ErrorCode.BAD_REQUEST,
            f"callback_url is longer than {MAX_CALLBACK_URL} characters",
        )
    problem = url_problem(value)
    if problem:
        raise JobError(ErrorCode.BAD_REQUEST, f"callback_url {problem}")
    return value


async def fast_execute_script(call: Call) -> dict[str, Any]:
    p = call.params
    scope = await call.scope("quick_execute_script")
    # a stored script wins over script_content; it brings its own language
    version_id = get_int(p, "script_version_id", minimum=1, maximum=2**63 - 1)
    script_id = get_str(p, "script_id")
    stored: dict[str, Any] = {}
    if version_id is not None or script_id:
        found = await call.services.scripts.resolve_version(
            bk_biz_ids={scope.bk_biz_id}, script_id=script_id, script_version_id=version_id
        )
        script, language = read_script(found.content), ScriptLanguage(found.language)
        if language == ScriptLanguage.SQL:
            raise JobError.invalid("script_id", "an SQL script runs through fast_execute_sql")
        stored = {"script_id": found.script_id, "script_version_id": found.version_id}
    else:
        content = get_str(p, "script_content")
        if content is None:
            raise JobError.missing("script_version_id|script_id|script_content")
        language = check_language(get_int(p, "script_language"))
        # any encoding runs as sent (a GBK .bat, a Latin-1 shell script), read once for
        # the NUL check, the rules and the job
        sent = decode_base64_script(content, "script_content", MAX_SCRIPT_BYTES)
        if not sent.strip():
            raise JobError.missing("script_content")
        script = read_script(sent)
        # stored as text with the job: PostgreSQL holds no NUL (create_script refuses it too)
        check_script_nul(script, "script_content")
    await call.services.rules.enforce(script, language)
    sensitive = get_int(p, "is_param_sensitive", default=0) == 1
    raw_param = get_str(p, "script_param")
    param = ""
    if raw_param:
        limit = MAX_SENSITIVE_PARAM_BYTES if sensitive else MAX_PARAM_BYTES
        param = decode_base64(raw_param, "script_param", limit)
        if "\x00" in param:
            raise JobError.invalid("script_param", "the decoded parameters contain NUL bytes")
        split_params(param)  # refuse unbalanced quotes now, not on every host
    timeout = check_timeout(get_int(p, "timeout"), call.services.engine.settings.max_timeout)
    name = get_str(p, "task_name", max_length=MAX_TASK_NAME)
    spec = parse_target(p.get("target_server"))
    account = await call.services.submitter.resolve_account(
        scope, get_int(p, "account_id"), get_str(p, "account_alias")
    )
    hosts = await call.services.submitter.resolve_hosts(spec, scope)
    callback = check_callback_url(get_str(p, "callback_url"))
    job_id, job_name, step_id = await call.services.submitter.fast_script(
        scope,
        ScriptRequest(
            name=name,
            script=script,
            language=language,
            param=param,
            sensitive=sensitive,
            timeout=timeout,
            account=account,
            hosts=hosts,
            callback_url=callback,
            start=get_bool(p, "start_task", True),
            operator=call.caller.username,
            app_code=call.caller.app_code,
            rolling=parse_rolling(p.get("rolling_config"), len(hosts)),
        ),
    )
    await audit(
        call,
        "fast_execute_script",
        "job_instance",
        job_id,
        scope=scope,
        detail={"hosts": len(hosts), "language": int(language), "account": account.alias, **stored},
    )
    return {"job_instance_id": job_id, "job_instance_name": job_name, "step_instance_id": step_id}


async def job_in_scope(call: Call, action: str, bad_id: ErrorCode | None = None) -> Any:
    """``bad_id``: the code of the route's own check of ``job_instance_id`` in bk-job,
    where it has one (``positive_id``)."""
    job, _ = await _read_in_scope(call, action, bad_id, steps=False)
    return job


async def job_and_steps_in_scope(
    call: Call, action: str, bad_id: ErrorCode | None = None
) -> tuple[Any, list[Any]]:
    """:func:`job_in_scope` and the job's steps, read together."""
    return await _read_in_scope(call, action, bad_id, steps=True)


async def _read_in_scope(
    call: Call, action: str, bad_id: ErrorCode | None, *, steps: bool
) -> tuple[Any, list[Any]]:
    """The job is read before the scope is checked: found in the business the request
    names, it proves that business exists, which was all the check asked the store for,
    so a status poll opens one connection, not two. Only a caller whose user and app may
    see that business takes this way: for any other the job is never read, so neither
    the answer nor the work done for it tells whether the job is in that business. Any
    other case (no such job, a job of another scope, a business set, a malformed id)
    takes the whole check first, as before, so that every refusal keeps its code, its
    message and its order."""
    business = named_business(call.params)
    job_id = _job_id_or_none(call, bad_id) if business is not None else None
    if (
        business is None
        or job_id is None
        or not call.caller.holds(business.scope_type, business.scope_id, business.biz_ids)
    ):
        scope, job_id = await _scoped_job_id(call, action, bad_id)
        job, job_steps = await _read(call, job_id, steps)
        return _job_of(scope, job_id, job), job_steps
    job, job_steps = await _read(call, job_id, steps)
    if _in_scope(business, job):
        return job, job_steps
    return _job_of(await call.scope(action), job_id, job), job_steps


async def _read(call: Call, job_id: int, steps: bool) -> tuple[Any, list[Any]]:
    jobs = call.services.jobs
    return await jobs.job_and_steps(job_id) if steps else (await jobs.job(job_id), [])


def _job_id_or_none(call: Call, bad_id: ErrorCode | None) -> int | None:
    """The job id :func:`_scoped_job_id` takes, None where it would refuse it."""
    try:
        return _job_id(call, bad_id)
    except JobError:
        return None


async def _scoped_job_id(call: Call, action: str, bad_id: ErrorCode | None) -> tuple[Scope, int]:
    scope = await call.scope(action)
    return scope, _job_id(call, bad_id)


def _job_id(call: Call, bad_id: ErrorCode | None) -> int:
    if bad_id is not None:
        positive_id(call.params, "job_instance_id", bad_id)
    job_id = get_int(call.params, "job_instance_id", required=True, minimum=1)
    assert job_id is not None
    return job_id


def _in_scope(scope: Scope, job: Any) -> bool:
    return job is not None and job.scope_type == scope.scope_type and job.scope_id == scope.scope_id


def _job_of(scope: Scope, job_id: int, job: Any) -> Any:
    if not _in_scope(scope, job):
        raise JobError(
            ErrorCode.JOB_INSTANCE_NOT_EXIST,
            f"Job instance {job_id} does not exist (or its history was purged)",
        )
    return job


def _not_startable(job_id: int, job: Any) -> JobError:
    """Why a start did not apply: a job terminated while it waited never ran, so it is
    not "already started" (bk-job's answer to a repeated start)."""
    if job is not None and job.status == RunStatus.TERMINATED and not job.start_time:
        return JobError(
            ErrorCode.UNSUPPORTED_OPERATION,
            f"Job instance {job_id} was terminated before it started",
        )
    return JobError(ErrorCode.JOB_ALREADY_STARTED, f"Job instance {job_id} already started")


async def operate_job_instance(call: Call) -> dict[str, Any]:
    job = await job_in_scope(call, "execute_job", ErrorCode.INVALID_PARAM)
    code = get_int(call.params, "operation_code")
    if code is None:
        raise JobError(ErrorCode.INVALID_PARAM, "Invalid parameters: operation_code is missing")
    engine = call.services.engine
    if code == JobOperation.TERMINATE:
        if job.status in FINISHED_RUN_STATUSES:
            raise JobError(
                ErrorCode.UNSUPPORTED_OPERATION, f"Job instance {job.id} has already finished"
            )
        if job.status == RunStatus.STOPPING:
            raise JobError(
                ErrorCode.TASK_ALREADY_TERMINATING, f"Job instance {job.id} is already terminating"
            )
        await engine.terminate(job.id)
    elif code == JobOperation.START:
        if not await engine.start_job(job.id):
            raise _not_startable(job.id, await call.services.jobs.job(job.id))
    else:
        raise JobError(ErrorCode.INVALID_PARAM, f"Unknown operation_code {code}")
    await audit(
        call,
        f"operate_job_instance:{code}",
        "job_instance",
        job.id,
        scope=job,
    )
    return {"job_instance_id": job.id, "job_instance_name": None, "step_instance_id": None}


def register(router: APIRouter) -> None:
    add_api(router, "fast_execute_script", fast_execute_script, query=False)
    add_api(router, "operate_job_instance", operate_job_instance, query=False)
