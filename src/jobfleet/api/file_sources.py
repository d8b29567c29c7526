"""bk-job v3 credentials and third-party file sources: create, update, detail."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jobfleet.api.auditing import audit
from jobfleet.api.routing import Call, add_api
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.file_sources import (
    MAX_NAME,
    check_access_params,
    check_code,
    check_source_type,
    credential_fits,
    credential_values,
)
from jobfleet.engine.submit import Scope
from jobfleet.store.file_sources import credential_view, file_source_view


def _text(call: Call, name: str, limit: int) -> str | None:
    value = call.params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise JobError.invalid(name, "must be a string")
    if len(value) > limit:
        raise JobError.invalid(name, f"longer than {limit} characters")
    return value


async def _record(call: Call, scope: Scope, action: str, kind: str, ident: Any) -> None:
    await audit(call, action, kind, ident, scope=scope)


def _with_scope(view: dict[str, Any], scope: Scope) -> dict[str, Any]:
    return {**view, **scope.public()}


# credentials ----------------------------------------------------------------
async def create_credential(call: Call) -> dict[str, Any]:
    scope = await call.scope("create_ticket")
    name = _text(call, "name", MAX_NAME)
    if not name or not name.strip():
        raise JobError.invalid("name", "name cannot be null or blank")
    type_ = _text(call, "type", 32)
    values = credential_values(type_, call.params)
    assert type_ is not None
    row = await call.services.file_sources.create_credential(
        scope.bk_biz_id,
        name=name,
        type_=type_,
        description=_text(call, "description", 1024) or "",
        values=values,
        user=call.caller.username,
    )
    await _record(call, scope, "create_credential", "credential", row.id)
    return {"id": row.id, "name": row.name}


async def update_credential(call: Call) -> dict[str, Any]:
    scope = await call.scope("manage_ticket")
    credential_id = _text(call, "id", 32)
    if not credential_id or not credential_id.strip():
        raise JobError.invalid("id", "id cannot be null or blank")
    type_ = _text(call, "type", 32)
    values = credential_values(type_, call.params) if type_ else None
    store = call.services.file_sources
    if type_:
        # a source's downloads would find none of the values they sign with
        for source in await store.sources_of(scope.bk_biz_id, credential_id):
            if not credential_fits(source.type, type_):
                raise JobError.invalid(
                    "type",
                    f"file source [{source.code}] ({source.type}) uses this credential "
                    f"and cannot use a {type_} credential",
                )
    row = await store.update_credential(
        scope.bk_biz_id,
        credential_id,
        user=call.caller.username,
        name=_text(call, "name", MAX_NAME),
        type_=type_,
        description=_text(call, "description", 1024),
        values=values,
    )
    await _record(call, scope, "update_credential", "credential", row.id)
    return {"id": row.id, "name": row.name}


async def get_credential_detail(call: Call) -> dict[str, Any]:
    scope = await call.scope("use_ticket")
    credential_id = _text(call, "id", 32)
    if not credential_id:
        raise JobError.missing("id")
    row = await call.services.file_sources.credential(scope.bk_biz_id, credential_id)
    return _with_scope(credential_view(row), scope)


# file sources ---------------------------------------------------------------
async def _source_values(call: Call, scope: Scope) -> dict[str, Any]:
    p = call.params
    alias = _text(call, "alias", MAX_NAME)
    if not alias or not alias.strip():
        raise JobError.missing("alias")
    type_ = check_source_type(p.get("type"))
    credential_id = _text(call, "credential_id", 32)
    if not credential_id:
        raise JobError.missing("credential_id")
    credential = await call.services.file_sources.credential(scope.bk_biz_id, credential_id)
    if not credential_fits(type_, credential.type):
        raise JobError.invalid(
            "credential_id", f"a {type_} file source cannot use a {credential.type} credential"
        )
    return {
        "alias": alias,
        "type": type_,
        "access_params": check_access_params(type_, p.get("access_params")),
        "credential_id": credential_id,
        "file_prefix": _text(call, "file_prefix", MAX_NAME) or "",
    }


async def create_file_source(call: Call) -> dict[str, Any]:
    scope = await call.scope("create_file_source")
    code = check_code(call.params.get("code"))
    values = await _source_values(call, scope)
    row = await call.services.file_sources.create_source(
        scope.bk_biz_id, {"code": code, **values}, call.caller.username
    )
    await _record(call, scope, "create_file_source", "file_source", row.id)
    return {"id": row.id}


async def update_file_source(call: Call) -> dict[str, Any]:
    scope = await call.scope("manage_file_source")
    code = check_code(call.params.get("code"))
    if await call.services.file_sources.source_by_code(scope.bk_biz_id, code) is None:
        raise JobError(
            ErrorCode.FILE_SOURCE_NOT_FOUND_BY_CODE, f"Cannot find file source by code [{code}]"
        )
    values = await _source_values(call, scope)
    row = await call.services.file_sources.update_source(
        scope.bk_biz_id, code, values, call.caller.username
    )
    await _record(call, scope, "update_file_source", "file_source", row.id)
    return {"id": row.id}


async def get_file_source_detail(call: Call) -> dict[str, Any]:
    scope = await call.scope("view_file_source")
    code = check_code(call.params.get("code"))
    row = await call.services.file_sources.source_by_code(scope.bk_biz_id, code)
    if row is None:
        raise JobError(
            ErrorCode.FILE_SOURCE_NOT_FOUND_BY_CODE, f"Cannot find file source by code [{code}]"
        )
    return _with_scope(file_source_view(row), scope)


def register(router: APIRouter) -> None:
    add_api(router, "create_credential", create_credential, query=False)
    add_api(router, "update_credential", update_credential, query=False)
    add_api(router, "get_credential_detail", get_credential_detail, query=True)
    add_api(router, "create_file_source", create_file_source, query=False)
    add_api(router, "update_file_source", update_file_source, query=False)
    add_api(router, "get_file_source_detail", get_file_source_detail, query=True)
