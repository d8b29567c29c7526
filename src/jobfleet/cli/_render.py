"""How the CLI shows things: tables, summaries, logs (progress bars are in ``_progress``).
No I/O besides the console."""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from jobfleet.cli._pipe import write_all
from jobfleet.cli._terminal import printable
from jobfleet.sdk import (
    HOST_STATUS_DESC,
    RUN_STATUS_DESC,
    FileLogMode,
    FileLogStatus,
    HostStatus,
    RunStatus,
    StepType,
)

if TYPE_CHECKING:
    from jobfleet.sdk import ExecutionResult, FileLog, HostResult, TransferResult

RUN_STATUS_LABEL = RUN_STATUS_DESC
STEP_TYPE_LABEL: dict[int, str] = {
    StepType.SCRIPT: "script",
    StepType.FILE: "file",
    StepType.MANUAL_CONFIRM: "confirm",
    StepType.SQL: "sql",
}
FILE_STATUS_LABEL: dict[int, str] = {
    FileLogStatus.PULLING: "pulling",
    FileLogStatus.WAITING: "waiting",
    FileLogStatus.UPLOADING: "uploading",
    FileLogStatus.DOWNLOADING: "downloading",
    FileLogStatus.SUCCESS: "success",
    FileLogStatus.FAILED: "failed",
}
FILE_MODE_LABEL: dict[int, str] = {FileLogMode.UPLOAD: "upload", FileLogMode.DOWNLOAD: "download"}
EXCERPT_LINES = 3
EXCERPT_WIDTH = 100


# --- small formatters -----------------------------------------------------------


def run_status_label(status: int) -> str:
    return RUN_STATUS_LABEL.get(status, f"status {status}")


def run_status_style(status: int) -> str:
    if status in (RunStatus.SUCCESS, RunStatus.IGNORE_ERROR, RunStatus.SKIPPED):
        return "green"
    if status in (RunStatus.BLANK, RunStatus.RUNNING, RunStatus.STOPPING):
        return "cyan"
    if status in (RunStatus.WAITING_USER, RunStatus.ROLLING_WAITING):
        return "yellow"
    return "red"


def host_status_name(status: int) -> str:
    return HOST_STATUS_DESC.get(status, HOST_STATUS_DESC[0])


def host_status_style(status: int) -> str:
    if status in (HostStatus.SUCCESS, HostStatus.LAST_SUCCESS):
        return "green"
    if status in (HostStatus.WAITING, HostStatus.RUNNING):
        return "cyan"
    return "red"


def exit_code_text(code: int | None) -> str:
    return "-" if code is None else str(code)


def log_excerpt(log: str, lines: int = EXCERPT_LINES, width: int | None = EXCERPT_WIDTH) -> str:
    """The last ``lines`` non-empty lines of a log, each cut to ``width`` characters
    (None: whole, for pipes)."""
    kept = [line.rstrip() for line in log.splitlines() if line.strip()][-lines:]
    if width is None:
        return "\n".join(kept)
    return "\n".join(line if len(line) <= width else line[: width - 1] + "…" for line in kept)


def ip_key(ip: Any) -> tuple[int, int, str]:
    """Sort IPs numerically (10.0.0.9 before 10.0.0.10); anything else after, by text."""
    try:
        address = ipaddress.ip_address(str(ip))
    except ValueError:
        return (1, 0, str(ip))
    return (0, int(address), "")


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    # an end before its start is the skew between two clocks (an agent's and the
    # server's, or two servers'): what took that long took next to no time
    seconds = max(seconds, 0.0)
    if round(seconds * 1000) < 1000:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s"


def format_ms(value: Any) -> str:
    return format_duration(value / 1000) if isinstance(value, int | float) else "-"


def format_time(value: Any) -> str:
    """An epoch (ms or s) or ISO timestamp as local time."""
    if isinstance(value, bool) or value in (None, ""):
        return "-"
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 10**11 else value
        return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone()
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def format_bytes(size: int | None) -> str:
    """``0 B``, ``512 B``, ``1.5 KB``, ``20.0 MB`` (powers of 1024, as bk-job counts)."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def format_speed(bytes_per_second: int | None) -> str:
    return "-" if not bytes_per_second else f"{format_bytes(bytes_per_second)}/s"


def file_status_label(status: int) -> str:
    return FILE_STATUS_LABEL.get(status, f"status {status}")


def first_line(text: str, width: int | None = EXCERPT_WIDTH) -> str:
    """The first non-blank line, cut to ``width`` (None: whole, as in a pipe)."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if width is None or len(line) <= width else line[: width - 1] + "…"


