"""The bk-job v2 reads that older clients still make (``/api/c/compapi/v2/job/``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jobfleet.api.auditing import audit_log_read
from jobfleet.api.execute import job_in_scope
from jobfleet.api.query import MAX_LOG_HOSTS
from jobfleet.api.routing import JOBV2_PREFIXES, Call, add_api
from jobfleet.domain.status import FINISHED_RUN_STATUSES
from jobfleet.engine.results import size_label

VIEW = "view_history"
# get_job_instance_log answers with every host of every step: it holds the logs of at
# most MAX_LOG_HOSTS hosts (the v3 batch log query's cap) and MAX_LOG_BYTES in all
MAX_LOG_BYTES = 16 * 1024 * 1024


async def get_job_instance_status(call: Call) -> dict[str, Any]:
    job = await job_in_scope(call, VIEW)
    steps = await call.services.jobs.steps(job.id)
    hosts = await call.services.jobs.hosts_of_steps(steps)
    current = next(
        (s.id for s in steps if s.status not in FINISHED_RUN_STATUSES),
        steps[-1].id if steps else None,
    )
    return {
        "is_finished": job.status in FINISHED_RUN_STATUSES,
        "job_instance": {
            "job_instance_id": job.id,
            "bk_job_id": job.plan_id,
            "name": job.name,
            "operator": job.operator,
            "status": job.status,
            "create_time": job.create_time,
            "start_time": job.start_time,
            "end_time": job.end_time,
            "total_time": job.total_time,
            "start_way": job.launch_mode,
            "current_step_instance_id": current,
            "bk_biz_id": job.bk_biz_id,
        },
        "blocks": [
            {
                "type": 1,
                "step_instances": [
                    {
                        "step_instance_id": s.id,
                        "step_id": -1,
                        "name": s.name,
                        "type": s.type,
                        "operator": s.operator,
                        "status": s.status,
                        "execute_count": s.execute_count,
                        "start_time": s.start_time,
                        "end_time": s.end_time,
                        "total_time": s.total_time,
                        "create_time": s.create_time,
                        "pause": 0,
                        "step_ip_status": [
                            {"ip": h.ip, "bk_cloud_id": h.bk_cloud_id, "status": h.status}
                            for h in hosts[s.id]
                        ],
                    }
                ],
            }
            for s in steps
        ],
    }


def _left_out(size: int) -> str:
    """What a host's log_content says when its log is past the answer's caps."""
    hosts = f"{MAX_LOG_HOSTS} host" + ("s'" if MAX_LOG_HOSTS != 1 else "'s")
    return (
        f"[jobfleet: log left out of this answer ({size} bytes): get_job_instance_log "
        f"holds at most {hosts} logs and {size_label(MAX_LOG_BYTES)} of logs in all; "
        "read it with get_job_instance_ip_log or batch_get_job_instance_ip_log]\n"
    )


class _Budget:
    """The hosts' logs that one answer holds: in step and host order, until a cap."""

    def __init__(self) -> None:
        self.hosts = 0
        self.bytes = 0

    def take(self, size: int) -> bool:
        if size == 0:
            return True
        if self.hosts >= MAX_LOG_HOSTS or self.bytes + size > MAX_LOG_BYTES:
            # later, smaller logs are left out too: the answer's logs are a prefix
            self.hosts = MAX_LOG_HOSTS
            return False
        self.hosts += 1
        self.bytes += size
        return True


async def get_job_instance_log(call: Call) -> list[dict[str, Any]]:
    """Every step's hosts with their logs, bounded as the v3 batch log query is: at
    most ``MAX_LOG_HOSTS`` hosts' logs and ``MAX_LOG_BYTES`` in all (sizes are read
    first, then only the logs that fit); a host past a cap keeps its entry, its
    ``log_content`` one line that says so."""
    job = await job_in_scope(call, VIEW)
    jobs = call.services.jobs
    steps = await jobs.steps(job.id)
    hosts = await jobs.hosts_of_steps(steps)
    budget = _Budget()
    sizes = {s.id: await jobs.log_bytes(s.id, s.execute_count) for s in steps}
    kept = {s.id: [h for h in sorted(sizes[s.id]) if budget.take(sizes[s.id][h])] for s in steps}
    left_out = sum(len(sizes[s.id]) - len(kept[s.id]) for s in steps)
    await audit_log_read(call, job, None, sum(len(rows) for rows in hosts.values()) - left_out)
    result = []
    for step in steps:
        rows = hosts[step.id]
        logs = await jobs.logs(step.id, step.execute_count, kept[step.id])
        for host_id, size in sizes[step.id].items():
            logs.setdefault(host_id, _left_out(size))
        groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault((r.status, r.tag), []).append(
                {
                    "ip": r.ip,
                    "bk_cloud_id": r.bk_cloud_id,
                    "start_time": r.start_time,
                    "end_time": r.end_time,
                    "total_time": r.total_time,
                    "execute_count": r.execute_count,
                    "error_code": r.error_code,
                    "exit_code": r.exit_code,
                    "log_content": logs.get(r.bk_host_id, ""),
                }
            )
        result.append(
            {
                "is_finished": step.status in FINISHED_RUN_STATUSES,
                "step_instance_id": step.id,
                "name": step.name,
                "status": step.status,
                "step_results": [
                    {"ip_status": status, "tag": tag, "ip_logs": items}
                    for (status, tag), items in groups.items()
                ],
            }
        )
    return result


def register(router: APIRouter) -> None:
    add_api(
        router,
        "get_job_instance_status",
        get_job_instance_status,
        query=True,
        prefixes=JOBV2_PREFIXES,
    )
    add_api(
        router, "get_job_instance_log", get_job_instance_log, query=True, prefixes=JOBV2_PREFIXES
    )
