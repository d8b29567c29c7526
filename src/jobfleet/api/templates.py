"""Job templates: bk-job's ``get_job_template_list`` (§5.1) and jobfleet's own
``/templates`` routes under ``/api/jobfleet/v1`` (docs/templates.md). ``register`` serves
the plan routes (api/job_plans.py) and the YAML routes (api/template_files.py) too, in
one order: ``/templates/import`` before ``/templates/{id}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jobfleet.api import job_plans, template_files
from jobfleet.api.auditing import audit
from jobfleet.api.params import get_bool
from jobfleet.api.routing import OWN_PREFIX, Call, Handler, add_api, make_endpoint, services_of
from jobfleet.api.template_views import (
    CREATE_TEMPLATE,
    DELETE_TEMPLATE,
    EDIT_TEMPLATE,
    VIEW_TEMPLATE,
    biz_scope,
    list_filter,
    page,
    page_of,
    path_id,
    template_item,
    template_view,
)


async def get_job_template_list(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW_TEMPLATE)
    start, length = page(call.params)
    total, rows = await call.services.templates.list_templates(
        scope.biz_ids, list_filter(call.params), start, length
    )
    return page_of(start, length, total, [template_item(r) for r in rows])


async def create_template(call: Call) -> dict[str, Any]:
    scope = await biz_scope(call, CREATE_TEMPLATE)
    p, store = call.params, call.services.templates
    template_id = await store.create_template(
        scope.bk_biz_id,
        p.get("name"),
        p.get("description"),
        p.get("step_list"),
        p.get("global_var_list"),
        call.caller.username,
    )
    await audit(call, "create_job_template", "job_template", template_id, scope=scope)
    return template_view(store, await store.get_template(scope.biz_ids, template_id))


async def list_templates(call: Call) -> dict[str, Any]:
    return await get_job_template_list(call)


async def get_template(call: Call) -> dict[str, Any]:
    scope = await call.scope(VIEW_TEMPLATE)
    store = call.services.templates
    return template_view(store, await store.get_template(scope.biz_ids, path_id(call, "id")))


async def update_template(call: Call) -> dict[str, Any]:
    scope = await call.scope(EDIT_TEMPLATE)
    p, store = call.params, call.services.templates
    template_id = path_id(call, "id")
    row = await store.update_template(
        scope.biz_ids,
        template_id,
        p.get("name"),
        p.get("description"),
        p.get("step_list"),
        p.get("global_var_list"),
        call.caller.username,
    )
    await audit(
        call,
        "update_job_template",
        "job_template",
        template_id,
        scope=scope,
        detail={"version": row.version},
    )
    return template_view(store, row)


async def delete_template(call: Call) -> dict[str, Any]:
    scope = await call.scope(DELETE_TEMPLATE)
    template_id = path_id(call, "id")
    row, plan_ids = await call.services.templates.delete_template(
        scope.biz_ids, template_id, cascade=get_bool(call.params, "cascade")
    )
    await audit(
        call,
        "delete_job_template",
        "job_template",
        template_id,
        scope=scope,
        detail={"name": row.name, "deleted_plan_ids": plan_ids},
    )
    return {"id": template_id, "deleted_plan_ids": plan_ids}


def register(router: APIRouter) -> None:
    add_api(router, "get_job_template_list", get_job_template_list, query=True)
    add_api(router, "get_job_plan_list", job_plans.get_job_plan_list, query=True)
    add_api(router, "get_job_plan_detail", job_plans.get_job_plan_detail, query=True)

    def add(
        method: str, path: str, handler: Handler, *, raw_body: bool = False, unchecked: bool = False
    ) -> None:
        router.add_api_route(
            OWN_PREFIX + path,
            make_endpoint(services_of, handler, raw_body=raw_body, unchecked=unchecked),
            methods=[method],
            name=f"{method} {path}",
        )

    add("POST", "/templates", create_template)
    add("GET", "/templates", list_templates)
    add("POST", "/templates/import", template_files.import_template, raw_body=True)
    add("GET", "/templates/{id}", get_template)
    add("PUT", "/templates/{id}", update_template)
    add("DELETE", "/templates/{id}", delete_template)
    add("POST", "/templates/{id}/plans", job_plans.create_plan)
    add("GET", "/templates/{id}/plans", job_plans.list_plans)
    add("GET", "/plans/{id}", job_plans.get_plan)
    add("PUT", "/plans/{id}", job_plans.update_plan)
    add("DELETE", "/plans/{id}", job_plans.delete_plan)
    add("POST", "/plans/{id}/sync", job_plans.sync_plan)
    add("GET", "/templates/{id}/export", template_files.export_template, unchecked=True)