def shown(value: Any, style: str = "") -> Text:
    """Text from a host or the server, its control characters written out
    (``_terminal``) before a table measures it."""
    return Text(printable(str(value)), style=style)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def noun_for(count: int, noun: str, plural: str = "") -> str:
    """``noun`` as ``count`` of it reads (``plural``: a plural other than ``noun`` + ``s``)."""
    return noun if count == 1 else plural or f"{noun}s"


def counted(
    count: int, noun: str, after: str = "", *, of: int | None = None, plural: str = ""
) -> Text:
    """A list's footer, the one way every list ends: ``3 tokens``, ``20 of 75 jobs``
    (``of``: the total when the list shows a part), ``1 entry`` (``plural``: a noun's
    plural other than ``noun`` + ``s``)."""
    word = noun_for(count if of is None else of, noun, plural)
    part = f"{count}" if of is None else f"{count} of {of}"
    return Text(f"{part} {word}{after}", style="dim")


def show(console: Console, json_out: bool, data: Any, *lines: RenderableType) -> None:
    """``data`` as JSON with ``--json``, else ``lines`` for people."""
    if json_out:
        console.out(to_json(data))
        return
    for line in lines:
        console.print(line)


# --- job results ----------------------------------------------------------------


def _group_order(status: int) -> tuple[int, int]:
    if status in (HostStatus.SUCCESS, HostStatus.LAST_SUCCESS):
        return (0, status)
    if status in (HostStatus.WAITING, HostStatus.RUNNING):
        return (1, status)
    # failures last, nearest the prompt, where they are seen
    return (2, status)


def host_order(host: HostResult) -> tuple[bool, int, int, tuple[int, int, str]]:
    """Within a status, hosts come in the order the server lists a step's hosts (by host
    id), as the console and the SDK show them, so that the n-th host is the same one
    everywhere; one without an id (a server that names hosts by address only) after
    them, by address."""
    return (host.bk_host_id is None, host.bk_host_id or 0, host.bk_cloud_id, ip_key(host.ip))


def _status_then_host(host: HostResult) -> tuple[tuple[int, int], tuple[Any, ...]]:
    return (_group_order(host.status), host_order(host))


def excerpt_width(console: Console) -> int | None:
    """How much of each log line a table shows: all of it when nobody reads it on a
    terminal (a pipe or a file)."""
    return EXCERPT_WIDTH if console.is_terminal else None


def host_table(
    hosts: Sequence[HostResult], *, logs: bool = True, width: int | None = EXCERPT_WIDTH
) -> Table:
    """Hosts grouped by status, each with its exit code and the tail of its log."""
    table = Table(show_edge=False, pad_edge=False, expand=False)
    table.add_column("status", no_wrap=True)
    table.add_column("ip", no_wrap=True)
    table.add_column("exit", justify="right", no_wrap=True)
    if logs:
        table.add_column("log (last lines)", overflow="fold")
    groups: dict[int, list[HostResult]] = {}
    for host in hosts:
        # bk-job shows numbers it does not know as "unknown error" (0): group them so
        key = host.status if host.status in HOST_STATUS_DESC else HostStatus.UNKNOWN_ERROR
        groups.setdefault(key, []).append(host)
    for index, status in enumerate(sorted(groups, key=_group_order)):
        members = sorted(groups[status], key=host_order)
        if index:
            table.add_section()
        style = host_status_style(status)
        for row, host in enumerate(members):
            label = (
                Text(f"{host_status_name(status)} ({len(members)})", style=style)
                if row == 0
                else Text("")
            )
            cells: list[RenderableType] = [
                label,
                shown(_host_label(host)),
                Text(exit_code_text(host.exit_code)),
            ]
            if logs:
                cells.append(shown(log_excerpt(host.log, width=width), style="dim"))
            table.add_row(*cells)
    return table


def _host_label(host: HostResult) -> str:
    return _address(host.bk_cloud_id, host.ip)


def result_summary(result: ExecutionResult, elapsed: float | None = None) -> Text:
    """One line: job id, outcome, host counts, elapsed time."""
    total = len(result.hosts)
    failed = len(result.failed_hosts)
    style = run_status_style(result.status)
    if result.ok:
        mark, verdict = "✔", "succeeded"
    elif result.finished:
        mark, verdict = "✘", run_status_label(result.status)
    else:
        mark, verdict = "…", run_status_label(result.status)
    text = Text()
    text.append(f"{mark} job {result.job_instance_id} {verdict}", style=f"bold {style}")
    if failed:
        text.append(f" · {failed} of {total} {noun_for(total, 'host')} failed")
    elif not total:
        text.append(" · no hosts yet")
    else:
        done = sum(1 for h in result.hosts if h.finished)
        text.append(f" · {done}/{total} {noun_for(total, 'host')} done")
    if elapsed is not None:
        text.append(f" · {format_duration(elapsed)}")
    return text


