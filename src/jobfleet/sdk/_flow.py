"""The I/O-free steps of run-and-wait: build the request, read progress, assemble results."""

from __future__ import annotations

import base64
import functools
import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from jobfleet.domain.status import (
    FINISHED_RUN_STATUSES,
    FileLogStatus,
    HostStatus,
    RunStatus,
)
from jobfleet.sdk._errors import JobApiError
from jobfleet.sdk._models import (
    ExecutionResult,
    FileLog,
    HostResult,
    JobProgress,
    Target,
)
from jobfleet.sdk._transport import says_try_again

# bk-job refuses more hosts than this in one batch_get_job_instance_ip_log
LOG_BATCH_SIZE = 500
# consecutive failed polls tolerated while waiting: enough to ride out a server restart
POLL_RETRIES = 5

T = TypeVar("T")
P = ParamSpec("P")


def reads_answer(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn`` reads a server's answer: a field of the wrong type or out of range (a
    server that is not bk-job, or a broken one) is a ``JobApiError``, not whatever
    Python error the reading happened to hit."""

    @functools.wraps(fn)
    def read(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (TypeError, ValueError, OverflowError, AttributeError, KeyError) as exc:
            raise JobApiError(
                -1, f"the server's answer is malformed ({type(exc).__name__}: {exc})"
            ) from None

    return read


def b64(text: str | bytes) -> str:
    """Base64 of a script or file: bytes as they are (a GBK ``.bat`` runs as written),
    text as UTF-8."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    return base64.b64encode(raw).decode("ascii")


def parse_host(spec: str, default_cloud: int = 0) -> dict[str, Any]:
    """A host argument as a bk-job ``ip`` object: ``127.0.0.1``, ``1:127.0.0.1`` (cloud
    area 1), ``::1``, or ``1:[::1]`` (an IPv6 address with a cloud area; a bare address
    always wins, since ``0:0::1`` is itself an IPv6 address)."""
    text = spec.strip()
    if _is_ip(text):
        return {"bk_cloud_id": default_cloud, "ip": text}
    cloud, sep, ip = text.partition(":")
    ip = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
    if sep and cloud.isdecimal() and _is_ip(ip):
        return {"bk_cloud_id": int(cloud), "ip": ip}
    return {"bk_cloud_id": default_cloud, "ip": text}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def target_server(
    hosts: Sequence[str] | None,
    host_ids: Sequence[int] | None,
    bk_cloud_id: int,
    target: Target | None = None,
) -> dict[str, Any]:
    """A bk-job ``target_server`` of IPs, host ids and ``target``'s groups and nodes."""
    if not hosts and not host_ids and not target:
        raise ValueError("no target: give hosts (IPs), host_ids or a target")
    whole = Target(
        dynamic_groups=target.dynamic_groups if target else (),
        topo_nodes=target.topo_nodes if target else (),
        host_ids=(*(host_ids or ()), *(target.host_ids if target else ())),
    )
    server = whole.target_server()
    if hosts:
        server["ip_list"] = [parse_host(h, bk_cloud_id) for h in hosts]
    return server


def script_request(
    script: str | bytes,
    *,
    hosts: Sequence[str] | None,
    host_ids: Sequence[int] | None,
    bk_cloud_id: int,
    language: int,
    params: str,
    account: str,
    timeout: int,
    task_name: str | None,
    target: Target | None = None,
) -> dict[str, Any]:
    """``fast_execute_script`` parameters for running ``script`` as-is."""
    request: dict[str, Any] = {
        "script_content": b64(script),
        "script_language": int(language),
        "account_alias": account,
        "timeout": timeout,
        "target_server": target_server(hosts, host_ids, bk_cloud_id, target),
        "task_name": task_name,
    }
    if params:
        request["script_param"] = b64(params)
    return request


