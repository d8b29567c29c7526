"""jobfleet's own batch log query: bk-job's ``batch_get_job_instance_ip_log`` with
room for 2,000 hosts per call (bk-job's own route keeps bk-job's limit of 500)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jobfleet.api.query import batch_logs
from jobfleet.api.routing import OWN_PREFIX, Call, add_api

OWN_PREFIXES = (OWN_PREFIX,)
MAX_OWN_LOG_HOSTS = 2000


async def batch_get_job_instance_ip_log(call: Call) -> dict[str, Any]:
    return await batch_logs(call, MAX_OWN_LOG_HOSTS)


def register(router: APIRouter) -> None:
    add_api(
        router,
        "batch_get_job_instance_ip_log",
        batch_get_job_instance_ip_log,
        query=True,
        prefixes=OWN_PREFIXES,
    )