def job_overview(status: dict[str, Any]) -> Group:
    """The job's identity and times, then one row per step."""
    job = status.get("job_instance") or {}
    job_status = int(job.get("status") or 0)
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("job", shown(f"{job.get('job_instance_id')}  {job.get('name') or ''}".rstrip()))
    head.add_row("status", Text(run_status_label(job_status), style=run_status_style(job_status)))
    scope = job.get("bk_scope_id")
    if scope is not None:
        head.add_row("scope", shown(f"{job.get('bk_scope_type', 'biz')} {scope}"))
    head.add_row("created", format_time(job.get("create_time")))
    head.add_row("started", format_time(job.get("start_time")))
    head.add_row("ended", format_time(job.get("end_time")))
    head.add_row("duration", format_ms(job.get("total_time")))

    steps = Table(show_edge=False, pad_edge=False)
    for column in ("step", "name", "type", "status", "hosts", "duration"):
        steps.add_column(column, no_wrap=column != "name")
    for step in status.get("step_instance_list") or []:
        step_status = int(step.get("status") or 0)
        hosts = step.get("step_ip_result_list")
        steps.add_row(
            str(step.get("step_instance_id")),
            shown(step.get("name") or ""),
            STEP_TYPE_LABEL.get(int(step.get("type") or 0), str(step.get("type"))),
            Text(run_status_label(step_status), style=run_status_style(step_status)),
            "-" if hosts is None else str(len(hosts)),
            format_ms(step.get("total_time")),
        )
    return Group(head, Text(""), steps)


def print_host_logs(console: Console, hosts: Iterable[HostResult]) -> None:
    """Every host's full log under a ``== ip (status, exit N) ==`` header; for file
    steps one line per file instead. Hosts come in the host table's order (by status,
    failures last; by ``host_order`` within a status)."""
    for host in sorted(hosts, key=_status_then_host):
        state = f"{host_status_name(host.status)}, exit {exit_code_text(host.exit_code)}"
        header = f"== {_host_label(host)} ({state}) =="
        console.print(shown(header, style=f"bold {host_status_style(host.status)}"))
        text = host_log_text(host)
        if text:
            # straight to the file, control characters written out as the console's
            # hook would: Rich takes seconds over megabytes of log
            # and in pieces, so that a reader that leaves part way is noticed
            write_all(console.file, printable(text.rstrip("\n")) + "\n")


def host_log_text(host: HostResult) -> str:
    """A host's log as plain text: the script output, or its file lines."""
    if not host.file_logs:
        return host.log
    return "".join(line + "\n" for f in host.file_logs for line in file_log_lines(f))


def file_log_lines(item: FileLog) -> list[str]:
    """``download 10.0.0.1:/src/a -> /dest/a  success  1.5 MB  2.0 MB/s  100%``, then
    the file's message lines, indented."""
    mode = FILE_MODE_LABEL.get(item.mode, f"mode {item.mode}")
    source = f"{_address(item.src_cloud_id, item.src_ip or '0.0.0.0')}:{item.src_path}"
    dest = item.dest_path or "(server)"
    head = "  ".join(
        (
            f"{mode:<8}",
            f"{source} -> {dest}",
            file_status_label(item.status),
            format_bytes(item.size),
            format_speed(item.speed),
            f"{item.progress}%",
        )
    )
    return [head, *(f"    {line}" for line in item.log.splitlines() if line.strip())]


# --- file transfers ---------------------------------------------------------------


def _downloads(host: HostResult) -> list[FileLog]:
    return [f for f in host.file_logs if f.mode == FileLogMode.DOWNLOAD]


def aggregate_speed(files: Sequence[FileLog]) -> int:
    """The speed of a host's files taken together: all bytes over the time each file
    took at its own speed."""
    timed = [f for f in files if f.size > 0 and f.speed > 0]
    seconds = sum(f.size / f.speed for f in timed)
    return round(sum(f.size for f in timed) / seconds) if seconds else 0


def host_error(
    host: HostResult, files: Sequence[FileLog], width: int | None = EXCERPT_WIDTH
) -> str:
    """The first line of what went wrong on a host, if anything did."""
    if host.succeeded:
        return ""
    for item in files:
        if item.status == FileLogStatus.FAILED and item.log.strip():
            return first_line(item.log, width)
    return first_line(host.log, width)


