"""Business scopes: which one a request names, and whether its user holds it."""

from __future__ import annotations

from typing import Any

from jobfleet.api.auth import Caller, app_refused
from jobfleet.api.params import decimal_int
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import BIZ_SET_IDS, ScopeType
from jobfleet.engine.submit import Scope
from jobfleet.store.identity import IdentityStore


def _scope_number(value: Any, name: str) -> int:
    number = decimal_int(value)
    if number is None:
        raise JobError.invalid(name)
    return number


def scope_of(params: dict[str, Any]) -> tuple[str, str]:
    """The scope a request names, its id in normal form (``"02"`` is business ``"2"``), so
    that what it creates is found again under the scope as any other request names it."""
    scope_type = params.get("bk_scope_type")
    scope_id = params.get("bk_scope_id")
    if scope_type and scope_id not in (None, ""):
        if scope_type not in ScopeType.ALL:
            raise JobError.invalid("bk_scope_type")
        return str(scope_type), str(_scope_number(scope_id, "bk_scope_id"))
    biz = params.get("bk_biz_id")
    if biz in (None, ""):
        raise JobError.missing("bk_scope_type|bk_scope_id")
    biz_id = _scope_number(biz, "bk_biz_id")
    return (ScopeType.BIZ_SET if biz_id in BIZ_SET_IDS else ScopeType.BIZ), str(biz_id)


def permission_denied(caller: Caller, scope_type: str, scope_id: str, action: str) -> JobError:
    return JobError(
        ErrorCode.PERMISSION_DENIED,
        f"User {caller.username!r} has no permission to {action} in {scope_type} {scope_id}",
        permission={
            "system_id": "bk_job",
            "system_name": "JOB",
            "actions": [
                {
                    "id": action,
                    "name": action,
                    "related_resource_types": [
                        {
                            "system_id": "bk_cmdb",
                            "system_name": "CMDB",
                            "type": scope_type,
                            "type_name": scope_type,
                            "instances": [
                                [
                                    {
                                        "type": scope_type,
                                        "type_name": scope_type,
                                        "id": scope_id,
                                        "name": scope_id,
                                    }
                                ]
                            ],
                        }
                    ],
                }
            ],
        },
    )


async def resolve_scope(
    identity: IdentityStore, caller: Caller, params: dict[str, Any], action: str
) -> Scope:
    scope_type, scope_id = scope_of(params)
    number = int(scope_id)
    if scope_type == ScopeType.BIZ:
        if number not in await identity.business_ids():
            raise JobError(ErrorCode.BIZ_NOT_EXIST, f"Business {number} does not exist")
        biz_ids = {number}
    elif scope_type == ScopeType.BIZ_SET:
        members = await identity.biz_set_members(number)
        if members is None:
            raise JobError(ErrorCode.SCOPE_NOT_EXIST, f"Business set {number} does not exist")
        biz_ids = set(members)
    else:
        biz_ids = await identity.business_ids()
    if not caller.user.holds(scope_type, scope_id):
        raise permission_denied(caller, scope_type, scope_id, action)
    if not caller.app.may_touch(biz_ids):
        raise app_refused(caller.app, f"may not touch {scope_type} {scope_id}")
    return Scope(scope_type, scope_id, number, biz_ids)


def named_business(params: dict[str, Any]) -> Scope | None:
    """The scope a request names when it is one business, not yet known to exist; None
    for a business set or a tenant set (their businesses are only known from the store)."""
    scope_type, scope_id = scope_of(params)
    if scope_type != ScopeType.BIZ:
        return None
    number = int(scope_id)
    return Scope(scope_type, scope_id, number, {number})


async def holds_scope(
    identity: IdentityStore, caller: Caller, scope_type: str, scope_id: str
) -> bool:
    """``Caller.holds`` of a scope something was made in: an app limited to some
    businesses holds a business set whose members are all among them."""
    biz_ids = None
    if scope_type == ScopeType.BIZ_SET and caller.app.biz is not None:
        number = decimal_int(scope_id)
        members = None if number is None else await identity.biz_set_members(number)
        biz_ids = None if members is None else set(members)
    return caller.holds(scope_type, scope_id, biz_ids)


async def held_scopes(identity: IdentityStore, caller: Caller) -> list[tuple[str, str]]:
    """The user's grants that the caller's app may act in, in order: one limited to some
    businesses does not reach the others (a business set: all of its members)."""
    return [s for s in sorted(caller.user.scopes) if await holds_scope(identity, caller, *s)]


async def seen_businesses(identity: IdentityStore, caller: Caller) -> set[int] | None:
    """The businesses whose hosts the caller sees without naming a scope: the user's
    businesses and the members of their business sets (whose hosts they act on), within
    the app's; None for every business."""
    user = caller.user
    seen: set[int] | None = None
    if not user.is_admin and not any(t == ScopeType.TENANT_SET for t, _ in user.scopes):
        seen = set()
        for scope_type, scope_id in user.scopes:
            number = decimal_int(scope_id)
            if number is None:
                continue
            if scope_type == ScopeType.BIZ:
                seen.add(number)
            elif scope_type == ScopeType.BIZ_SET:
                seen.update(await identity.biz_set_members(number) or ())
    limit = caller.app.biz
    if limit is not None:
        seen = set(limit) if seen is None else seen & limit
    return seen


def require_admin(caller: Caller, what: str = "use the administration routes") -> None:
    """An administrator, named by an administration app, whatever user an app names."""
    if not caller.user.is_admin:
        raise JobError(
            ErrorCode.PERMISSION_DENIED,
            f"User {caller.username!r} is not an administrator: only administrators {what}",
        )
    if not caller.app.is_admin:
        raise app_refused(
            caller.app,
            f"is not an administration app: only administration apps {what}"
            " (jobfleet admin app create NAME --admin)",
        )
