"""The console's cron pages: ``/crons`` (each cron's expression, plan, whether it is
enabled, its next run and its last run with the result, and a form to create one)
and ``/crons/<id>`` (the history of its firings, each with the job it started).

Times: a cron's slots are on the cron clock (``domain.cron.CronClock``), shown here in
wall-clock time. Changes (create, enable, disable, delete) are the page's script
calling bk-job's cron routes, so they are authorized and audited as API calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from jobfleet.api.console import plans_of
from jobfleet.api.cron import clock_of
from jobfleet.api.cron_firings import firing_view
from jobfleet.api.services import Services
from jobfleet.domain.errors import JobError
from jobfleet.domain.status import ScopeType
from jobfleet.web.headers import SecuredRoute
from jobfleet.web.pages import Page, _to_login
from jobfleet.web.paging import PAGE, number, offset_of

PageOf = Callable[[Request], Awaitable[Page | None]]


def routes(services: Services, page: PageOf) -> APIRouter:
    router = APIRouter(include_in_schema=False, route_class=SecuredRoute)
    store = services.crons

    def wall_ms(slot: int | None) -> int | None:
        """A slot on the cron clock as wall-clock epoch ms (the ``ms`` filter's unit)."""
        return None if slot is None else int(clock_of(services).wall(slot) * 1000)

    @router.get("/crons")
    async def crons(request: Request) -> Response:
        current = await page(request)
        if current is None:
            return _to_login(request)
        biz = await current.biz()
        q = request.query_params
        offset = offset_of(q)
        total, rows, plans = 0, list[Any](), list[Any]()
        last: dict[int, Any] = {}
        if biz is not None:
            total, rows = await store.page(
                ScopeType.BIZ, str(biz), offset=offset, limit=PAGE
            )
            last = await store.last_firings([r.id for r in rows])
            plans = await plans_of(services, biz, limit=1000)
        wall = clock_of(services).wall
        return await current.render(
            "crons.html",
            rows=rows,
            total=total,
            offset=offset,
            page=PAGE,
            last={k: firing_view(v, wall) for k, v in last.items()},
            plans=plans,
            plan_names={p.id: p.name for p in plans},
            # "new cron" from a plan's row preselects that plan
            chosen_plan=number(q.get("plan")),
            wall_ms=wall_ms,
        )

    @router.get("/crons/{cron_id}")
    async def cron(request: Request, cron_id: str) -> Response:
        current = await page(request)
        if current is None:
            return _to_login(request)
        biz = await current.biz()
        q = request.query_params
        offset = offset_of(q)
        try:
            if biz is None or not cron_id.isdecimal() or len(cron_id) > 18:
                raise JobError.invalid("id")
            row = await store.get(ScopeType.BIZ, str(biz), int(cron_id))
            total, firings = await store.history(row.id, offset=offset, limit=PAGE)
        except JobError:
            return await current.render("missing.html", what=cron_id)
        wall = clock_of(services).wall
        plan_names = {p.id: p.name for p in await plans_of(services, biz, limit=1000)}
        return await current.render(
            "cron.html",
            cron=row,
            plan_name=plan_names.get(row.plan_id, ""),
            firings=[firing_view(f, wall) for f in firings],
            total=total,
            offset=offset,
            page=PAGE,
            wall_ms=wall_ms,
        )

    return router
