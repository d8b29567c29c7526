"""The I/O-free steps of run-and-wait: build the request, read progress, assemble results."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from jobfleet.domain.status import FINISHED_RUN_STATUSES, HostStatus, RunStatus
from jobfleet.sdk._errors import JobApiError
from jobfleet.sdk._models import ExecutionResult, HostResult, JobProgress

# bk-job refuses more hosts than this in one batch_get_job_instance_ip_log
LOG_BATCH_SIZE = 500
# consecutive failed polls tolerated while waiting: enough to ride out a server restart
POLL_RETRIES = 5

T = TypeVar("T")


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def parse_host(spec: str, default_cloud: int = 0) -> dict[str, Any]:
    """``"10.0.0.1"`` or ``"1:10.0.0.1"`` (cloud area 1) as a bk-job ``ip`` object."""
    cloud, sep, ip = spec.strip().partition(":")
    if sep and cloud.isdigit() and ":" not in ip:
        return {"bk_cloud_id": int(cloud), "ip": ip}
    return {"bk_cloud_id": default_cloud, "ip": spec.strip()}


def target_server(
    hosts: Sequence[str] | None, host_ids: Sequence[int] | None, bk_cloud_id: int
) -> dict[str, Any]:
    if not hosts and not host_ids:
        raise ValueError("no target: give hosts (IPs) or host_ids")
    server: dict[str, Any] = {}
    if host_ids:
        server["host_id_list"] = [int(h) for h in host_ids]
    if hosts:
        server["ip_list"] = [parse_host(h, bk_cloud_id) for h in hosts]
    return server


def script_request(
    script: str,
    *,
    hosts: Sequence[str] | None,
    host_ids: Sequence[int] | None,
    bk_cloud_id: int,
    language: int,
    params: str,
    account: str,
    timeout: int,
    task_name: str | None,
) -> dict[str, Any]:
    """``fast_execute_script`` parameters for running ``script`` as-is."""
    request: dict[str, Any] = {
        "script_content": b64(script),
        "script_language": int(language),
        "account_alias": account,
        "timeout": timeout,
        "target_server": target_server(hosts, host_ids, bk_cloud_id),
        "task_name": task_name,
    }
    if params:
        request["script_param"] = b64(params)
    return request


def submitted_ids(data: dict[str, Any]) -> tuple[int, int]:
    try:
        return int(data["job_instance_id"]), int(data["step_instance_id"])
    except (KeyError, TypeError, ValueError):
        raise JobApiError(-1, f"submission answered without job/step ids: {data!r}") from None


def job_status(status: dict[str, Any]) -> int:
    return int((status.get("job_instance") or {}).get("status") or RunStatus.BLANK)


def is_finished(status: dict[str, Any]) -> bool:
    if "finished" in status:
        return bool(status["finished"])
    return job_status(status) in FINISHED_RUN_STATUSES


def pick_step(status: dict[str, Any], step_instance_id: int | None) -> dict[str, Any] | None:
    """The named step, or else the last one that has started (where a plan stopped)."""
    steps: list[dict[str, Any]] = status.get("step_instance_list") or []
    if step_instance_id is not None:
        return next(
            (s for s in steps if int(s.get("step_instance_id", -1)) == step_instance_id), None
        )
    started = [s for s in steps if s.get("status") != RunStatus.BLANK]
    if started:
        return started[-1]
    return steps[0] if steps else None


def host_results(step: dict[str, Any] | None) -> list[HostResult]:
    if step is None:
        return []
    hosts = []
    for item in step.get("step_ip_result_list") or []:
        host_id = item.get("bk_host_id")
        exit_code = item.get("exit_code")
        hosts.append(
            HostResult(
                bk_host_id=int(host_id) if host_id is not None else None,
                ip=str(item.get("ip") or ""),
                bk_cloud_id=int(item.get("bk_cloud_id") or 0),
                status=int(item.get("status", HostStatus.UNKNOWN_ERROR)),
                exit_code=int(exit_code) if exit_code is not None else None,
                tag=str(item.get("tag") or ""),
            )
        )
    return hosts


def select_hosts(
    hosts: list[HostResult], ips: Sequence[str] | None, host_ids: Sequence[int] | None
) -> list[HostResult]:
    if not ips and not host_ids:
        return hosts
    wanted_ips = {parse_host(ip)["ip"] for ip in ips or ()}
    wanted_ids = set(host_ids or ())
    return [h for h in hosts if h.ip in wanted_ips or h.bk_host_id in wanted_ids]


def progress_of(
    job_instance_id: int, status: dict[str, Any], step_instance_id: int | None, elapsed: float
) -> JobProgress:
    hosts = host_results(pick_step(status, step_instance_id))
    done = [h for h in hosts if h.finished]
    return JobProgress(
        job_instance_id=job_instance_id,
        status=job_status(status),
        total=len(hosts),
        done=len(done),
        failed=sum(1 for h in done if not h.succeeded),
        running=sum(1 for h in hosts if h.status == HostStatus.RUNNING),
        elapsed=elapsed,
        finished=is_finished(status),
    )


def chunks(items: Sequence[T], size: int = LOG_BATCH_SIZE) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def logs_by_host(data: dict[str, Any]) -> dict[int, str]:
    """Host id → log text from a ``batch_get_job_instance_ip_log`` answer (script or file)."""
    logs: dict[int, str] = {}
    for item in data.get("script_task_logs") or []:
        host_id = item.get("bk_host_id", item.get("host_id"))
        if host_id is not None:
            logs[int(host_id)] = item.get("log_content") or ""
    for item in data.get("file_task_logs") or []:
        host_id = item.get("bk_host_id", item.get("host_id"))
        if host_id is not None:
            lines = (f.get("log_content") or "" for f in item.get("file_logs") or [])
            logs[int(host_id)] = "".join(
                line if line.endswith("\n") else line + "\n" for line in lines if line
            )
    return logs


def with_logs(hosts: list[HostResult], logs: dict[int, str]) -> list[HostResult]:
    for host in hosts:
        if host.bk_host_id is not None:
            host.log = logs.get(host.bk_host_id, "")
    return hosts


def log_host_ids(hosts: list[HostResult]) -> list[int]:
    return [h.bk_host_id for h in hosts if h.bk_host_id is not None]


def require_step(
    status: dict[str, Any], job_instance_id: int, step_instance_id: int | None
) -> dict[str, Any]:
    step = pick_step(status, step_instance_id)
    if step is None:
        which = f"step {step_instance_id}" if step_instance_id is not None else "any step"
        raise JobApiError(-1, f"job {job_instance_id} has no {which}")
    return step


def execution_result(
    job_instance_id: int, status: dict[str, Any], step: dict[str, Any], hosts: list[HostResult]
) -> ExecutionResult:
    job = status.get("job_instance") or {}
    return ExecutionResult(
        job_instance_id=job_instance_id,
        step_instance_id=int(step["step_instance_id"]),
        status=job_status(status),
        finished=is_finished(status),
        hosts=hosts,
        name=str(job.get("name") or ""),
    )


def retry_delay(error: JobApiError, failures: int, poll_interval: float) -> float | None:
    """Seconds to wait before polling again after ``failures`` failed polls in a row,
    or None to give up. Only answers without a bk-job envelope (network, proxy, restart)
    are retried; a business error will not change by asking again."""
    if error.code != -1 or failures > POLL_RETRIES:
        return None
    return max(poll_interval, 1.0) * failures
