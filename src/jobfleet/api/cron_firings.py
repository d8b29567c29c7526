"""A cron's history of firings: jobfleet's own ``GET /api/jobfleet/v1/crons/{id}/firings``.

One entry per slot the scheduler handled: when (the slot on the cron clock and the
wall-clock time it was handled), what came of it (``fired``, ``skipped`` or
``failed``, with the reason), and the job it started with that job's status.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jobfleet.api.cron import VIEW, clock_of
from jobfleet.api.routing import Call, add_own
from jobfleet.api.template_views import page, page_of, path_id


def firing_view(row: Any, wall_of: Any) -> dict[str, Any]:
    return {
        "cron_id": row.cron_id,
        # the slot on the cron clock and its wall-clock time, epoch seconds as crons use
        "slot": row.slot,
        "slot_time": int(wall_of(row.slot)),
        "handled_time": row.create_time // 1000,
        "outcome": row.outcome,
        "message": row.message,
        "node": row.node,
        "job_instance_id": row.job_instance_id,
        "job_status": row.job_status,
    }


async def get_cron_firings(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW)
    cron_id = path_id(call, "id")
    crons = call.services.crons
    # a cron of another scope does not exist for this caller
    await crons.get(scope.scope_type, scope.scope_id, cron_id)
    start, length = page(call.params)
    total, rows = await crons.history(cron_id, offset=start, limit=length)
    wall = clock_of(call.services).wall
    return page_of(start, length, total, [firing_view(r, wall) for r in rows])


def register(router: APIRouter) -> None:
    add_own(router, "GET", "/crons/{id}/firings", get_cron_firings)
