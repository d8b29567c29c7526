"""What the template, plan and YAML routes share: bk-job's IAM action names, paging and
filter parameters, and templates as the API shows them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from jobfleet.api.params import get_int, get_str
from jobfleet.api.routing import Call
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import ScopeType
from jobfleet.domain.templates import public_steps
from jobfleet.engine.submit import Scope
from jobfleet.store.database import change_stamps
from jobfleet.store.templates import ListFilter, TemplateStore

# bk-job's IAM action ids, named in permission errors
VIEW_TEMPLATE = "view_job_template"
CREATE_TEMPLATE = "create_job_template"
EDIT_TEMPLATE = "edit_job_template"
DELETE_TEMPLATE = "delete_job_template"
VIEW_PLAN = "view_job_plan"
CREATE_PLAN = "create_job_plan"
EDIT_PLAN = "edit_job_plan"
DELETE_PLAN = "delete_job_plan"
SYNC_PLAN = "sync_plan"


def page(params: dict[str, Any]) -> tuple[int, int]:
    start = get_int(params, "start", default=0, minimum=0) or 0
    length = get_int(params, "length", default=20, minimum=1, maximum=1000) or 20
    return start, length


def list_filter(params: dict[str, Any]) -> ListFilter:
    return ListFilter(
        creator=get_str(params, "creator"),
        name=get_str(params, "name", max_length=512),
        create_time_start=get_int(params, "create_time_start"),
        create_time_end=get_int(params, "create_time_end"),
        last_modify_user=get_str(params, "last_modify_user"),
        last_modify_time_start=get_int(params, "last_modify_time_start"),
        last_modify_time_end=get_int(params, "last_modify_time_end"),
    )


def path_id(call: Call, name: str) -> int:
    raw = call.request.path_params.get(name, call.params.get(name))
    value = get_int({name: raw}, name, required=True, minimum=1)
    assert value is not None
    return value


async def biz_scope(call: Call, action: str) -> Scope:
    """The scope a template is created in: one business."""
    scope = await call.scope(action)
    if scope.scope_type != ScopeType.BIZ:
        raise JobError(
            ErrorCode.NOT_SUPPORTED,
            f"Job templates belong to a business: use bk_scope_type biz, not {scope.scope_type}",
        )
    return scope


def page_of(start: int, length: int, total: int, data: list[Any]) -> dict[str, Any]:
    return {"start": start, "length": length, "total": total, "data": data}


def scope_fields(bk_biz_id: int) -> dict[str, Any]:
    return {"bk_biz_id": bk_biz_id, "bk_scope_type": ScopeType.BIZ, "bk_scope_id": str(bk_biz_id)}


def template_item(row: Row[Any]) -> dict[str, Any]:
    """A template in a list (bk-job §5.1)."""
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        **change_stamps(row),
        **scope_fields(row.bk_biz_id),
    }


def template_view(store: TemplateStore, row: Row[Any]) -> dict[str, Any]:
    """A whole template as jobfleet's own API shows it: scripts in plain text, secrets masked."""
    return {
        **template_item(row),
        "version": row.version,
        "step_list": public_steps(store.steps(row)),
        "global_var_list": [v.public() for v in store.variables(row)],
    }
