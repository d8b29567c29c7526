"""bk-job v3 execution accounts: get_account_list, create, update, delete."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter

from jobfleet.api.auditing import audit
from jobfleet.api.params import get_int, get_str, need_int
from jobfleet.api.routing import Call, add_api
from jobfleet.domain.errors import JobError
from jobfleet.domain.status import AccountCategory
from jobfleet.store.accounts import DbChange, account_view

MANAGE = "manage_account"
# bk-job's limit on an account password
MAX_PASSWORD = 117
# what a database client accepts as its host: a name or an IPv4/IPv6 address, no options
HOST_NAME = re.compile(r"[A-Za-z0-9_.:\[\]-]{1,255}")


async def _record(call: Call, action: str, account_id: int) -> None:
    scope = await call.scope(MANAGE)
    await audit(
        call,
        action,
        "account",
        account_id,
        scope=scope,
    )


def _view(row: Any, scope: Any) -> dict[str, Any]:
    return {**account_view(row), "bk_scope_type": scope.scope_type, "bk_scope_id": scope.scope_id}


async def get_account_list(call: Call) -> dict[str, Any]:
    scope = await call.scope("view_account")
    p = call.params
    offset = get_int(p, "start", default=0, minimum=0) or 0
    length = get_int(p, "length", default=20, minimum=1, maximum=1000) or 20
    total, rows = await call.services.accounts.list(
        scope.bk_biz_id,
        category=get_int(p, "category"),
        account=get_str(p, "account"),
        alias=get_str(p, "alias"),
        offset=offset,
        limit=length,
    )
    return {
        "start": offset,
        "length": length,
        "total": total,
        "data": [_view(r, scope) for r in rows],
    }


async def create_account(call: Call) -> dict[str, Any]:
    scope = await call.scope(MANAGE)
    p = call.params
    name = get_str(p, "account", required=True, max_length=255)
    assert name is not None
    category = need_int(p, "category")
    if category == AccountCategory.DB:
        account_id = await _create_db_account(call, scope, name)
    elif category != AccountCategory.SYSTEM:
        raise JobError.invalid("category", "1 (system) or 2 (database)")
    else:
        account_id = await call.services.accounts.create(
            scope.bk_biz_id,
            name,
            alias=get_str(p, "alias", max_length=255),
            type_=need_int(p, "type"),
            password=get_str(p, "password"),
            description=get_str(p, "description", max_length=1024) or "",
            creator=call.caller.username,
        )
    await _record(call, "create_account", account_id)
    return _view(await call.services.accounts.get(scope.bk_biz_id, account_id), scope)


async def _create_db_account(call: Call, scope: Any, name: str) -> int:
    """A database account, named as bk-job's console names its fields (``db_password``,
    ``db_port``, ``db_system_account_id``), plus ``db_host`` and ``db_name``."""
    p = call.params
    password = _db_password(p, required=True)
    assert password is not None
    host = _db_host(p) or "127.0.0.1"
    return int(
        await call.services.accounts.create_db(
            scope.bk_biz_id,
            name,
            type_=need_int(p, "type"),
            password=password,
            system_account_id=need_int(p, "db_system_account_id", minimum=1),
            host=host,
            port=get_int(p, "db_port", minimum=1, maximum=65535),
            name=get_str(p, "db_name", max_length=255),
            alias=get_str(p, "alias", max_length=255),
            description=get_str(p, "description", max_length=1024) or "",
            creator=call.caller.username,
        )
    )


async def update_account(call: Call) -> dict[str, Any]:
    scope = await call.scope(MANAGE)
    p = call.params
    account_id = need_int(p, "id", minimum=1)
    current = await call.services.accounts.get(scope.bk_biz_id, account_id)
    if current.category == AccountCategory.DB:
        row = await _update_db_account(call, scope, account_id)
    else:
        row = await call.services.accounts.update(
            scope.bk_biz_id,
            account_id,
            user=call.caller.username,
            alias=get_str(p, "alias", max_length=255),
            password=get_str(p, "password"),
            description=get_str(p, "description", max_length=1024),
        )
    await _record(call, "update_account", account_id)
    return _view(row, scope)


def _db_password(p: dict[str, Any], *, required: bool) -> str | None:
    password = get_str(p, "db_password") or get_str(p, "password")
    if not password:
        if required:
            raise JobError.missing("db_password")
        return None
    if len(password) > MAX_PASSWORD:
        raise JobError.invalid("db_password", f"longer than {MAX_PASSWORD} characters")
    return password


def _db_host(p: dict[str, Any]) -> str | None:
    host = get_str(p, "db_host", max_length=255)
    if host is not None and not HOST_NAME.fullmatch(host):
        raise JobError.invalid("db_host", "a host name or IP address")
    return host


async def _update_db_account(call: Call, scope: Any, account_id: int) -> Any:
    """A database account's connection: any of host, port, database name, password and
    the system account its client runs as; what is not given is kept."""
    p = call.params
    return await call.services.accounts.update(
        scope.bk_biz_id,
        account_id,
        user=call.caller.username,
        alias=get_str(p, "alias", max_length=255),
        password=_db_password(p, required=False),
        description=get_str(p, "description", max_length=1024),
        db=DbChange(
            host=_db_host(p),
            port=get_int(p, "db_port", minimum=1, maximum=65535),
            name=get_str(p, "db_name", max_length=255),
            system_account_id=get_int(p, "db_system_account_id", minimum=1),
            type=get_int(p, "type"),
        ),
    )


async def delete_account(call: Call) -> dict[str, Any]:
    scope = await call.scope(MANAGE)
    account_id = need_int(call.params, "id", minimum=1)
    row = await call.services.accounts.delete(scope.bk_biz_id, account_id)
    await _record(call, "delete_account", account_id)
    return _view(row, scope)


def register(router: APIRouter) -> None:
    add_api(router, "get_account_list", get_account_list, query=True)
    add_api(router, "create_account", create_account, query=False)
    add_api(router, "update_account", update_account, query=False)
    add_api(router, "delete_account", delete_account, query=False)
