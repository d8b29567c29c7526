"""The console's administration pages: hosts (topology, dynamic groups, agent state,
revoke), execution and database accounts, dangerous-statement rules, and the
business's notification configs.

As on every page, reads go through the API layer for the business the caller holds,
and every change is the page's script calling the JSON API (web/static/admin.js)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from jobfleet.api import console_admin
from jobfleet.api.console_admin import STATES, HostQuery
from jobfleet.api.services import Services
from jobfleet.domain.dangerous import RuleAction
from jobfleet.domain.status import (
    FINISHED_RUN_STATUSES,
    AccountCategory,
    AccountType,
    ScriptLanguage,
)

if TYPE_CHECKING:
    from jobfleet.web.pages import Page

HOST_PAGE = 100
STATE_NAMES = {"alive": "Alive", "dead": "Dead", "none": "Not installed"}
MAX_TEXT = 128

PageOf = Callable[[Request], Awaitable["Page | None"]]
ToLogin = Callable[[Request], Response]


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdecimal() and len(value) < 19 else None


def _text(value: str | None) -> str:
    # PostgreSQL refuses NUL in text: a filter cannot hold one
    return (value or "").replace("\x00", "")[:MAX_TEXT]


def host_query(biz: int, q: Any, members: list[int] | None) -> HostQuery:
    state = q.get("state")
    return HostQuery(
        bk_biz_id=biz,
        set_id=_int(q.get("set")),
        module_id=_int(q.get("module")),
        text=_text(q.get("q")),
        label=_text(q.get("label")),
        state=state if state in STATES else None,
        host_ids=members,
    )


def register(router: APIRouter, services: Services, page: PageOf, to_login: ToLogin) -> None:
    """Add the pages to the console's router."""

    @router.get("/hosts")
    async def hosts(request: Request) -> Response:
        current = await page(request)
        if current is None:
            return to_login(request)
        biz = await current.biz()
        q = request.query_params
        values: dict[str, Any] = {
            "tree": [],
            "groups": [],
            "counts": dict.fromkeys(STATES, 0),
            "rows": [],
            "total": 0,
            "offset": 0,
            "page": HOST_PAGE,
            "q": dict(q),
            "states": STATES,
            "state_names": STATE_NAMES,
            "group": None,
        }
        if biz is not None:
            pages = console_admin.host_pages(services)
            groups = await console_admin.groups_of(services, biz)
            chosen = next((g for g in groups if g["id"] == q.get("group")), None)
            members = None
            if chosen is not None:
                members = await console_admin.group_members(services, biz, chosen["id"])
            query = host_query(biz, q, members)
            offset = _int(q.get("offset")) or 0
            total, rows = await pages.page(query, offset, HOST_PAGE)
            values.update(
                tree=await pages.tree(biz),
                groups=groups,
                group=chosen,
                counts=await pages.counts(query),
                rows=rows,
                total=total,
                offset=offset,
            )
        return await current.render("hosts.html", **values)

    @router.get("/accounts")
    async def accounts(request: Request) -> Response:
        current = await page(request)
        if current is None:
            return to_login(request)
        biz = await current.biz()
        rows = await console_admin.accounts_of(services, biz) if biz is not None else []
        return await current.render(
            "accounts.html",
            rows=rows,
            system=[r for r in rows if r["category"] == AccountCategory.SYSTEM],
            types={int(t): t.name.title() for t in AccountType},
            db_types=[t for t in AccountType if t not in (AccountType.LINUX, AccountType.WINDOWS)],
            DB=int(AccountCategory.DB),
        )

    @router.get("/dangerous-rules")
    async def dangerous_rules(request: Request) -> Response:
        current = await page(request)
        if current is None:
            return to_login(request)
        rows = await services.rules.search()
        return await current.render(
            "dangerous_rules.html",
            rows=rows,
            languages={int(x): x.name.lower() for x in ScriptLanguage},
            actions={int(a): a.name for a in RuleAction},
            admin=current.caller.is_admin,
        )

    @router.get("/notifications")
    async def notifications(request: Request) -> Response:
        current = await page(request)
        if current is None:
            return to_login(request)
        biz = await current.biz()
        rows = (
            await console_admin.notify_configs(services, biz, whole_url=current.caller.is_admin)
            if biz is not None
            else []
        )
        return await current.render(
            "notifications.html",
            rows=rows,
            channels=console_admin.CHANNELS,
            finals=sorted(int(s) for s in FINISHED_RUN_STATUSES),
            mail_relay=services.mail_relay,
        )
