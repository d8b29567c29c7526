"""bk-job v3 queries: job status, per-host logs, job history."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter
from sqlalchemy import Row

from jobfleet.api.auditing import audit_log_read
from jobfleet.api.execute import job_and_steps_in_scope, job_in_scope
from jobfleet.api.params import get_bool, get_int, get_list, get_str, need_int, positive_id
from jobfleet.api.routing import Call, add_api
from jobfleet.api.transfer import file_log_view, file_logs_for
from jobfleet.api.views import host_result_views, job_view, list_item, step_view
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.host_addresses import first_by_address
from jobfleet.domain.paths import host_source_files
from jobfleet.domain.status import FINISHED_RUN_STATUSES, LogType, StepType
from jobfleet.domain.targets import normalize_ip
from jobfleet.store.filelogs import DOWNLOAD, UPLOAD
from jobfleet.store.inventory import Host

MAX_LOG_HOSTS = 500
MAX_SPAN_MS = 30 * 24 * 3600 * 1000
VIEW = "view_history"


def host_view(host: Host) -> dict[str, Any]:
    return {
        "bk_host_id": host.bk_host_id,
        "bk_cloud_id": host.bk_cloud_id,
        "ip": host.ip,
        "ipv6": host.ipv6 or None,
    }


async def get_job_instance_status(call: Call) -> dict[str, Any]:
    job, steps = await job_and_steps_in_scope(call, VIEW, ErrorCode.MISSING_OR_INVALID_PARAM)
    step_list = [step_view(s) for s in steps]
    if get_bool(call.params, "return_ip_result", False):
        hosts = await call.services.jobs.hosts_of_steps(steps, results_only=True)
        for item, step in zip(step_list, steps, strict=True):
            item["step_ip_result_list"] = host_result_views(hosts[step.id])
    return {
        "finished": job.status in FINISHED_RUN_STATUSES,
        "job_instance": job_view(job),
        "step_instance_list": step_list,
    }


async def step_of(
    call: Call, job: Row[Any], unknown: ErrorCode = ErrorCode.STEP_INSTANCE_NOT_EXIST
) -> Row[Any]:
    """``unknown``: the code for a step the job does not have (bk-job's log queries
    answer 1244006, its step queries 1244007)."""
    step_id = need_int(call.params, "step_instance_id", minimum=1)
    step = await call.services.jobs.step(step_id)
    if step is None or step.job_instance_id != job.id:
        raise JobError(
            unknown,
            f"Step instance {step_id} does not exist in job instance {job.id}",
        )
    return step


def execute_count_of(call: Call, step: Row[Any]) -> int:
    count = get_int(call.params, "execute_count", minimum=0, maximum=step.execute_count)
    return step.execute_count if count is None else count


async def file_step_hosts(
    call: Call, step: Row[Any], count: int, candidates: Iterable[int]
) -> set[int]:
    """Of ``candidates``, the hosts a file step touched: its targets and its source
    hosts, nothing else (only the candidates' rows are read)."""
    wanted = set(candidates)
    jobs = call.services.jobs
    ids = {r.bk_host_id for r in await jobs.hosts(step.id, count, host_ids=list(wanted))}
    return ids | (wanted & host_source_files(step.config).keys())


def _no_host() -> JobError:
    return JobError(
        ErrorCode.MISSING_OR_INVALID_PARAM,
        "Missing or invalid parameter [host_id/(bk_cloud_id+ip)]",
    )


def _asked_host(p: dict[str, Any], host_id: int | None) -> dict[str, Any]:
    """The host a log query named, as it named it (the step knows no more of it)."""
    ip = p.get("ip") if host_id is None else None
    return {
        "bk_host_id": host_id,
        "bk_cloud_id": get_int(p, "bk_cloud_id", default=0) if ip else None,
        "ip": normalize_ip(ip) if ip else None,
        "ipv6": None,
    }


async def _with_uploads(
    call: Call, step: Row[Any], count: int, item: dict[str, Any]
) -> dict[str, Any]:
    """bk-job's one-host file log: the host's own rows, then every source host's uploads
    (whichever host was asked for). A fetch's uploads are the hosts' own."""
    sources = set(host_source_files(step.config))
    if not sources or (step.config or {}).get("direction") == "fetch":
        return item
    asked = item.get("bk_host_id")
    own = [f for f in item["file_logs"] if f["mode"] == DOWNLOAD or asked not in sources]
    rows = await call.services.file_logs.rows(step.id, count, host_ids=sorted(sources), mode=UPLOAD)
    return {**item, "file_logs": own + [file_log_view(r, {}) for r in rows]}


async def get_job_instance_ip_log(call: Call) -> dict[str, Any]:
    job = await job_in_scope(call, VIEW)
    step = await step_of(call, job, ErrorCode.JOB_INSTANCE_NOT_EXIST)
    count = execute_count_of(call, step)
    p = call.params
    host_id = get_int(p, "bk_host_id") or get_int(p, "host_id")
    jobs = call.services.jobs
    if step.type == StepType.FILE:
        if host_id is not None:
            found = await call.services.inventory.by_ids([host_id])
        elif p.get("ip"):
            pair = (get_int(p, "bk_cloud_id", default=0) or 0, normalize_ip(p["ip"]))
            named = first_by_address(await call.services.inventory.by_ips([pair]))
            found = [named[pair]] if pair in named else []
        else:
            raise _no_host()
        # the inventory knows every business's hosts: answer only for this step's
        allowed = await file_step_hosts(call, step, count, (h.bk_host_id for h in found))
        found = [h for h in found if h.bk_host_id in allowed]
        if found:
            item = (await file_logs_for(call, step, count, [host_view(found[0])]))[0]
        else:
            item = {**_asked_host(p, host_id), "file_logs": []}
        await audit_log_read(call, job, step.id, 1)
        return {"log_type": int(LogType.FILE), **await _with_uploads(call, step, count, item)}
    if host_id is not None:
        rows = await jobs.hosts(step.id, count, host_ids=[host_id])
    else:
        ip = p.get("ip")
        if not ip:
            raise _no_host()
        cloud = get_int(p, "bk_cloud_id", default=0) or 0
        rows = await jobs.hosts_at(step.id, count, [(cloud, normalize_ip(ip))])
    if not rows:
        # bk-job does not check that the host belongs to the step: a host that has no
        # log there has an empty one
        return {"log_type": int(LogType.SCRIPT), **_asked_host(p, host_id), "log_content": None}
    row = rows[0]
    logs = await jobs.logs(step.id, count, [row.bk_host_id])
    await audit_log_read(call, job, step.id, 1)
    return {
        "log_type": int(LogType.SCRIPT),
        "bk_host_id": row.bk_host_id,
        "bk_cloud_id": row.bk_cloud_id,
        "ip": row.ip,
        "ipv6": row.ipv6 or None,
        "log_content": logs[row.bk_host_id],
    }


async def batch_get_job_instance_ip_log(call: Call) -> dict[str, Any]:
    """bk-job's batch log query, with bk-job's limit of hosts per call."""
    return await batch_logs(call, MAX_LOG_HOSTS)


async def batch_logs(call: Call, max_hosts: int) -> dict[str, Any]:
    """The logs of the hosts in ``host_id_list`` and ``ip_list`` (at most ``max_hosts``);
    only those hosts' rows are read."""
    job = await job_in_scope(call, VIEW)
    step = await step_of(call, job, ErrorCode.JOB_INSTANCE_NOT_EXIST)
    count = execute_count_of(call, step)
    p = call.params
    wanted_ids: list[int] = []
    for value in get_list(p, "host_id_list"):
        try:
            wanted_ids.append(int(value))
        except (TypeError, ValueError):
            raise JobError.invalid("host_id_list") from None
    wanted_ips: list[tuple[int, str]] = []
    for item in get_list(p, "ip_list"):
        if not isinstance(item, dict) or not item.get("ip"):
            raise JobError.invalid("ip_list")
        try:
            cloud = int(item.get("bk_cloud_id") or 0)
        except (TypeError, ValueError):
            raise JobError.invalid("ip_list.bk_cloud_id") from None
        wanted_ips.append((cloud, normalize_ip(item["ip"])))
    if not wanted_ids and not wanted_ips:
        raise JobError(
            ErrorCode.MISSING_OR_INVALID_PARAM,
            "Missing or invalid parameter [host_id_list/ip_list]",
        )
    if len(set(wanted_ids)) + len(set(wanted_ips)) > max_hosts:
        raise JobError(
            ErrorCode.MISSING_OR_INVALID_PARAM,
            f"At most {max_hosts} hosts per query (host_id_list + ip_list)",
        )
    if step.type == StepType.FILE:
        # source hosts are not targets of the step, so hosts come from the inventory
        inventory = call.services.inventory
        found = {h.bk_host_id: h for h in await inventory.by_ids(wanted_ids)}
        named = first_by_address(await inventory.by_ips(wanted_ips))
        for pair in wanted_ips:
            if pair in named:
                found.setdefault(named[pair].bk_host_id, named[pair])
        allowed = await file_step_hosts(call, step, count, found)
        found = {i: h for i, h in found.items() if i in allowed}
        file_logs = await file_logs_for(call, step, count, [host_view(h) for h in found.values()])
        await audit_log_read(call, job, step.id, len(found))
        return {
            "job_instance_id": job.id,
            "step_instance_id": step.id,
            "log_type": int(LogType.FILE),
            "file_task_logs": file_logs,
        }
    jobs = call.services.jobs
    by_id = {r.bk_host_id: r for r in await jobs.hosts(step.id, count, host_ids=wanted_ids)}
    by_ip = first_by_address(await jobs.hosts_at(step.id, count, wanted_ips) if wanted_ips else [])
    picked: dict[int, Row[Any]] = {}
    unknown: list[dict[str, Any]] = []
    for host_id in wanted_ids:
        if host_id in by_id:
            picked.setdefault(host_id, by_id[host_id])
        else:
            unknown.append(
                {
                    "host_id": host_id,
                    "bk_host_id": host_id,
                    "bk_cloud_id": None,
                    "ip": None,
                    "ipv6": None,
                    "log_content": "",
                }
            )
    for pair in wanted_ips:
        row = by_ip.get(pair)
        if row is not None:
            picked.setdefault(row.bk_host_id, row)
        else:
            unknown.append(
                {
                    "host_id": None,
                    "bk_host_id": None,
                    "bk_cloud_id": pair[0],
                    "ip": pair[1],
                    "ipv6": None,
                    "log_content": "",
                }
            )
    logs = await jobs.logs(step.id, count, list(picked))
    await audit_log_read(call, job, step.id, len(picked))
    items = [
        {
            "host_id": r.bk_host_id,
            "bk_host_id": r.bk_host_id,
            "bk_cloud_id": r.bk_cloud_id,
            "ip": r.ip,
            "ipv6": r.ipv6 or None,
            "log_content": logs[r.bk_host_id],
        }
        for r in picked.values()
    ]
    return {
        "job_instance_id": job.id,
        "step_instance_id": step.id,
        "log_type": int(LogType.SCRIPT),
        "script_task_logs": items + unknown,
    }


async def get_job_instance_list(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW)
    p = call.params
    # bk-job answers a missing bound and one below 1 alike
    start_ms = positive_id(p, "create_time_start", ErrorCode.MISSING_OR_INVALID_PARAM)
    end_ms = positive_id(p, "create_time_end", ErrorCode.MISSING_OR_INVALID_PARAM)
    if end_ms <= start_ms:
        raise JobError(
            ErrorCode.MISSING_OR_INVALID_PARAM,
            "Missing or invalid parameter [create_time_start|create_time_end]: "
            "create_time_end must be after create_time_start",
        )
    if end_ms - start_ms > MAX_SPAN_MS:
        raise JobError(ErrorCode.INVALID_PARAM, "The create time range may span at most 30 days")
    offset = get_int(p, "start", default=0, minimum=0) or 0
    length = get_int(p, "length", default=20, minimum=1, maximum=1000) or 20
    filters = {
        "job_instance_id": get_int(p, "job_instance_id"),
        "job_cron_id": get_int(p, "job_cron_id"),
        "operator": get_str(p, "operator"),
        "name": get_str(p, "name"),
        "launch_mode": get_int(p, "launch_mode"),
        "type": get_int(p, "type"),
        "status": get_int(p, "status"),
        "ip": normalize_ip(p["ip"]) if p.get("ip") else None,
    }
    total, rows = await call.services.jobs.list_jobs(
        scope_type=scope.scope_type,
        scope_id=scope.scope_id,
        start_ms=start_ms,
        end_ms=end_ms,
        filters=filters,
        offset=offset,
        limit=length,
    )
    return {"start": offset, "length": length, "total": total, "data": [list_item(r) for r in rows]}


def register(router: APIRouter) -> None:
    add_api(router, "get_job_instance_status", get_job_instance_status, query=True)
    add_api(router, "get_job_instance_ip_log", get_job_instance_ip_log, query=True)
    add_api(router, "batch_get_job_instance_ip_log", batch_get_job_instance_ip_log, query=True)
    add_api(router, "get_job_instance_list", get_job_instance_list, query=True)
