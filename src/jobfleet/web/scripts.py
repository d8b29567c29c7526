"""The console's script pages: business scripts (``/scripts``) and public scripts
(``/public-scripts``), a script's versions with an editor for drafts, publishing and
disabling, and the difference between two versions.

Reads use the store through the API's services with the caller's business; every
change is the page's script calling the bk-job script routes, so it is authorized
(public scripts by administrators only) and audited as an API call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from jobfleet.api.services import Services
from jobfleet.domain.errors import JobError
from jobfleet.domain.status import ScriptLanguage, ScriptVersionStatus
from jobfleet.web import diffs
from jobfleet.web.headers import SecuredRoute
from jobfleet.web.pages import Page, _to_login
from jobfleet.web.paging import PAGE, number, offset_of

PageOf = Callable[[Request], Awaitable[Page | None]]
LANGUAGES = {int(x): x.name.lower() for x in ScriptLanguage}
STATUSES = {int(x): x.name.lower() for x in ScriptVersionStatus}


def _text(value: str | None, limit: int) -> str | None:
    """A filter or id from the address: bounded, and without NUL (no database holds it)."""
    text = (value or "")[:limit]
    return None if not text or "\x00" in text else text


class Kind:
    """Business scripts or public scripts: where they live and who may change them."""

    def __init__(self, public: bool) -> None:
        self.public = public
        self.base = "/public-scripts" if public else "/scripts"

    async def owner(self, current: Page) -> tuple[bool, int | None]:
        """Whether the caller may read this kind, and the owner to read: a business
        the caller holds, or None for the public scripts."""
        if self.public:
            return True, None
        biz = await current.biz()
        return biz is not None, biz

    def editable(self, current: Page) -> bool:
        return current.caller.is_admin if self.public else True


def routes(services: Services, page: PageOf) -> APIRouter:
    router = APIRouter(include_in_schema=False, route_class=SecuredRoute)
    store = services.scripts

    async def script_list(request: Request, kind: Kind) -> Response:
        current = await page(request)
        if current is None:
            return _to_login(request)
        allowed, owner = await kind.owner(current)
        q = request.query_params
        offset = offset_of(q)
        total, rows = 0, list[dict[str, Any]]()
        if allowed:
            total, rows = await store.list_scripts(
                owner,
                name=_text(q.get("name"), 60),
                tag=_text(q.get("tag"), 32),
                offset=offset,
                limit=PAGE,
            )
        names = await store.version_names(
            [r["online_script_version_id"] for r in rows if r["online_script_version_id"]]
        )
        online = {r["id"]: names.get(r["online_script_version_id"] or 0, "") for r in rows}
        return await current.render(
            "scripts.html",
            kind=kind,
            rows=rows,
            online=online,
            total=total,
            offset=offset,
            page=PAGE,
            wanted=q.get("name", ""),
            tag=q.get("tag", ""),
            languages=LANGUAGES,
            editable=allowed and kind.editable(current),
        )

    async def script_page(request: Request, kind: Kind, script_id: str) -> Response:
        current = await page(request)
        if current is None:
            return _to_login(request)
        allowed, owner = await kind.owner(current)
        try:
            wanted = _text(script_id, 1024)
            if not allowed or wanted is None:
                raise JobError.invalid("script_id")
            script = await store.get_script(owner, wanted)
            _total, versions = await store.list_versions(
                owner, script["id"], content=True, limit=1000
            )
        except JobError:
            return await current.render("missing.html", what=script_id)
        q = request.query_params
        by_id = {v["id"]: v for v in versions}
        chosen = by_id.get(number(q.get("version")) or 0)
        if chosen is None and versions:
            drafts = [v for v in versions if v["status"] == ScriptVersionStatus.DRAFT]
            online = [v for v in versions if v["status"] == ScriptVersionStatus.ONLINE]
            chosen = (drafts or online or versions)[0]
        old, new = by_id.get(number(q.get("a")) or 0), by_id.get(number(q.get("b")) or 0)
        mode = "unified" if q.get("mode") == "unified" else "side"
        diff: dict[str, Any] | None = None
        if old is not None and new is not None:
            diff = {
                "old": old,
                "new": new,
                "rows": diffs.side_by_side(old["content"] or "", new["content"] or ""),
                "lines": diffs.unified(
                    old["content"] or "", new["content"] or "", old["version"], new["version"]
                ),
            }
        return await current.render(
            "script.html",
            kind=kind,
            script=script,
            versions=versions,
            chosen=chosen,
            diff=diff,
            mode=mode,
            languages=LANGUAGES,
            statuses=STATUSES,
            editable=kind.editable(current),
        )

    def serve(kind: Kind) -> None:
        async def listing(request: Request) -> Response:
            return await script_list(request, kind)

        async def detail(request: Request, script_id: str) -> Response:
            return await script_page(request, kind, script_id)

        router.add_api_route(kind.base, listing, methods=["GET"])
        router.add_api_route(kind.base + "/{script_id}", detail, methods=["GET"])

    serve(Kind(False))
    serve(Kind(True))
    return router
