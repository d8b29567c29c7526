"""What the web console reads through the API layer (web/ imports api and domain only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobfleet.api.services import Services
from jobfleet.engine.variables import public_values
from jobfleet.store.job_views import JobViews
from jobfleet.store.templates import ListFilter

__all__ = ["JobViews", "job_views", "plans_of", "step_variables"]


def job_views(services: Services) -> JobViews:
    return JobViews(services.db)


async def plans_of(services: Services, biz: int, limit: int = 200) -> list[Any]:
    _total, rows = await services.job_plans.list_plans({biz}, ListFilter(), limit=limit)
    return rows


def step_variables(job: Any, steps: Sequence[Any], step: Any) -> list[dict[str, Any]]:
    """A step's variables as the page shows them, passwords masked: the value it ran
    with (the latest earlier step's snapshot, else the job's) and, when it changed
    them, the value it left (``after``)."""
    if job.variables is None:
        return []
    before = job.variables
    for other in steps:
        if other.step_order < step.step_order and other.variables is not None:
            before = other.variables
    after = {v["name"]: v for v in public_values(step.variables or [])}
    shown = []
    for var in public_values(before):
        changed = after.get(var["name"])
        if changed is not None and changed.get("value") != var.get("value"):
            var["after"] = changed.get("value")
        shown.append(var)
    return shown
