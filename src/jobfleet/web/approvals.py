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
    held = {str(biz): i for i, biz in enumerate(businesses)}
    pairs = await services.jobs.newest_steps_of_status(
        scope_type=ScopeType.BIZ,
        scope_ids=list(held),
        start_ms=now - DAYS * 86400_000,
        end_ms=now,
        status=int(RunStatus.WAITING_USER),
        per_scope=PER_BUSINESS,
        step_type=int(StepType.MANUAL_CONFIRM),
    )
    # business by business, in the order the user holds them
    ordered = sorted(pairs, key=lambda pair: held[pair[0].scope_id])
    return [
        {"job": job, "step": step, "biz": int(job.scope_id)}
        for job, step in ordered
        if user in approvers(job.operator, step.config)
    ]
