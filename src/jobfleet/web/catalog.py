"""The console's template pages: ``/templates`` (the business's templates, and a YAML
document to import) and ``/templates/<id>`` (steps, variables, plans with whether each
needs a sync, the YAML export). Plans are at ``/plans`` and bk-job's ``/api_plan/<id>``
(web/pages.py).

Reads use the store through the API's services in the caller's business; changes (an
import, a sync) are the page's script calling jobfleet's template routes, so they are
authorized and audited as API calls. The export is the API's own YAML route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from jobfleet.api.services import Services
from jobfleet.api.template_views import list_filter
from jobfleet.domain.errors import JobError
from jobfleet.domain.status import ScriptLanguage, StepType, VariableType
from jobfleet.domain.templates import public_steps
from jobfleet.web.headers import SecuredRoute
from jobfleet.web.pages import Page, _to_login
from jobfleet.web.paging import PAGE, offset_of

PageOf = Callable[[Request], Awaitable[Page | None]]
STEP_TYPES = {int(x): x.name.lower() for x in StepType}
VARIABLE_TYPES = {int(x): x.name.lower() for x in VariableType}
LANGUAGES = {int(x): x.name.lower() for x in ScriptLanguage}


def _targets(server: Any) -> str:
    if not isinstance(server, dict):
        return ""
    if server.get("variable"):
        return "${" + str(server["variable"]) + "}"
    parts = []
    for key in ("ip_list", "host_id_list", "dynamic_group_list", "topo_node_list"):
        if server.get(key):
            parts.append(f"{key.removesuffix('_list')}: {len(server[key])}")
    return ", ".join(parts)


def step_summary(step: dict[str, Any]) -> dict[str, str]:
    """What a step does and where, in a line each."""
    script = step.get("script_info")
    if script:
        if script.get("script_id"):
            what = f"script {script['script_id']} v{script.get('script_version_id') or ''}"
        else:
            first = (script.get("script_content") or "").strip().splitlines()
            what = first[0][:120] if first else ""
        language = LANGUAGES.get(script.get("script_language") or 0, "")
        return {"what": f"{language}: {what}", "where": _targets(script.get("server"))}
    files = step.get("file_info")
    if files:
        dest = files.get("file_destination") or {}
        sources = sum(len(s.get("file_list") or []) for s in files.get("file_source_list") or [])
        what = f"{sources} → {dest.get('path') or ''}"
        return {"what": what, "where": _targets(dest.get("server"))}
    approval = step.get("approval_info") or {}
    return {"what": str(approval.get("approval_message") or ""), "where": ""}


def routes(services: Services, page: PageOf) -> APIRouter:
    router = APIRouter(include_in_schema=False, route_class=SecuredRoute)

    @router.get("/templates")
    async def templates(request: Request) -> Response:
        current = await page(request)
        if current is None:
            return _to_login(request)
        biz = await current.biz()
        q = request.query_params
        offset = offset_of(q)
        total, rows = 0, list[Any]()
        if biz is not None:
            wanted = (q.get("name") or "")[:512].replace("\x00", "")
            filters = list_filter({"name": wanted or None})
            total, rows = await services.templates.list_templates(
                {biz}, filters, offset, PAGE
            )
        return await current.render(
            "templates.html",
            rows=rows,
            total=total,
            offset=offset,
            page=PAGE,
            wanted=q.get("name", ""),
        )

    @router.get("/biz/{biz_id}/task_manage/create")
    async def create_link(request: Request, biz_id: str) -> Response:
        """bk-job's "new job template" address, which bk-monitor's job action links to:
        templates are made through the API, the CLI or an import, so it leads to the
        business's templates."""
        current = await page(request)
        if current is None:
            return _to_login(request)
        # only digits go into the address it leads to; biz() falls back to a held business
        digits = biz_id.isascii() and biz_id.isdecimal() and len(biz_id) <= 18
        wanted = f"?{urlencode({'biz': biz_id})}" if digits else ""
        return RedirectResponse(f"/templates{wanted}", status_code=303)

    @router.get("/templates/{template_id}")
    async def template(request: Request, template_id: str) -> Response:
        current = await page(request)
        if current is None:
            return _to_login(request)
        biz = await current.biz()
        store, plan_store = services.templates, services.job_plans
        try:
            if biz is None or not template_id.isdecimal() or len(template_id) > 18:
                raise JobError.invalid("template_id")
            row = await store.get_template({biz}, int(template_id))
            _total, plans = await plan_store.list_plans(
                {biz}, list_filter({}), template_id=row.id, limit=1000
            )
        except JobError:
            return await current.render("missing.html", what=template_id)
        steps = public_steps(store.steps(row))
        return await current.render(
            "template.html",
            template=row,
            steps=[(s, step_summary(s)) for s in steps],
            variables=[v.public() for v in store.variables(row)],
            plans=plans,
            step_types=STEP_TYPES,
            variable_types=VARIABLE_TYPES,
        )

    return router
