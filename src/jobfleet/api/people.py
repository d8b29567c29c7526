"""People's own credentials: passwords (set by administrators) and personal API tokens.

``POST /api/jobfleet/v1/users/{username}/password`` (administrators) sets a console
password; ``/api/jobfleet/v1/tokens`` lets any user create, list and revoke their
own tokens, each with an expiry (``Authorization: Bearer jfp_…``);
``/api/jobfleet/v1/users/{username}/tokens`` lets administrators list and revoke
another user's.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from fastapi import APIRouter

from jobfleet.api.auditing import audit
from jobfleet.api.auth import app_refused
from jobfleet.api.params import get_int, get_str
from jobfleet.api.routing import Call, add_own
from jobfleet.api.scope import require_admin
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.people import PeopleStore

MAX_TOKEN_TTL = 365 * 24 * 3600
DEFAULT_TOKEN_TTL = 30 * 24 * 3600


def people_of(call: Call) -> PeopleStore:
    if call.services.people is None:
        raise JobError(ErrorCode.UNSUPPORTED_OPERATION, "This server has no console users")
    return call.services.people


async def set_password(call: Call) -> dict[str, Any]:
    require_admin(call.caller)
    username = str(call.params["username"])
    password = get_str(call.params, "password", required=True, max_length=1024)
    assert password is not None
    await people_of(call).set_password(username, password)
    await audit(call, "set_password", "user", username)
    return {"username": username}


def _check_minter(call: Call) -> None:
    """A token acts for its user with no app's limits: an app whose own limits are
    narrower makes none, or its token would reach past them."""
    caller = call.caller
    if caller.user.is_admin and not caller.app.is_admin:
        raise app_refused(
            caller.app,
            "is not an administration app: a personal token of an administrator would "
            "reach the administration routes",
        )
    if caller.app.biz is not None:
        raise app_refused(
            caller.app,
            "may not touch every business: a personal token would act in all of its "
            "user's businesses",
        )


async def create_token(call: Call) -> dict[str, Any]:
    _check_minter(call)
    ttl = get_int(
        call.params, "expires_in", minimum=60, maximum=MAX_TOKEN_TTL, default=DEFAULT_TOKEN_TTL
    )
    note = get_str(call.params, "note", max_length=255) or ""
    assert ttl is not None
    bound = call.caller.token_expires_at
    if bound is not None and time.time() + ttl > bound:
        # a token cannot extend itself by minting a longer-lived one
        left = max(int(bound - time.time()), 0)
        raise JobError.invalid(
            "expires_in",
            f"a token created with a personal token may not outlive it "
            f"(at most {left} seconds here); log in or use app credentials for a longer one",
        )
    token = await people_of(call).create_token(call.caller.username, float(ttl), note)
    await audit(call, "create_personal_token", "personal_token", token["id"])
    return token


async def list_tokens(call: Call) -> list[dict[str, Any]]:
    return await people_of(call).list_tokens(call.caller.username)


async def revoke_token(call: Call) -> dict[str, Any]:
    token_id = get_int(call.params, "id", required=True, minimum=1)
    assert token_id is not None
    await people_of(call).revoke_token(call.caller.username, token_id)
    await audit(call, "revoke_personal_token", "personal_token", token_id)
    return {"id": token_id}


async def list_user_tokens(call: Call) -> list[dict[str, Any]]:
    require_admin(call.caller, "list another user's tokens")
    return await people_of(call).list_tokens(str(call.params["username"]))


async def revoke_user_token(call: Call) -> dict[str, Any]:
    require_admin(call.caller, "revoke another user's tokens")
    username = str(call.params["username"])
    token_id = get_int(call.params, "id", required=True, minimum=1)
    assert token_id is not None
    await people_of(call).revoke_token(username, token_id)
    await audit(
        call, "revoke_user_token", "personal_token", token_id, detail={"username": username}
    )
    return {"username": username, "id": token_id}


async def revoke_user_tokens(call: Call) -> dict[str, Any]:
    """Every token of a user at once (one who leaves, or whose machine was lost)."""
    require_admin(call.caller, "revoke another user's tokens")
    username = str(call.params["username"])
    revoked = await people_of(call).revoke_tokens(username)
    await audit(
        call, "revoke_user_tokens", "user", username, detail={"revoked": revoked}
    )
    return {"username": username, "revoked": revoked}


def register(router: APIRouter) -> None:
    add = functools.partial(add_own, router)

    add("POST", "/users/{username}/password", set_password)
    add("POST", "/tokens", create_token)
    add("GET", "/tokens", list_tokens)
    add("DELETE", "/tokens/{id}", revoke_token)
    add("GET", "/users/{username}/tokens", list_user_tokens)
    add("DELETE", "/users/{username}/tokens/{id}", revoke_user_token)
    add("DELETE", "/users/{username}/tokens", revoke_user_tokens)
