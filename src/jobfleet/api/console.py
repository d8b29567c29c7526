"""What the web console reads through the API layer (web/ imports api and domain only)."""

from __future__ import annotations

from typing import Any

from jobfleet.api.services import Services
from jobfleet.store.job_views import JobViews
from jobfleet.store.templates import ListFilter

__all__ = ["JobViews", "job_views", "plans_of"]


def job_views(services: Services) -> JobViews:
    return JobViews(services.db)


async def plans_of(services: Services, biz: int, limit: int = 200) -> list[Any]:
    _total, rows = await services.job_plans.list_plans({biz}, ListFilter(), limit=limit)
    return rows