@reads_answer
def submitted_ids(data: dict[str, Any]) -> tuple[int, int]:
    try:
        return int(data["job_instance_id"]), int(data["step_instance_id"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise JobApiError(-1, f"submission answered without job/step ids: {data!r}") from None


@reads_answer
def job_status(status: dict[str, Any]) -> int:
    return int((status.get("job_instance") or {}).get("status") or RunStatus.BLANK)


@reads_answer
def is_finished(status: dict[str, Any]) -> bool:
    if "finished" in status:
        return bool(status["finished"])
    return job_status(status) in FINISHED_RUN_STATUSES


@reads_answer
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


@reads_answer
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


@reads_answer
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


@dataclass
class StepLogs:
    """Host id → log text, and for file steps host id → file logs, of some hosts of a step."""

    text: dict[int, str] = field(default_factory=dict)
    files: dict[int, list[FileLog]] = field(default_factory=dict)

    @reads_answer
    def add(self, data: dict[str, Any]) -> StepLogs:
        """Take in one ``batch_get_job_instance_ip_log`` answer (script or file)."""
        for item in data.get("script_task_logs") or []:
            host_id = item.get("bk_host_id", item.get("host_id"))
            if host_id is not None:
                self.text[int(host_id)] = item.get("log_content") or ""
        for item in data.get("file_task_logs") or []:
            host_id = item.get("bk_host_id", item.get("host_id"))
            if host_id is None:
                continue
            files = [file_log(f) for f in item.get("file_logs") or []]
            self.files[int(host_id)] = files
            self.text[int(host_id)] = "".join(
                f.log if f.log.endswith("\n") else f.log + "\n" for f in files if f.log
            )
        return self


def logs_by_host(data: dict[str, Any]) -> dict[int, str]:
    """Host id → log text from a ``batch_get_job_instance_ip_log`` answer (script or file)."""
    return StepLogs().add(data).text


def with_logs(hosts: list[HostResult], logs: StepLogs) -> list[HostResult]:
    for host in hosts:
        if host.bk_host_id is not None:
            host.log = logs.text.get(host.bk_host_id, "")
            host.file_logs = logs.files.get(host.bk_host_id, [])
    return hosts


def log_host_ids(hosts: list[HostResult]) -> list[int]:
    return [h.bk_host_id for h in hosts if h.bk_host_id is not None]


def require_step(
    status: dict[str, Any], job_instance_id: int, step_instance_id: int | None
) -> dict[str, Any]:
    step = pick_step(status, step_instance_id)
    if step is None:
        which = f"step {step_instance_id}" if step_instance_id is not None else "steps"
        raise JobApiError(-1, f"job {job_instance_id} has no {which}")
    return step


@reads_answer
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
    and a server's "try again" (busy, throttled) are retried; a business error will not
    change by asking again."""
    if (error.code != -1 and not says_try_again(error)) or failures > POLL_RETRIES:
        return None
    return max(poll_interval, 1.0) * failures


# --- files ------------------------------------------------------------------------

# bytes read from disk or the network per step: big enough to keep syscalls few,
# small enough that progress moves smoothly
CHUNK_SIZE = 1024 * 1024
SHA256_HEADER = "X-Jobfleet-Sha256"

_UNITS = {
    "": 1,
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "k": 1024,
    "kb": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*(?:/s)?\s*$")


def parse_size(text: Any) -> int:
    """Bytes in a bk-job size or speed text: ``"1.5 MB"``, ``"0 KB/s"``, ``"12 Bytes"``."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return max(int(text), 0)
    match = _QUANTITY.match(str(text or ""))
    if match is None:
        return 0
    unit = _UNITS.get(match.group(2).lower())
    return round(float(match.group(1)) * unit) if unit else 0


def parse_percent(text: Any) -> int:
    """``"45%"`` → 45, kept within 0-100."""
    try:
        value = float(str(text if text is not None else "").strip().rstrip("%") or 0)
    except ValueError:
        return 0
    return min(max(int(value), 0), 100)


def _address(value: Any) -> tuple[str, int]:
    # bk-job sends an ip object; older gateways a "cloud:ip" string
    if isinstance(value, dict):
        return str(value.get("ip") or ""), int(value.get("bk_cloud_id") or 0)
    if isinstance(value, str) and value:
        host = parse_host(value)
        return str(host["ip"]), int(host["bk_cloud_id"])
    return "", 0


@reads_answer
def file_log(item: dict[str, Any]) -> FileLog:
    """One ``file_logs`` entry of a log answer as a ``FileLog``."""
    src_ip, src_cloud = _address(item.get("src_ip"))
    dest_ip, _ = _address(item.get("dest_ip"))
    status = item.get("status")
    return FileLog(
        mode=int(item.get("mode") or 0),
        src_ip=src_ip,
        src_cloud_id=src_cloud,
        src_path=str(item.get("src_path") or ""),
        status=int(status) if status is not None else int(FileLogStatus.WAITING),
        dest_ip=dest_ip or None,
        dest_path=str(item["dest_path"]) if item.get("dest_path") else None,
        log=str(item.get("log_content") or ""),
        size=parse_size(item.get("size")),
        speed=parse_size(item.get("speed")),
        progress=parse_percent(item.get("process")),
    )
