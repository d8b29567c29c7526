"""bk-job v3 plan execution: execute_job_plan, operate_step_instance, variable values."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jobfleet.api.auditing import audit
from jobfleet.api.execute import check_callback_url, job_in_scope
from jobfleet.api.params import get_bool, get_int, get_list, get_str, positive_id
from jobfleet.api.routing import Call, add_api
from jobfleet.domain.approvals import approvers
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.plans import APPROVE_ALL, ROLE_LAUNCHER
from jobfleet.domain.status import (
    FINISHED_RUN_STATUSES,
    LaunchMode,
    RunStatus,
    StepOperation,
    StepType,
)
from jobfleet.engine.variables import public_values
from jobfleet.store.database import now_ms

# step operations of rolling execution and retries
LATER_OPERATIONS = {
    StepOperation.RETRY_FAIL_IP,
    StepOperation.IGNORE_ERROR,
    StepOperation.RETRY_ALL_IP,
    StepOperation.NEXT_STEP,
    StepOperation.SKIP,
    StepOperation.ROLLING_CONTINUE,
}


async def execute_job_plan(call: Call) -> dict[str, Any]:
    p = call.params
    scope = await call.scope("launch_job_plan")
    plan_id = positive_id(p, "job_plan_id", ErrorCode.INVALID_PARAM_WITH_NAME)
    job_id, name = await call.services.plans.launch(
        plan_id=plan_id,
        scope=scope,
        overrides=get_list(p, "global_var_list"),
        launch_mode=LaunchMode.API,
        operator=call.caller.username,
        app_code=call.caller.app_code,
        callback_url=check_callback_url(get_str(p, "callback_url")),
        start=get_bool(p, "start_task", True),
    )
    await audit(
        call,
        "execute_job_plan",
        "job_instance",
        job_id,
        scope=scope,
        detail={"job_plan_id": plan_id},
    )
    # bk-job's answer names no step for a plan: its step_instance_id is null
    return {"job_instance_id": job_id, "job_instance_name": name, "step_instance_id": None}


def _may_confirm(call: Call, job: Any, info: dict[str, Any]) -> bool:
    users = info.get("approval_user") or {}
    user = call.caller.username
    if user in (users.get("user_list") or []):
        return True
    return ROLE_LAUNCHER in (users.get("role_list") or []) and user == job.operator


def _approvers(job: Any, info: dict[str, Any]) -> set[str]:
    return set(approvers(job.operator, {"approval_info": info}))


async def operate_step_instance(call: Call) -> dict[str, Any]:
    p = call.params
    job = await job_in_scope(call, "execute_job", ErrorCode.INVALID_PARAM)
    step_id = positive_id(p, "step_instance_id", ErrorCode.INVALID_PARAM)
    code = get_int(p, "operation_code")
    if code is None:
        raise JobError(ErrorCode.INVALID_PARAM, "Invalid parameters: operation_code is missing")
    jobs = call.services.jobs
    step = await jobs.step(step_id)
    if step is None or step.job_instance_id != job.id:
        raise JobError(ErrorCode.STEP_INSTANCE_NOT_EXIST, f"Step instance {step_id} does not exist")
    try:
        operation = StepOperation(code)
    except ValueError:
        raise JobError(ErrorCode.INVALID_PARAM, f"Unknown operation_code {code}") from None
    if operation in LATER_OPERATIONS:
        await _operate_execution(call, job, step, operation)
        await audit(
            call,
            f"operate_step_instance:{code}",
            "job_instance",
            job.id,
            scope=job,
            detail={"step_instance_id": step.id},
        )
        return {"job_instance_id": job.id, "step_instance_id": step.id}
    if step.type != StepType.MANUAL_CONFIRM:
        raise JobError(
            ErrorCode.UNSUPPORTED_OPERATION,
            f"operation_code {code} applies to manual confirmation steps only",
        )
    if step.status != RunStatus.WAITING_USER:
        raise JobError(
            ErrorCode.UNSUPPORTED_OPERATION,
            f"Step instance {step_id} is not waiting for confirmation (status {step.status})",
        )
    config = dict(step.config or {})
    info = config.get("approval_info") or {}
    if not _may_confirm(call, job, info):
        raise JobError(
            ErrorCode.NOT_IN_CONFIRM_USERS,
            f"User {call.caller.username!r} is not among the users who may confirm this step",
        )
    reason = get_str(p, "confirm_reason", max_length=1024) or ""
    now = now_ms()
    started = step.start_time or now
    waiting = int(RunStatus.WAITING_USER)
    if operation == StepOperation.CONFIRM_CONTINUE:

        def confirm(current: Any) -> dict[str, Any]:
            # from the step as it is now: another approver may have confirmed meanwhile
            fresh = dict(current.config or {})
            confirmed = [*(fresh.get("confirmed_by") or []), call.caller.username]
            fresh["confirmed_by"] = list(dict.fromkeys(confirmed))
            fresh["confirm_reason"] = reason
            values: dict[str, Any] = {"config": fresh}
            if info.get("approval_type") != APPROVE_ALL or _approvers(job, info) <= set(
                fresh["confirmed_by"]
            ):
                values.update(status=int(RunStatus.SUCCESS), end_time=now, total_time=now - started)
            return values

        changed = await jobs.change_step_if(step.id, waiting, confirm)
    elif operation == StepOperation.CONFIRM_TERMINATE:

        def terminate(current: Any) -> dict[str, Any]:
            fresh = dict(current.config or {})
            fresh["terminated_by"] = call.caller.username
            fresh["confirm_reason"] = reason
            return {
                "status": int(RunStatus.CONFIRM_TERMINATED),
                "end_time": now,
                "total_time": now - started,
                "config": fresh,
            }

        changed = await jobs.change_step_if(step.id, waiting, terminate)
    elif operation == StepOperation.CONFIRM_RESTART:

        def renotify(current: Any) -> dict[str, Any]:
            fresh = dict(current.config or {})
            fresh["notified"] = int(fresh.get("notified") or 0) + 1
            return {"config": fresh}

        changed = await jobs.change_step_if(step.id, waiting, renotify)
        if changed:
            call.services.engine.confirm_waiting(job, await jobs.step(step.id))
    else:
        raise JobError(ErrorCode.INVALID_PARAM, f"Unknown operation_code {code}")
    if not changed:
        raise JobError(
            ErrorCode.UNSUPPORTED_OPERATION,
            f"Step instance {step_id} is no longer waiting for confirmation",
        )
    call.services.engine.wake_step(step.id)
    await audit(
        call,
        f"operate_step_instance:{code}",
        "job_instance",
        job.id,
        scope=job,
        detail={"step_instance_id": step.id, "reason": reason},
    )
    return {"job_instance_id": job.id, "step_instance_id": step.id}


def _refuse(step: Any, what: str) -> JobError:
    return JobError(
        ErrorCode.UNSUPPORTED_OPERATION,
        f"Step instance {step.id} {what} (status {step.status})",
    )


async def _operate_execution(call: Call, job: Any, step: Any, operation: StepOperation) -> None:
    """Retries, skips and rolling of script, file and SQL steps."""
    engine = call.services.engine
    if step.type not in (StepType.SCRIPT, StepType.FILE, StepType.SQL):
        raise JobError(
            ErrorCode.UNSUPPORTED_OPERATION,
            f"operation_code {int(operation)} applies to script, file and SQL steps only",
        )
    status = RunStatus(step.status)
    if operation == StepOperation.ROLLING_CONTINUE:
        if not step.rolling_config or status != RunStatus.WAITING_USER:
            raise _refuse(step, "is not waiting to roll on to its next batch")
        if not await call.services.jobs.update_step_if(
            step.id, int(RunStatus.WAITING_USER), status=int(RunStatus.RUNNING)
        ):
            raise _refuse(step, "is no longer waiting")
        engine.wake_step(step.id)
        return
    if operation == StepOperation.SKIP:
        if status != RunStatus.STOPPING:
            raise _refuse(step, "is not being terminated")
        if not await engine.force_stop(step.id):
            raise _refuse(step, "is not waiting for hosts to confirm its termination")
        return
    if RunStatus(job.status) not in FINISHED_RUN_STATUSES:
        raise JobError(
            ErrorCode.UNSUPPORTED_OPERATION,
            f"Job instance {job.id} is still running (status {job.status})",
        )
    if operation in (StepOperation.RETRY_FAIL_IP, StepOperation.RETRY_ALL_IP):
        if status not in (RunStatus.FAIL, RunStatus.STOP_SUCCESS, RunStatus.ABNORMAL_STATE):
            raise _refuse(step, "did not fail or stop, so there is nothing to retry")
        failed_only = operation == StepOperation.RETRY_FAIL_IP
        if not await engine.retry_step(step, failed_only=failed_only):
            raise _refuse(step, "changed while the retry was being set up")
    elif operation == StepOperation.IGNORE_ERROR:
        if status != RunStatus.FAIL:
            raise _refuse(step, "did not fail")
        if not await engine.continue_after(step, RunStatus.IGNORE_ERROR):
            raise _refuse(step, "changed meanwhile")
    elif operation == StepOperation.NEXT_STEP:
        if status != RunStatus.STOP_SUCCESS:
            raise _refuse(step, "was not terminated")
        if not await engine.continue_after(step, RunStatus.SKIPPED):
            raise _refuse(step, "changed meanwhile")


async def get_job_instance_global_var_value(call: Call) -> dict[str, Any]:
    job = await job_in_scope(call, "view_history", ErrorCode.MISSING_OR_INVALID_PARAM)
    out: list[dict[str, Any]] = []
    # a job without variables (a fast_* call) still lists its steps, so that a client
    # reading the last entry (bk-sops does) finds one
    current = job.variables or []
    for step in await call.services.jobs.steps(job.id):
        if step.variables is not None:
            current = step.variables
        if step.type == StepType.MANUAL_CONFIRM:
            continue
        out.append({"step_instance_id": step.id, "global_var_list": public_values(current)})
    return {"job_instance_id": job.id, "step_instance_var_list": out}


def register(router: APIRouter) -> None:
    add_api(router, "execute_job_plan", execute_job_plan, query=False)
    add_api(router, "operate_step_instance", operate_step_instance, query=False)
    add_api(
        router, "get_job_instance_global_var_value", get_job_instance_global_var_value, query=True
    )
