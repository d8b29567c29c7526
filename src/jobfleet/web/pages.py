"""The console's pages. Reads go to the store through the API's services, with the
same business scopes as the API; every change is made by the page's script calling
the JSON API with the session cookie and its CSRF token, so it is validated,
authorized and audited exactly as an API call."""

from __future__ import annotations

import asyncio
import functools
import time
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, urlencode, urlparse

from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from jobfleet import __version__
from jobfleet.api import console_admin
from jobfleet.api.auditing import as_caller, refusal, source_of
from jobfleet.api.auth import CONSOLE_APP, SESSION_COOKIE, Caller
from jobfleet.api.console import job_views, plans_of, step_variables
from jobfleet.api.live import job_for
from jobfleet.api.services import Services
from jobfleet.api.targets import target_choices
from jobfleet.domain.approvals import approvers
from jobfleet.domain.errors import JobError
from jobfleet.domain.status import (
    FINISHED_RUN_STATUSES,
    HOST_STATUS_DESC,
    RUN_STATUS_DESC,
    HostStatus,
    RunStatus,
    ScopeType,
    StepType,
)
from jobfleet.domain.targets import normalize_ip
from jobfleet.web import admin_pages, approvals, i18n, paging
from jobfleet.web import output_groups as outputs
from jobfleet.web.cookies import secure_cookie
from jobfleet.web.headers import SecuredRoute

if TYPE_CHECKING:
    from jinja2 import Environment

SESSION_TTL = 12 * 3600.0
# an id in a console address: what a database column holds, no more
RowId = Annotated[int, Path(ge=0, le=2**63 - 1)]
# the history page looks back at most this many days
MAX_DAYS = 3650
PAGE = 100
AUDIT_PAGE = 200
STATIC = {
    "htmx.min.js": "text/javascript",
    "console.js": "text/javascript",
    "admin.js": "text/javascript",
    "catalog.js": "text/javascript",
    "console.css": "text/css",
}
OK_HOSTS = {int(HostStatus.SUCCESS), int(HostStatus.LAST_SUCCESS)}


def _ms(value: Any) -> str:
    if not value:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(value) / 1000))


def _plan_hosts(server: Any, shown: int = 20) -> str:
    """A host variable's own hosts in a line: its addresses (the first ``shown``), and
    how many of each other kind of target it names."""
    if not isinstance(server, dict):
        return ""
    ips = [
        (f"{h.get('bk_cloud_id')}:{h.get('ip')}" if h.get("bk_cloud_id") else str(h.get("ip")))
        for h in server.get("ip_list") or []
        if isinstance(h, dict)
    ]
    parts = [", ".join(ips[:shown]) + (f" … (+{len(ips) - shown})" if len(ips) > shown else "")]
    for key, word in (("host_id_list", "host ids"), ("dynamic_group_list", "dynamic groups"),
                      ("topo_node_list", "topology nodes")):
        if server.get(key):
            parts.append(f"{len(server[key])} {word}")
    return "; ".join(p for p in parts if p)


def _duration(start: Any, end: Any) -> str:
    if not start:
        return ""
    # an end before its start (or a start ahead of this server's clock) is clock skew
    # between agent and server or two servers: it took next to no time, not "-3 ms"
    millis = max(0, round((end or time.time() * 1000) - start))
    # a step of 28 ms did not take "0.0 s"
    return f"{millis} ms" if millis < 1000 else f"{millis / 1000:.1f} s"


# in English, the words the CLI and the SDK use, never the enums' constant names
RUN_NAMES = {int(s): RUN_STATUS_DESC.get(s, s.name) for s in RunStatus}
HOST_NAMES = {int(s): HOST_STATUS_DESC.get(s, s.name) for s in HostStatus}


