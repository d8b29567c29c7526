"""How stored rows look on the wire."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row

from jobfleet.domain.status import HOST_STATUS_DESC


def scope_fields(job: Row[Any]) -> dict[str, Any]:
    return {
        "bk_scope_type": job.scope_type,
        "bk_scope_id": job.scope_id,
        "bk_biz_id": job.bk_biz_id,
    }


def times(row: Row[Any]) -> dict[str, Any]:
    return {
        "create_time": row.create_time,
        "start_time": row.start_time,
        "end_time": row.end_time,
        "total_time": row.total_time,
    }


def job_view(job: Row[Any]) -> dict[str, Any]:
    return {
        "job_instance_id": job.id,
        "name": job.name,
        "status": job.status,
        **times(job),
        **scope_fields(job),
    }


def step_view(step: Row[Any]) -> dict[str, Any]:
    return {
        "step_instance_id": step.id,
        "name": step.name,
        "type": step.type,
        "status": step.status,
        "execute_count": step.execute_count,
        **times(step),
    }


def host_result_view(row: Row[Any]) -> dict[str, Any]:
    return host_result_views([row])[0]


_RESULT_FIELDS = (
    "bk_host_id",
    "ip",
    "ipv6",
    "bk_cloud_id",
    "agent_id",
    "status",
    "tag",
    "exit_code",
    "error_code",
    "start_time",
    "end_time",
    "total_time",
)


def host_result_views(rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    """``host_result_view`` of many rows of one query. Each row is read once as a tuple:
    a Row's attribute costs ~2 µs, and a 10,000-host answer would spend 0.3 s on them."""
    if not rows:
        return []
    position = {name: i for i, name in enumerate(rows[0]._fields)}
    host, ip, ipv6, cloud, agent, status, tag, exit_code, error, start, end, total = (
        position[name] for name in _RESULT_FIELDS
    )
    desc = HOST_STATUS_DESC
    views = []
    for row in rows:
        t = tuple(row)
        views.append(
            {
                "bk_host_id": t[host],
                "ip": t[ip],
                "ipv6": t[ipv6] or None,
                "bk_cloud_id": t[cloud],
                "bk_agent_id": t[agent],
                "status": t[status],
                "status_desc": desc.get(t[status], ""),
                "tag": t[tag],
                "exit_code": t[exit_code],
                "error_code": t[error],
                "start_time": t[start],
                "end_time": t[end],
                "total_time": t[total],
            }
        )
    return views


def list_item(job: Row[Any]) -> dict[str, Any]:
    return {
        "job_instance_id": job.id,
        "job_plan_id": job.plan_id,
        "job_template_id": job.template_id,
        "job_cron_id": job.cron_id,
        "name": job.name,
        "operator": job.operator,
        "launch_mode": job.launch_mode,
        "status": job.status,
        "type": job.type,
        **times(job),
        **scope_fields(job),
    }
