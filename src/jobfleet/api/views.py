"""How stored rows look on the wire."""

from __future__ import annotations

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
    return {
        "bk_host_id": row.bk_host_id,
        "ip": row.ip,
        "ipv6": row.ipv6 or None,
        "bk_cloud_id": row.bk_cloud_id,
        "bk_agent_id": row.agent_id,
        "status": row.status,
        "status_desc": HOST_STATUS_DESC.get(row.status, ""),
        "tag": row.tag,
        "exit_code": row.exit_code,
        "error_code": row.error_code,
        "start_time": row.start_time,
        "end_time": row.end_time,
        "total_time": row.total_time,
    }


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
