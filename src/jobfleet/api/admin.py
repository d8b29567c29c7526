"""jobfleet's own REST API (docs/rest-api.md): apps, users, grants, hosts, agents."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from jobfleet.api import envelope
from jobfleet.api.agent_channel import ENROLL_PATH
from jobfleet.api.auditing import audit
from jobfleet.api.errors import audited, request_id
from jobfleet.api.params import decimal_int, get_bool, get_int, get_list, get_str, need_int
from jobfleet.api.route_index import mark_plain
from jobfleet.api.routing import Call, Handler, add_own, read_params, services_of
from jobfleet.api.scope import (
    held_scopes,
    require_admin,
    resolve_scope,
    seen_businesses,
)
from jobfleet.domain import enrollment
from jobfleet.domain.callers import (
    APP_CODE_RULE,
    RESERVED_APP_CODES,
    USERNAME_RULE,
    valid_app_code,
    valid_username,
)
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.protocol import clean_name
from jobfleet.domain.status import BIZ_SET_IDS, ScopeType
from jobfleet.domain.targets import normalize_ip

log = logging.getLogger(__name__)
# ids are BIGINT columns: a larger number is refused here, not by the database
MAX_ID = 2**63 - 1


# what an administration action changed: (resource type, the parameter naming it)
RESOURCES: dict[str, tuple[str, str]] = {
    "create_app": ("app", "app_code"),
    "delete_app": ("app", "app_code"),
    "create_user": ("user", "username"),
    "grant_user": ("user", "username"),
    "revoke_user": ("user", "username"),
    "create_business": ("business", "bk_biz_id"),
    "create_biz_set": ("biz_set", "bk_biz_set_id"),
    "add_host": ("host", "bk_host_id"),
    "create_token": ("enroll_token", "bk_biz_id"),
    "revoke_agent": ("agent", "agent_id"),
    "add_whitelist": ("host_whitelist", "id"),
    "delete_whitelist": ("host_whitelist", "id"),
}
# never copied into an audit entry
HIDDEN = ("secret", "token", "password")


def admin_only(action: str, handler: Handler) -> Handler:
    """Administrators through administration apps only; changes audited by name."""

    async def wrapped(call: Call) -> Any:
        require_admin(call.caller)
        result = await handler(call)
        call.services.auth.forget()
        if action in RESOURCES:
            resource_type, key = RESOURCES[action]
            found = result.get(key) if isinstance(result, dict) else None
            await audit(
                call,
                action,
                resource_type,
                found if found is not None else call.params.get(key, ""),
                detail={
                    k: v for k, v in call.params.items() if not any(h in k.lower() for h in HIDDEN)
                },
            )
        return result

    return wrapped


async def whoami(call: Call) -> dict[str, Any]:
    caller = call.caller
    user = caller.user
    scopes = await held_scopes(call.services.identity, caller)
    return {
        "app_code": caller.app_code,
        "username": user.username,
        "is_admin": user.is_admin,
        "app": caller.app.public(),
        "scopes": [{"scope_type": t, "scope_id": i} for t, i in scopes],
    }


async def require_businesses(call: Call, name: str, ids: list[int]) -> None:
    """Businesses exist only once an administrator creates them (nothing syncs them in
    later), so a name of one that does not exist is a typo that would otherwise grant,
    limit or place something nothing can ever reach."""
    missing = sorted(set(ids) - await call.services.identity.business_ids())
    if missing:
        listed = ", ".join(map(str, missing))
        raise JobError(
            ErrorCode.BIZ_NOT_EXIST,
            f"{name}: business {listed} does not exist"
            if len(missing) == 1
            else f"{name}: businesses {listed} do not exist",
        )


def _allowed(call: Call, name: str) -> list[str] | None:
    """``"any"`` (or absent) is None; else a list or a comma-separated string of names."""
    raw = call.params.get(name)
    if raw is None or raw == "any":
        return None
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list) or len(items) > 10_000:
        raise JobError.invalid(name, '"any", or a list of names')
    found = [str(i).strip() for i in items if isinstance(i, str | int) and str(i).strip()]
    if not found or len(found) != len(items) or any(len(i) > 128 for i in found):
        raise JobError.invalid(name, '"any", or a list of one or more non-empty names')
    return found


async def create_app(call: Call) -> dict[str, Any]:
    code = get_str(call.params, "app_code", required=True, max_length=128)
    assert code is not None
    if not valid_app_code(code):
        raise JobError.invalid("app_code", f"{code!r}: an app code is {APP_CODE_RULE}")
    if code in RESERVED_APP_CODES:
        raise JobError.invalid("app_code", f"{code!r} is reserved for jobfleet's own callers")
    users = _allowed(call, "allowed_users")
    raw_biz = _allowed(call, "allowed_biz")
    biz: list[int] | None = None
    if raw_biz is not None:
        try:
            biz = [int(b) for b in raw_biz]
        except ValueError:
            raise JobError.invalid("allowed_biz", '"any", or a list of business ids') from None
        if any(not 1 <= b <= 2**63 - 1 for b in biz):
            raise JobError.invalid("allowed_biz", "business ids are positive")
        await require_businesses(call, "allowed_biz", biz)
    admin = get_bool(call.params, "is_admin", False)
    secret = await call.services.identity.create_app(
        code,
        get_str(call.params, "description", max_length=1024) or "",
        users=users,
        biz=biz,
        is_admin=admin,
    )
    return {
        "app_code": code,
        "app_secret": secret,
        "is_admin": admin,
        "allowed_users": "any" if users is None else sorted(set(users)),
        "allowed_biz": "any" if biz is None else sorted(set(biz)),
    }


async def list_apps(call: Call) -> list[dict[str, Any]]:
    return await call.services.identity.list_apps()


async def delete_app(call: Call) -> dict[str, Any]:
    code = str(call.params["app_code"])
    await call.services.identity.delete_app(code)
    return {"app_code": code}


async def _refuse_new_username(call: Call, name: str) -> None:
    """A name outside bk-user's rule is refused for a new user; users stored before the
    rule keep theirs (their role, grants and sign-in are unchanged)."""
    if not valid_username(name) and not await call.services.identity.known_user(name):
        # repr: what was sent shows with its control characters written out; a long
        # name (a grant's comes in the path, unbounded) by its length only
        given = repr(name) if len(name) <= 64 else f"{len(name)} characters"
        raise JobError.invalid("username", f"{given}: a username is {USERNAME_RULE}")


async def create_user(call: Call) -> dict[str, Any]:
    name = get_str(call.params, "username", required=True, max_length=128)
    assert name is not None
    await _refuse_new_username(call, name)
    identity = call.services.identity
    if call.params.get("is_admin") is not None:
        # the role given: a new user with it, or an existing one's role changed
        admin = get_bool(call.params, "is_admin")
        return {"username": name, "is_admin": await identity.ensure_user(name, admin)}
    # a second create changes nothing, so the operator who meant a new user (or a new
    # password for it) is told, as a second app of one code is; the role is kept
    try:
        await identity.create_user(name)
    except JobError as exc:
        if exc.code != ErrorCode.CONFLICT:
            raise
        raise JobError(
            ErrorCode.CONFLICT,
            f"User {name!r} already exists: set its password with "
            f"`jobfleet admin user passwd {shlex.quote(name)}`; give --admin or --no-admin "
            "(is_admin) to change its role",
        ) from None
    return {"username": name, "is_admin": False}


async def list_users(call: Call) -> list[dict[str, Any]]:
    return await call.services.identity.list_users()


def _grant_args(call: Call) -> tuple[str, str, str]:
    scope_type = get_str(call.params, "scope_type", required=True)
    scope_id = get_str(call.params, "scope_id", required=True)
    if scope_type not in ScopeType.ALL:
        raise JobError.invalid("scope_type")
    assert scope_id is not None
    return str(call.params["username"]), scope_type, scope_id


async def grant(call: Call) -> dict[str, Any]:
    user, scope_type, scope_id = _grant_args(call)
    # a grant to a name with neither row nor grant makes a user of it
    await _refuse_new_username(call, user)
    # a grant of a scope that does not exist is refused as the routes naming it refuse
    # it; revoking one stays possible (grants made before this check)
    if scope_type in (ScopeType.BIZ, ScopeType.BIZ_SET):
        number = decimal_int(scope_id)
        if number is None or not 1 <= number <= MAX_ID:
            raise JobError.invalid("scope_id", f"{scope_id!r} is not a {scope_type} id")
        scope_id = str(number)
        if scope_type == ScopeType.BIZ:
            await require_businesses(call, "scope_id", [number])
        elif await call.services.identity.biz_set_members(number) is None:
            raise JobError(
                ErrorCode.SCOPE_NOT_EXIST, f"scope_id: business set {number} does not exist"
            )
    await call.services.identity.grant(user, scope_type, scope_id)
    return {"username": user, "scope_type": scope_type, "scope_id": scope_id}


async def revoke(call: Call) -> dict[str, Any]:
    user, scope_type, scope_id = _grant_args(call)
    await call.services.identity.revoke(user, scope_type, scope_id)
    # a grant keeps a business (set) id in its normal form ("02" as "2"): the words that
    # made it take it back, as well as a row kept as given before that
    number = decimal_int(scope_id) if scope_type in (ScopeType.BIZ, ScopeType.BIZ_SET) else None
    if number is not None and str(number) != scope_id:
        scope_id = str(number)
        await call.services.identity.revoke(user, scope_type, scope_id)
    return {"username": user, "scope_type": scope_type, "scope_id": scope_id}


async def create_business(call: Call) -> dict[str, Any]:
    biz = need_int(call.params, "bk_biz_id", minimum=1)
    name = get_str(call.params, "name", required=True, max_length=255)
    assert name is not None
    await call.services.identity.create_business(biz, name)
    return {"bk_biz_id": biz, "name": name}


async def list_businesses(call: Call) -> list[dict[str, Any]]:
    return await call.services.identity.list_businesses()


async def create_biz_set(call: Call) -> dict[str, Any]:
    set_id = need_int(
        call.params, "bk_biz_set_id", minimum=BIZ_SET_IDS.start, maximum=BIZ_SET_IDS.stop - 1
    )
    name = get_str(call.params, "name", required=True, max_length=255)
    assert name is not None
    members: list[int] = []
    for value in get_list(call.params, "bk_biz_ids"):
        biz = decimal_int(value)
        if biz is None or not 1 <= biz <= MAX_ID:
            raise JobError.invalid("bk_biz_ids", f"{value!r} is not a business id")
        members.append(biz)
    await call.services.identity.create_biz_set(set_id, name, members)
    return {"bk_biz_set_id": set_id, "name": name, "bk_biz_ids": sorted(set(members))}


async def list_biz_sets(call: Call) -> list[dict[str, Any]]:
    return await call.services.identity.list_biz_sets()


async def list_hosts(call: Call) -> list[dict[str, Any]]:
    p = call.params
    if any(p.get(k) not in (None, "") for k in ("bk_scope_type", "bk_scope_id", "bk_biz_id")):
        # a scope that does not exist, or one the caller may not see, is an error as on
        # every route that names one, not an empty list
        scope = await resolve_scope(call.services.identity, call.caller, p, "view_host")
        biz_ids: set[int] | None = scope.biz_ids
    else:
        biz_ids = await seen_businesses(call.services.identity, call.caller)
    alive = p.get("alive")
    alive_flag = None if alive in (None, "") else get_bool(p, "alive")
    hosts = await call.services.inventory.list(alive=alive_flag, biz_ids=biz_ids)
    return [h.public() for h in hosts]


async def add_host(call: Call) -> dict[str, Any]:
    biz = need_int(call.params, "bk_biz_id", minimum=1)
    await require_businesses(call, "bk_biz_id", [biz])
    ip = normalize_ip(get_str(call.params, "ip", required=True))
    cloud = get_int(call.params, "bk_cloud_id", default=0, minimum=0) or 0
    hostname = clean_name(get_str(call.params, "hostname", max_length=255) or "")
    host = await call.services.inventory.add(biz, ip, cloud, hostname)
    return host.public()


async def create_token(call: Call) -> dict[str, Any]:
    biz = get_int(call.params, "bk_biz_id", minimum=1, maximum=MAX_ID)
    if biz is not None:
        # enrollment would refuse every host with it
        await require_businesses(call, "bk_biz_id", [biz])
    secret = await call.services.identity.create_enroll_token(
        bk_biz_id=biz,
        uses=get_int(call.params, "uses", minimum=1),
        ttl_seconds=get_int(call.params, "ttl_seconds", minimum=1, maximum=10 * 365 * 86400),
        note=get_str(call.params, "note", max_length=255) or "",
    )
    return {"token": call.services.agent_channel.token(secret)}


async def revoke_agent(call: Call) -> dict[str, Any]:
    agent_id = str(call.params["agent_id"])
    await call.services.identity.revoke_agent(agent_id)
    return {"agent_id": agent_id}


async def recent_audit(call: Call) -> list[dict[str, Any]]:
    limit = get_int(call.params, "limit", default=100, minimum=1, maximum=1000) or 100
    return await call.services.audit.recent(limit)


def enroll_endpoint() -> Callable[[Request], Awaitable[Response]]:
    """Enrollment carries a token instead of app credentials."""

    async def endpoint(request: Request) -> Response:
        services = services_of(request)
        source_ip = request.client.host if request.client else ""
        ip = ""
        try:
            if not services.enroll_throttle.take(source_ip):
                raise services.enroll_throttle.refusal(source_ip)
            params = await read_params(request)
            token = get_str(params, "token", required=True, max_length=512)
            ip = normalize_ip(get_str(params, "ip", required=True))
            assert token is not None
            try:
                secret_part = enrollment.parse(token).secret
            except ValueError as exc:
                raise JobError(ErrorCode.SERVICE_AUTH_FAIL, str(exc), http_status=401) from None
            agent_id, secret, host_id = await services.identity.enroll(
                secret_part,
                ip=ip,
                bk_cloud_id=get_int(params, "bk_cloud_id", default=0, minimum=0, maximum=MAX_ID)
                or 0,
                bk_biz_id=get_int(params, "bk_biz_id", default=2, minimum=1, maximum=MAX_ID) or 2,
                # as the gateway keeps what a hello says: no control characters
                hostname=clean_name(get_str(params, "hostname", max_length=255) or ""),
                os_type=clean_name(get_str(params, "os_type", max_length=32) or ""),
                source_ip=source_ip,  # audited in the enrollment's own transaction
            )
            return envelope.ok(
                {"agent_id": agent_id, "agent_secret": secret, "bk_host_id": host_id},
                request_id(request),
            )
        except JobError as exc:
            log.warning("agent_enroll_refused ip=%s peer=%s code=%s", ip, source_ip, exc.code)
            try:
                await services.audit.record(
                    app_code="",
                    username="",
                    action="agent_enroll_refused",
                    resource_type="host",
                    detail={"ip": ip, "code": exc.code, "message": exc.message[:500]},
                    source_ip=source_ip,
                )
            except Exception:
                log.exception("audit_failed action=agent_enroll_refused")
            audited(request)
            raise

    return mark_plain(endpoint)


def register(router: APIRouter) -> None:
    def add(method: str, path: str, handler: Handler, *, admin: str | None = "") -> None:
        """``admin`` is the action's audit name ("" for reads); None: not an admin route."""
        add_own(router, method, path, admin_only(admin, handler) if admin is not None else handler)

    add("GET", "/whoami", whoami, admin=None)
    add("POST", "/apps", create_app, admin="create_app")
    add("GET", "/apps", list_apps)
    add("DELETE", "/apps/{app_code}", delete_app, admin="delete_app")
    add("POST", "/users", create_user, admin="create_user")
    add("GET", "/users", list_users)
    add("POST", "/users/{username}/grants", grant, admin="grant_user")
    add("DELETE", "/users/{username}/grants/{scope_type}/{scope_id}", revoke, admin="revoke_user")
    add("POST", "/businesses", create_business, admin="create_business")
    add("GET", "/businesses", list_businesses)
    add("POST", "/business-sets", create_biz_set, admin="create_biz_set")
    add("GET", "/business-sets", list_biz_sets)
    add("GET", "/hosts", list_hosts, admin=None)
    add("POST", "/hosts", add_host, admin="add_host")
    add("POST", "/enroll-tokens", create_token, admin="create_token")
    add("DELETE", "/agents/{agent_id}", revoke_agent, admin="revoke_agent")
    add("GET", "/audit", recent_audit)
    router.add_api_route(ENROLL_PATH, enroll_endpoint(), methods=["POST"], name="enroll")
