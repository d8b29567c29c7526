"""The home page's "waiting for your confirmation": confirmation steps of the user's
businesses that wait, and name the user among their approvers."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from jobfleet.api.services import Services
from jobfleet.domain.approvals import approvers
from jobfleet.domain.status import RunStatus, ScopeType, StepType

# how far back and how many waiting jobs per business the home page looks at
DAYS = 30
PER_BUSINESS = 50


async def waiting_for(
    services: Services, user: str, businesses: Iterable[int]
) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    found: list[dict[str, Any]] = []
    for biz in businesses:
        _total, jobs = await services.jobs.list_jobs(
            scope_type=ScopeType.BIZ,
            scope_id=str(biz),
            start_ms=now - DAYS * 86400_000,
            end_ms=now,
            filters={"status": int(RunStatus.WAITING_USER)},
            offset=0,
            limit=PER_BUSINESS,
        )
        for job in jobs:
            for step in await services.jobs.steps(job.id):
                if step.type != StepType.MANUAL_CONFIRM or step.status != RunStatus.WAITING_USER:
                    continue
                if user in approvers(job.operator, step.config):
                    found.append({"job": job, "step": step, "biz": biz})
    return found