def transfer_table(hosts: Sequence[HostResult], *, width: int | None = EXCERPT_WIDTH) -> Table:
    """One row per target host: status, files and bytes written, speed, first error line
    (cut to ``width``: ``excerpt_width``)."""
    table = Table(show_edge=False, pad_edge=False, expand=False)
    table.add_column("status", no_wrap=True)
    table.add_column("ip", no_wrap=True)
    table.add_column("files", justify="right", no_wrap=True)
    table.add_column("bytes", justify="right", no_wrap=True)
    table.add_column("speed", justify="right", no_wrap=True)
    table.add_column("error", overflow="fold")
    for host in sorted(hosts, key=_status_then_host):
        files = _downloads(host)
        written = sum(1 for f in files if f.succeeded)
        table.add_row(
            Text(host_status_name(host.status), style=host_status_style(host.status)),
            shown(_host_label(host)),
            f"{written}/{len(files)}",
            format_bytes(sum(f.bytes_done for f in files)),
            format_speed(aggregate_speed(files)),
            shown(host_error(host, files, width), style="red"),
        )
    return table


def transfer_summary(result: TransferResult, elapsed: float | None = None) -> Text:
    """``result_summary`` plus the bytes the targets wrote."""
    text = result_summary(result, elapsed)
    text.append(f" · {format_bytes(result.bytes_done)} written")
    return text


def fetch_table(rows: Sequence[dict[str, Any]], *, width: int | None = EXCERPT_WIDTH) -> Table:
    """One row per fetched file (or per host that sent nothing): where it is now; each
    error cut to ``width`` (``excerpt_width``)."""
    table = Table(show_edge=False, pad_edge=False, expand=False)
    for column in ("status", "ip", "path", "saved as", "size"):
        table.add_column(column, no_wrap=column in ("status", "ip", "size"), overflow="fold")
    table.add_column("error", overflow="fold")
    for row in rows:
        ok = bool(row.get("saved"))
        table.add_row(
            shown(row.get("state") or "", style="green" if ok else "red"),
            shown(_address(int(row.get("bk_cloud_id") or 0), str(row.get("ip") or ""))),
            shown(row.get("path") or "-"),
            shown(row.get("saved") or "-"),
            format_bytes(row.get("size")) if ok else "-",
            shown(first_line(str(row.get("error") or ""), width), style="red"),
        )
    return table


def _address(cloud: int, ip: str) -> str:
    # the cloud area matters only when it is not the default one
    return ip if cloud == 0 else f"{cloud}:{ip}"


# --- inventory and administration -------------------------------------------------


def hosts_table(hosts: Sequence[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for column in (
        "id",
        "ip",
        "cloud",
        "biz",
        "hostname",
        "os",
        "alive",
        "agent",
        "version",
        "last seen",
    ):
        table.add_column(column, no_wrap=column not in ("hostname", "agent"))
    # the API's order (host id), which --json, `topo list` and the console's hosts page keep
    for host in hosts:
        alive = bool(host.get("alive"))
        table.add_row(
            str(host.get("bk_host_id", "")),
            shown(host.get("ip") or ""),
            str(host.get("bk_cloud_id") or 0),
            str(host.get("bk_biz_id", "")),
            shown(host.get("hostname") or ""),
            # what the console's hosts page shows: the agent's OS name ("Ubuntu 22.04.4
            # LTS"), the bare type ("linux") for a host whose agent never said it
            shown(host.get("os_name") or host.get("os_type") or ""),
            Text("yes" if alive else "no", style="green" if alive else "red"),
            shown(host.get("agent_id") or "-"),
            shown(host.get("agent_version") or "-"),
            # last_seen is when the agent connected or left: one that is up is seen now
            "now" if alive else format_time(host.get("last_seen")),
        )
    return table


def records_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Table:
    """A plain table of API records; list values are joined, times formatted."""
    table = Table(show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(*(shown(_cell(column, row.get(column))) for column in columns))
    return table


def _cell(column: str, value: Any) -> str:
    if column.endswith("_time") or column == "last_seen":
        return format_time(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(_scope_text(v) if isinstance(v, dict) else str(v) for v in value) or "-"
    return str(value)


def _scope_text(scope: dict[str, Any]) -> str:
    if "scope_type" in scope:
        return f"{scope.get('scope_type')}:{scope.get('scope_id')}"
    return json.dumps(scope, ensure_ascii=False)