@functools.cache
def _templates() -> Environment:
    # built on the first page asked for: Jinja2 holds ~4.5 MiB for the process's life,
    # and a server whose console nobody opens never needs it
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("jobfleet.web", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    env.filters["ms"] = _ms
    env.globals["duration"] = _duration
    env.globals["plan_hosts"] = _plan_hosts
    env.globals["run_status"] = lambda v: RUN_NAMES.get(int(v), str(v))
    env.globals["host_status"] = lambda v: HOST_NAMES.get(int(v), str(v))
    return env


class Page:
    """What every page knows: the services, the user, the language, the business."""

    def __init__(self, services: Services, request: Request, caller: Caller) -> None:
        self.services = services
        self.request = request
        self.caller = caller
        self.lang = i18n.pick(
            request.cookies.get(i18n.LANG_COOKIE), request.headers.get("accept-language", "")
        )
        self.words = i18n.translator(self.lang)

    async def businesses(self) -> list[dict[str, Any]]:
        found = await self.services.identity.list_businesses()
        return [b for b in found if self.caller.holds(ScopeType.BIZ, str(b["bk_biz_id"]))]

    async def biz(self) -> int | None:
        held = [int(b["bk_biz_id"]) for b in await self.businesses()]
        wanted = self.request.query_params.get("biz") or self.request.cookies.get("jobfleet_biz")
        # compared as text: the address may hold more digits than a number is read from
        chosen = [b for b in held if str(b) == wanted]
        return chosen[0] if chosen else held[0] if held else None

    async def render(self, name: str, **values: Any) -> HTMLResponse:
        session = self.request.state.session
        words = self.words
        run_status = i18n.status_namer(self.lang, RUN_NAMES, i18n.RUN_STATUS_ZH)
        html = _templates().get_template(name).render(
            t=lambda text: words.get(text, text),
            lang=self.lang,
            user=self.caller.user,
            csrf=session.csrf if session is not None else "",
            businesses=await self.businesses(),
            biz=await self.biz(),
            version=__version__,
            path=self.request.url.path,
            run_names={k: run_status(k) for k in RUN_NAMES},
            js_words={k: words.get(v, v) for k, v in i18n.SCRIPT_WORDS.items()},
            run_status=run_status,
            host_status=i18n.status_namer(self.lang, HOST_NAMES, i18n.HOST_STATUS_ZH),
            **values,
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (login, logout); the body size is bounded by the edge."""
    body = (await request.body())[:16384].decode(errors="replace")
    return {k: v[0] for k, v in parse_qs(body, max_num_fields=16).items()}


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True
    return urlparse(origin).netloc == request.headers.get("host", "")


def console_router(services: Services, *, cookie_secure: str = "auto") -> APIRouter:
    """The console; ``cookie_secure``: when its session cookie is marked Secure (cookies.py)."""
    router = APIRouter(include_in_schema=False, route_class=SecuredRoute)
    people = services.people
    group_cache = outputs.GroupCache()

    async def page(request: Request) -> Page | None:
        request.state.session = None
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie or people is None:
            return None
        session = await people.session(cookie)
        if session is None:
            return None
        request.state.session = session
        user = await services.identity.get_user(session.username)
        return Page(services, request, Caller(CONSOLE_APP.app_code, user, CONSOLE_APP))

    # static assets and languages ---------------------------------------------------
    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            return PlainTextResponse("not found", status_code=404)
        # read off the loop the agents share: every console page asks for these
        path = resources.files("jobfleet.web").joinpath("static", name)
        data = await asyncio.to_thread(path.read_bytes)
        return Response(
            data, media_type=STATIC[name], headers={"Cache-Control": "public, max-age=3600"}
        )

    @router.get("/lang/{lang}")
    async def set_lang(request: Request, lang: str) -> Response:
        back = request.headers.get("referer") or "/"
        response = RedirectResponse(back if _same_origin(request) else "/", status_code=303)
        if lang in i18n.LANGS:
            response.set_cookie(i18n.LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax")
        return response

    # login ------------------------------------------------------------------------
    @router.get("/login")
    async def login_form(request: Request) -> Response:
        lang = i18n.pick(
            request.cookies.get(i18n.LANG_COOKIE), request.headers.get("accept-language", "")
        )
        words = i18n.translator(lang)
        html = _templates().get_template("login.html").render(
            t=lambda text: words.get(text, text),
            lang=lang,
            error=request.query_params.get("error"),
            next=request.query_params.get("next", "/"),
            version=__version__,
        )
        return HTMLResponse(html)

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        username = str(form.get("username") or "")[:128]
        password = str(form.get("password") or "")[:1024]
        target = str(form.get("next") or "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        source = source_of(request)
        failures = services.auth.failures
        try:
            if not _same_origin(request):
                raise JobError.invalid("Origin", "a login from another site")
            failures.check(source)
            if people is None or not await people.check_password(username, password):
                failures.take(source)
                await services.audit.refused(
                    source_ip=source,
                    reason="console_login",
                    app_code="jobfleet-console",
                    username=username,
                    detail={"path": "/login"},
                )
                return RedirectResponse(
                    "/login?" + urlencode({"error": "1", "next": target}), status_code=303
                )
        except JobError as exc:
            await refusal(services.audit, request, exc)
            return PlainTextResponse(exc.message, status_code=exc.http_status or 400)
        value, _session = await people.open_session(username, SESSION_TTL)
        await services.audit.record(
            app_code="jobfleet-console",
            username=username,
            action="console_login",
            resource_type="user",
            resource_id=username,
            source_ip=source,
        )
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=int(SESSION_TTL),
            httponly=True,
            samesite="strict",
            secure=secure_cookie(cookie_secure, request),
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        current = await page(request)
        form = await _form(request)
        cookie = request.cookies.get(SESSION_COOKIE)
        session = request.state.session
        if current is not None and cookie and people is not None and session is not None:
            if str(form.get("csrf") or "") != session.csrf:
                return PlainTextResponse("wrong CSRF token", status_code=403)
            await people.close_session(cookie)
            await as_caller(
                services.audit,
                current.caller,
                request,
                "console_logout",
                "user",
                current.caller.username,
            )
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # pages ------------------------------------------------------------------------
    @router.get("/")
    async def home(request: Request) -> Response:
        current = await page(request)
        if current is None:
            return _to_login(request)
        biz = await current.biz()
        running: list[Any] = []
        failed: list[Any] = []
        if biz is not None:
            now = int(time.time() * 1000)
            _, running = await services.jobs.list_jobs(
                scope_type=ScopeType.BIZ,
                scope_id=str(biz),
                start_ms=now - 30 * 86400_000,
                end_ms=now,
                filters={"status": int(RunStatus.RUNNING)},
                offset=0,
                limit=20,
            )
            _, failed = await services.jobs.list_jobs(
                scope_type=ScopeType.BIZ,
                scope_id=str(biz),
                start_ms=now - 7 * 86400_000,
                end_ms=now,
                filters={"status": int(RunStatus.FAIL)},
                offset=0,
                limit=20,
            )
        held = [int(b["bk_biz_id"]) for b in await current.businesses()]
        alive = await services.inventory.alive_counts(held)
        waiting = await approvals.waiting_for(services, current.caller.username, held)
        return await current.render(
            "home.html", running=running, failed=failed, alive=alive, waiting=waiting
        )

    async def accounts_of(biz: int | None) -> list[Any]:
        """The execution accounts a launch form offers for the current business."""
        if biz is None:
            return []
        return [dict(a._mapping) for a in (await services.accounts.list(biz, limit=500))[1]]

    async def launch_form(request: Request, template: str) -> Response:
        """A launch form: the business's accounts and what its targets may name."""
        current = await page(request)
        if current is None:
            return _to_login(request)
        biz = await current.biz()
        choices = await target_choices(services, biz) if biz is not None else {}
        return await current.render(template, accounts=await accounts_of(biz), choices=choices)

    @router.get("/execute")
    async def execute(request: Request) -> Response:
        return await launch_form(request, "execute.html")

    @router.get("/files")
    async def files(request: Request) -> Response:
        return await launch_form(request, "files.html")

    @router.get("/jobs")
    async def jobs(request: Request) -> Response:
        current = await page(request)
        if current is None:
            return _to_login(request)
        biz = await current.biz()
        q = request.query_params
        filters: dict[str, Any] = {}
        # the address is the user's to edit: numbers past a column's range and NUL
        # characters (which PostgreSQL refuses in text) give an empty page, not an error
        for key in ("status", "launch_mode", "job_cron_id"):
            value = paging.number(q.get(key))
            if value is not None and (key == "job_cron_id" or value <= paging.MAX_OFFSET):
                filters[key] = value
        for key, longest in (("operator", 128), ("name", 512)):
            text = q.get(key, "").replace("\x00", "")[:longest]
            if text:
                filters[key] = text
        # a host's history (the hosts page links here); hosts are stored by the
        # address's normal form, and text that is no address matches no job
        ip = q.get("ip", "").replace("\x00", "")[:64].strip()
        if ip:
            try:
                filters["ip"] = normalize_ip(ip)
            except JobError:
                filters["ip"] = ip
        days = min(max(paging.number(q.get("days")) or 30, 1), MAX_DAYS)
        offset = paging.offset_of(q)
        total, rows = 0, list[Any]()
        if biz is not None:
            now = int(time.time() * 1000)
            total, rows = await services.jobs.list_jobs(
                scope_type=ScopeType.BIZ,
                scope_id=str(biz),
                start_ms=now - days * 86400_000,
                end_ms=now,
                filters=filters,
                offset=offset,
                limit=PAGE,
            )
        return await current.render(
            "jobs.html",
            rows=rows,
            total=total,
            offset=offset,
            page=PAGE,
            q=dict(q),
            statuses=list(RunStatus),
        )

    @router.get("/api_execute/{job_instance_id}")
    async def job_page(request: Request, job_instance_id: str) -> Response:
        current = await page(request)
        if current is None:
            return _to_login(request)
        wanted = paging.number(job_instance_id)
        if wanted is None:
            return await current.render("missing.html", what=job_instance_id)
        try:
            job = await job_for(services, current.caller, wanted)
        except JobError:
            return await current.render("missing.html", what=job_instance_id)
        steps = await services.jobs.steps(job.id)
        q = request.query_params
        chosen = next((s for s in steps if str(s.id) == q.get("step")), None)
        if chosen is None:
            started = [s for s in steps if s.start_time or s.status != RunStatus.BLANK]
            chosen = started[-1] if started else steps[0]
        views = job_views(services)
        groups = sorted(
            await views.groups(chosen.id, chosen.execute_count), key=lambda g: (g[2], g[0])
        )
        status = paging.number(q.get("status"))
        status = status if status is not None and status <= paging.MAX_OFFSET else None
        offset = paging.offset_of(q)
        total, hosts = await views.host_page(
            chosen.id,
            chosen.execute_count,
            status=status,
            ip=q.get("ip", "").replace("\x00", "")[:64],
            offset=offset,
            limit=PAGE,
        )
        # output groups already computed come with the page; others follow by htmx
        held = group_cache.peek((int(chosen.id), int(chosen.execute_count)))
        return await current.render(
            "job.html",
            output=None if held is None else outputs.shown(held, 50),
            output_more=0 if held is None else max(0, len(held.groups) - 50),
            job=job,
            steps=steps,
            step=chosen,
            variables=step_variables(job, steps, chosen),
            approvers=(
                approvers(job.operator, chosen.config)
                if chosen.type == StepType.MANUAL_CONFIRM
                else []
            ),
            groups=groups,
            hosts=hosts,
            total=total,
            offset=offset,
            page=PAGE,
            status=status,
            ip=q.get("ip", ""),
            finished=job.status in FINISHED_RUN_STATUSES,
            ok_hosts=OK_HOSTS,
        )

    async def grouped(step: Any) -> outputs.Grouping:
        """A step's output groups, from the cache when it holds them."""
        return await group_cache.get(
            (int(step.id), int(step.execute_count)),
            RunStatus(step.status).finished,
            lambda: outputs.group_step(services, int(step.id), int(step.execute_count)),
        )

    async def job_step(
        request: Request, job_id: int, step_id: int
    ) -> tuple[Page, Any, Any] | Response:
        """The page, job and step a console job route names, or the answer that it can't."""
        current = await page(request)
        if current is None:
            return PlainTextResponse("log in", status_code=401)
        try:
            job = await job_for(services, current.caller, job_id)
        except JobError:
            return PlainTextResponse("no such job", status_code=404)
        step = next((s for s in await services.jobs.steps(job.id) if s.id == step_id), None)
        if step is None:
            return PlainTextResponse("no such step", status_code=404)
        return current, job, step

    @router.get("/console/jobs/{job_id}/steps/{step_id}/output-groups")
    async def output_groups(request: Request, job_id: RowId, step_id: RowId) -> Response:
        found = await job_step(request, job_id, step_id)
        if isinstance(found, Response):
            return found
        current, job, step = found
        grouping = await grouped(step)
        return await current.render(
            "output_groups.html",
            groups=outputs.shown(grouping, 50),
            more=max(0, len(grouping.groups) - 50),
            step=step,
            job=job,
        )

    @router.get("/console/jobs/{job_id}/steps/{step_id}/output-groups/{index}/ips")
    async def output_group_ips(
        request: Request, job_id: RowId, step_id: RowId, index: RowId
    ) -> Response:
        found = await job_step(request, job_id, step_id)
        if isinstance(found, Response):
            return found
        _current, _job, step = found
        grouping = await grouped(step)
        if not 0 <= index < len(grouping.groups):
            return PlainTextResponse("no such group", status_code=404)
        return PlainTextResponse("\n".join(grouping.groups[index].ips))

    @router.get("/console/jobs/{job_id}/steps/{step_id}/ips")
    async def group_ips(request: Request, job_id: RowId, step_id: RowId) -> Response:
        found = await job_step(request, job_id, step_id)
        if isinstance(found, Response):
            return found
        _current, _job, step = found
        q = request.query_params
        status = paging.number(q.get("status"))
        statuses = [status] if status is not None and status <= paging.MAX_OFFSET else None
        rows = await services.jobs.hosts(step.id, step.execute_count, statuses=statuses)
        return PlainTextResponse("\n".join(str(r.ip) for r in rows))

    @router.get("/console/jobs/{job_id}/steps/{step_id}/hosts/{host_id}/log")
    async def host_log(request: Request, job_id: RowId, step_id: RowId, host_id: RowId) -> Response:
        found = await job_step(request, job_id, step_id)
        if isinstance(found, Response):
            return found
        _current, _job, step = found
        logs = await services.jobs.logs(step.id, step.execute_count, [host_id])
        return PlainTextResponse(logs.get(host_id, ""))

    @router.get("/plans")
    async def plans(request: Request) -> Response:
        current = await page(request)
        if current is None:
            return _to_login(request)
        biz = await current.biz()
        rows: list[Any] = []
        if biz is not None:
            rows = await plans_of(services, biz)
        return await current.render("plans.html", rows=rows)

    @router.get("/api_plan/{plan_id}")
    async def plan_page(request: Request, plan_id: str) -> Response:
        current = await page(request)
        if current is None:
            return _to_login(request)
        biz = await current.biz()
        wanted = paging.number(plan_id)
        if wanted is None:
            return await current.render("missing.html", what=plan_id)
        try:
            plan = await services.job_plans.get_plan({biz} if biz else set(), wanted)
        except JobError:
            return await current.render("missing.html", what=plan_id)
        variables = [v.public() for v in services.job_plans.variables(plan)]
        steps = [s for s in plan.steps if s.get("enabled", True)]
        return await current.render("plan.html", plan=plan, variables=variables, steps=steps)

    @router.get("/audit")
    async def audit_page(request: Request) -> Response:
        current = await page(request)
        if current is None:
            return _to_login(request)
        rows, held = await console_admin.audit_entries(services, current.caller, AUDIT_PAGE)
        scopes = None if held is None else [f"{t} {i}" for t, i in held]
        return await current.render("audit.html", rows=rows, scopes=scopes)

    admin_pages.register(router, services, page, _to_login)
    # scripts, templates and crons: their own modules (they import this one)
    from jobfleet.web import catalog, crons, scripts

    router.include_router(scripts.routes(services, page))
    router.include_router(catalog.routes(services, page))
    router.include_router(crons.routes(services, page))
    return router
