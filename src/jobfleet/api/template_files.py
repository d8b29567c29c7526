"""Job templates as YAML documents: export one with its plans, import one as a new
template or over the one of the same name (docs/templates.md)."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.responses import Response

from jobfleet.api.auditing import audit
from jobfleet.api.params import get_bool, get_str
from jobfleet.api.routing import MAX_BODY, Call
from jobfleet.api.template_views import (
    CREATE_TEMPLATE,
    VIEW_TEMPLATE,
    biz_scope,
    path_id,
    template_view,
)
from jobfleet.domain import template_files
from jobfleet.domain.errors import ErrorCode, JobError

YAML_TYPE = "application/yaml"


async def export_template(call: Call) -> Response:
    scope = await call.scope(VIEW_TEMPLATE)
    store, plan_store = call.services.templates, call.services.job_plans
    row = await store.get_template(scope.biz_ids, path_id(call, "id"))
    plans = [
        (p.name, p.description, *plan_store.exported_plan(p, row))
        for p in await plan_store.plans_of(row.id)
    ]
    document = template_files.build(
        row.name, row.description, store.steps(row), store.variables(row), plans
    )
    # the YAML text itself, as a file to save; an error still answers the envelope
    return Response(
        template_files.dump(document),
        media_type=YAML_TYPE,
        headers={"Content-Disposition": f'attachment; filename="template-{row.id}.yaml"'},
    )


async def import_template(call: Call) -> dict[str, Any]:
    scope = await biz_scope(call, CREATE_TEMPLATE)
    store = call.services.templates
    body = await call.request.body()
    if len(body) > MAX_BODY:
        raise JobError(ErrorCode.BAD_REQUEST, f"Request body larger than {MAX_BODY} bytes")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise JobError(ErrorCode.BAD_REQUEST, "The template document is not UTF-8") from None
    doc = template_files.load(text)
    renamed = get_str(call.params, "name", max_length=1024)
    if renamed is not None and renamed.strip():
        # import a copy under another name than the document's
        doc = dataclasses.replace(doc, name=renamed.strip())
    update = get_bool(call.params, "update")
    result = await call.services.template_import.import_template(
        scope.bk_biz_id, doc, update_existing=update, user=call.caller.username
    )
    plans = [{"id": p.id, "name": p.name, "created": p.created} for p in result.plans]
    await audit(
        call,
        "import_job_template",
        "job_template",
        result.template_id,
        scope=scope,
        detail={"name": doc.name, "created": result.created, "plans": plans},
    )
    row = await store.get_template(scope.biz_ids, result.template_id)
    return {"created": result.created, "template": template_view(store, row), "plans": plans}
