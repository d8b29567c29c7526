"""The job history's filters as the CLI reads them (``jobfleet jobs``), and its table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.table import Table

from jobfleet.cli import _render
from jobfleet.sdk import RunStatus, parse_duration

STATUS_NAMES: dict[str, int] = {
    "waiting": RunStatus.BLANK,
    "running": RunStatus.RUNNING,
    "success": RunStatus.SUCCESS,
    "failed": RunStatus.FAIL,
    "skipped": RunStatus.SKIPPED,
    "ignored": RunStatus.IGNORE_ERROR,
    "waiting-user": RunStatus.WAITING_USER,
    "terminated": RunStatus.TERMINATED,
    "abnormal": RunStatus.ABNORMAL_STATE,
    "stopping": RunStatus.STOPPING,
    "stopped": RunStatus.STOP_SUCCESS,
    "confirm-terminated": RunStatus.CONFIRM_TERMINATED,
    "abandoned": RunStatus.ABANDONED,
    "rolling-waiting": RunStatus.ROLLING_WAITING,
}
LAUNCH_MODES: dict[str, int] = {"web": 1, "api": 2, "cron": 3}
LAUNCH_LABEL = {v: k for k, v in LAUNCH_MODES.items()}


def when(text: str, now_ms: int) -> int:
    """Epoch ms of ``2026-12-01``, ``2026-12-01T10:00[:00]`` (local time, or with an
    offset) or of a time ago: ``90m``, ``2h``, ``3d``."""
    value = text.strip()
    try:
        return int(datetime.fromisoformat(value.replace(" ", "T")).timestamp() * 1000)
    except ValueError:
        pass
    try:
        # a bare number is neither a date nor, without its unit, a time ago
        if not value[-1:].isalpha():
            raise ValueError(value)
        return now_ms - round(parse_duration(value, zero=True) * 1000)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: write e.g. 2026-12-01, 2026-12-01T10:00, 2h or 3d"
        ) from None


def _code(value: str | None, names: dict[str, int], what: str) -> int | None:
    if value is None:
        return None
    text = value.strip().lower()
    if text.isdecimal():
        return int(text)
    if text not in names:
        raise ValueError(f"unknown {what} {value!r}: {', '.join(names)} or a number")
    return names[text]


def filters(
    *,
    status: str | None,
    launch_mode: str | None,
    operator: str | None,
    name: str | None,
    cron: int | None,
    ip: str | None,
) -> dict[str, Any]:
    """``get_job_instance_list`` parameters for the filters given."""
    chosen = {
        "status": _code(status, STATUS_NAMES, "status"),
        "launch_mode": _code(launch_mode, LAUNCH_MODES, "launch mode"),
        "operator": operator,
        "name": name,
        "job_cron_id": cron,
        "ip": ip,
    }
    return {k: v for k, v in chosen.items() if v is not None}


def table(rows: Sequence[dict[str, Any]]) -> Table:
    return _render.records_table(
        [
            {
                "id": r.get("job_instance_id"),
                "name": r.get("name"),
                "status": _render.run_status_label(int(r.get("status") or 0)),
                "by": LAUNCH_LABEL.get(int(r.get("launch_mode") or 0), "-"),
                "cron": r.get("job_cron_id") or "",
                "operator": r.get("operator"),
                "created": _render.format_time(r.get("create_time")),
                "took": _render.format_ms(r.get("total_time")),
            }
            for r in rows
        ],
        ["id", "name", "status", "by", "cron", "operator", "created", "took"],
    )
