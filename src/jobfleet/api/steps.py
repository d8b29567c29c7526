"""bk-job v3 step queries: get_step_instance_status and get_step_instance_detail."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import Row

from jobfleet.api.execute import job_in_scope
from jobfleet.api.params import get_int, get_str
from jobfleet.api.query import VIEW, execute_count_of, step_of
from jobfleet.api.routing import Call, add_api
from jobfleet.api.views import host_result_view, times
from jobfleet.domain.scripts import encode_base64, encode_exact_base64, loaded_script
from jobfleet.domain.status import HOST_STATUS_DESC, StepType
from jobfleet.store.secrets import MASK

MAX_GROUP_HOSTS = 5000


async def get_step_instance_status(call: Call) -> dict[str, Any]:
    p = call.params
    job = await job_in_scope(call, VIEW)
    step = await step_of(call, job)
    count = execute_count_of(call, step)
    batch = get_int(p, "batch", minimum=0)
    status = get_int(p, "status")
    tag = get_str(p, "tag")
    search_ip = get_str(p, "search_ip")
    keyword = get_str(p, "keyword", max_length=256)
    per_group = get_int(p, "max_host_num_per_group", minimum=1) or MAX_GROUP_HOSTS
    # every filter is SQL: a query for some hosts costs what those hosts cost
    rows = await call.services.jobs.hosts(
        step.id,
        count,
        batch=batch or None,
        statuses=[status] if status is not None else None,
        tag=tag,
        ip_contains=search_ip.strip() if search_ip else None,
        output_contains=keyword if keyword and step.type == StepType.SCRIPT else None,
    )
    groups: dict[tuple[int, str], list[Row[Any]]] = {}
    for row in rows:
        groups.setdefault((row.status, row.tag), []).append(row)
    group_list = []
    for (result, group_tag), members in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1])):
        group_list.append(
            {
                "result_type": result,
                "result_type_desc": HOST_STATUS_DESC.get(result, ""),
                "tag": group_tag,
                "host_size": len(members),
                "host_result_list": [
                    {**host_result_view(r), "bk_cloud_name": "", "batch": r.batch}
                    for r in members[:per_group]
                ],
            }
        )
    return {
        "step_instance_id": step.id,
        "execute_count": count,
        "name": step.name,
        "type": step.type,
        "status": step.status,
        "batch_count": step.batch_count,
        "current_batch": step.current_batch,
        "rolling_config": step.rolling_config,
        **times(step),
        "step_result_group_list": group_list,
    }


def _account(step: Row[Any]) -> dict[str, Any]:
    return {"id": step.account_id, "name": step.account_name, "alias": step.account_alias}


def _db_account(config: dict[str, Any]) -> dict[str, Any]:
    db = config.get("db") or {}
    return {"id": db.get("db_account_id"), "name": db.get("user"), "alias": db.get("alias")}


async def get_step_instance_detail(call: Call) -> dict[str, Any]:
    job = await job_in_scope(call, VIEW)
    step = await step_of(call, job)
    config = step.config or {}
    rows = await call.services.jobs.hosts(step.id, step.execute_count)
    inventory = {
        h.bk_host_id: h for h in await call.services.inventory.by_ids([r.bk_host_id for r in rows])
    }
    host_list = []
    for row in rows:
        host = inventory.get(row.bk_host_id)
        host_list.append(
            {
                "bk_host_id": row.bk_host_id,
                "bk_cloud_id": row.bk_cloud_id,
                "bk_cloud_name": "",
                "ip": row.ip,
                "ipv6": row.ipv6 or None,
                "bk_agent_id": row.agent_id,
                "alive": int(bool(host is not None and host.alive)),
            }
        )
    server = {"host_list": host_list}
    detail: dict[str, Any] = {"id": step.id, "name": step.name, "type": step.type}
    if step.type in (StepType.SCRIPT, StepType.SQL):
        param = step.script_param or ""
        detail["script_info"] = {
            "script_type": int(config.get("script_type") or 1),
            "script_id": config.get("script_id"),
            "script_version_id": config.get("script_version_id"),
            "script_content": encode_exact_base64(loaded_script(step.script_content, config)),
            "script_language": step.script_language,
            "script_param": MASK if step.is_param_sensitive and param else encode_base64(param),
            "script_timeout": step.timeout,
            # an SQL step's account is its database account (bk-job's script_info)
            "account": _db_account(config) if step.type == StepType.SQL else _account(step),
            "server": server,
            "is_param_sensitive": int(step.is_param_sensitive),
            "is_ignore_error": int(step.ignore_error),
        }
    elif step.type == StepType.FILE:
        sources = []
        for source in config.get("sources") or []:
            if source.get("kind") == "host":
                ids = source.get("host_ids") or []
                sources.append(
                    {
                        "file_list": source.get("files") or [],
                        "file_type": 1,
                        "account": {"name": source.get("account")},
                        "server": {"host_id_list": ids},
                    }
                )
            elif source.get("kind") == "blob":
                sources.append(
                    {"file_list": [f"{source.get('blob_id')}/{source.get('name')}"], "file_type": 2}
                )
        detail["file_info"] = {
            "file_source_list": sources,
            "file_destination": {
                "path": config.get("target_path"),
                "account": _account(step),
                "server": server,
            },
            "timeout": step.timeout,
            "source_speed_limit": config.get("upload_speed_limit"),
            "destination_speed_limit": config.get("download_speed_limit"),
            "transfer_mode": config.get("transfer_mode") or 2,
            "is_ignore_error": int(step.ignore_error),
        }
    elif step.type == StepType.MANUAL_CONFIRM:
        detail["approval_info"] = config.get("approval_info") or {}
    return detail


def register(router: APIRouter) -> None:
    add_api(router, "get_step_instance_status", get_step_instance_status, query=True)
    add_api(router, "get_step_instance_detail", get_step_instance_detail, query=True)
