"""bk-job v3 scripts calls: business scripts, public scripts and their versions.

Every call exists twice: ``get_script_list`` works in a business scope, and
``get_public_script_list`` (the same name with ``public_`` before ``script``) on the
public scripts, with no scope. Anyone authenticated reads public scripts; only
administrators change them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter

from jobfleet.api.auditing import audit
from jobfleet.api.params import get_bool, get_int, get_str
from jobfleet.api.routing import Call, Handler, add_api
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.script_tags import check_tag, check_tags
from jobfleet.domain.scripts import MAX_SCRIPT_BYTES, check_language, decode_base64
from jobfleet.domain.status import ScriptLanguage
from jobfleet.engine.submit import Scope

# bk-job's own limits on names and version strings
MAX_NAME = 60
NAME_FORBIDDEN = re.compile(r'[\\|/:*<>"?]')
VERSION = re.compile(r"[A-Za-z0-9_\-#@.]{1,60}")
MAX_DESCRIPTION = 4096
MAX_ID = 2**63 - 1
MAX_START = 2**31 - 1

# bk-job's IAM action ids, named in 9900403 answers
VIEW = "view_script"
CREATE = "create_script"
MANAGE = "manage_script"
PUBLIC_CREATE = "create_public_script"
PUBLIC_MANAGE = "manage_public_script_instance"


@dataclass(frozen=True)
class Owner:
    """Whose scripts a call works on: a business scope's, or the public ones (no scope)."""

    bk_biz_id: int | None
    scope: Scope | None

    def show(self, view: dict[str, Any]) -> dict[str, Any]:
        return {**view, **self.scope.public()} if self.scope else view


def _public_denied(call: Call, action: str) -> JobError:
    who = (
        f"App {call.caller.app_code!r} is not an administration app"
        if call.caller.user.is_admin
        else f"User {call.caller.username!r}"
    )
    return JobError(
        ErrorCode.PERMISSION_DENIED,
        f"{who}: changing public scripts needs an administrator",
        permission={
            "system_id": "bk_job",
            "system_name": "JOB",
            "actions": [{"id": action, "name": action, "related_resource_types": []}],
        },
    )


async def _owner(call: Call, public: bool, action: str | None) -> Owner:
    """``action`` None is a read; public reads need no scope and no user."""
    if public:
        if action is not None and not call.caller.is_admin:
            raise _public_denied(call, action)
        return Owner(None, None)
    scope = await call.scope(action or VIEW)
    return Owner(scope.bk_biz_id, scope)


async def _record(call: Call, owner: Owner, action: str, view: dict[str, Any]) -> None:
    scope = owner.scope
    await audit(
        call,
        action,
        "script" if scope else "public_script",
        view.get("script_id") or view["id"],
        scope=scope,
        detail={
            k: view[k] for k in ("name", "script_version_id", "version", "status", "tags")
            if k in view
        },
    )


# parameters ------------------------------------------------------------------
def _text(p: dict[str, Any], name: str, *, required: bool = False, limit: int) -> str | None:
    value = get_str(p, name, required=required, max_length=limit)
    if value is not None and "\x00" in value:
        raise JobError.invalid(name, "contains a NUL character")
    return value


def _need_text(p: dict[str, Any], name: str, *, limit: int) -> str:
    value = _text(p, name, required=True, limit=limit)
    assert value is not None
    return value


def _script_id(p: dict[str, Any]) -> str:
    return _need_text(p, "script_id", limit=1024)


def _version_id(p: dict[str, Any], name: str = "script_version_id") -> int:
    value = get_int(p, name, required=True, minimum=1, maximum=MAX_ID)
    assert value is not None
    return value


def _name(p: dict[str, Any], *, required: bool) -> str | None:
    value = _text(p, "name", required=required, limit=1024)
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise JobError.missing("name")
    if len(value) > MAX_NAME:
        raise JobError.invalid("name", f"longer than {MAX_NAME} characters")
    if NAME_FORBIDDEN.search(value):
        raise JobError.invalid("name", 'must not contain any of \\ | / : * < > " ?')
    return value


def _version(p: dict[str, Any]) -> str:
    value = _need_text(p, "version", limit=1024)
    if not VERSION.fullmatch(value):
        raise JobError.invalid("version", "1 to 60 of letters, digits and _ - # @ . (e.g. 1.0.2)")
    return value


def _content(p: dict[str, Any]) -> str:
    raw = get_str(p, "content", required=True)
    assert raw is not None
    content = decode_base64(raw, "content", MAX_SCRIPT_BYTES)
    if not content.strip():
        raise JobError.missing("content")
    if "\x00" in content:
        raise JobError.invalid("content", "the decoded script contains NUL bytes")
    return content


def _page(p: dict[str, Any]) -> tuple[int, int]:
    start = get_int(p, "start", default=0, minimum=0, maximum=MAX_START) or 0
    length = get_int(p, "length", default=20, minimum=1, maximum=1000) or 20
    return start, length


def _language_filter(p: dict[str, Any]) -> int | None:
    value = get_int(p, "script_language", default=0)
    if value == 0:
        return None
    if value not in {int(x) for x in ScriptLanguage}:
        raise JobError.invalid("script_language")
    return value


def _tags(p: dict[str, Any]) -> list[str] | None:
    """jobfleet's own ``tags``: a list of short labels (absent: unchanged)."""
    return None if p.get("tags") is None else check_tags(p["tags"])


def _status(view: dict[str, Any]) -> dict[str, Any]:
    return {
        "script_id": view["script_id"],
        "id": view["id"],
        "script_version_id": view["id"],
        "status": view["status"],
    }


# reads -----------------------------------------------------------------------
async def get_script_list(call: Call, public: bool) -> dict[str, Any]:
    owner = await _owner(call, public, None)
    p = call.params
    start, length = _page(p)
    total, items = await call.services.scripts.list_scripts(
        owner.bk_biz_id,
        name=_text(p, "name", limit=1024),
        language=_language_filter(p),
        tag=None if p.get("tag") in (None, "") else check_tag(p["tag"]),
        offset=start,
        limit=length,
    )
    data = [owner.show(i) for i in items]
    return {"start": start, "length": length, "total": total, "data": data}


async def get_script_version_list(call: Call, public: bool) -> dict[str, Any]:
    owner = await _owner(call, public, None)
    p = call.params
    start, length = _page(p)
    script_id = _text(p, "script_id", limit=1024)
    if not script_id or not script_id.strip():
        # bk-job's own check: a script_id that is missing is invalid (1241005)
        raise JobError(ErrorCode.INVALID_PARAM_WITH_NAME, "Invalid parameter [script_id]")
    total, items = await call.services.scripts.list_versions(
        owner.bk_biz_id,
        script_id,
        content=get_bool(p, "return_script_content", False),
        offset=start,
        limit=length,
    )
    data = [owner.show(i) for i in items]
    return {"start": start, "length": length, "total": total, "data": data}


async def get_script_version_detail(call: Call, public: bool) -> dict[str, Any]:
    owner = await _owner(call, public, None)
    p = call.params
    version_id = get_int(p, "id", maximum=MAX_ID)
    script_id = _text(p, "script_id", limit=1024)
    version = _text(p, "version", limit=1024)
    # as bk-job: an id above 0 wins, else script_id and version are each invalid (1241005)
    # when missing
    if version_id is not None and version_id < 1:
        version_id = None
    if version_id is None:
        for name, value in (("script_id", script_id), ("version", version)):
            if not value or not value.strip():
                raise JobError(ErrorCode.INVALID_PARAM_WITH_NAME, f"Invalid parameter [{name}]")
    view = await call.services.scripts.get_version(
        owner.bk_biz_id, version_id=version_id, script_id=script_id, version=version
    )
    return owner.show(view)


# scripts ---------------------------------------------------------------------
async def create_script(call: Call, public: bool) -> dict[str, Any]:
    owner = await _owner(call, public, PUBLIC_CREATE if public else CREATE)
    p = call.params
    name = _name(p, required=True)
    assert name is not None
    language = check_language(get_int(p, "script_language"), sql=True)
    content = _content(p)
    view = await call.services.scripts.create_script(
        owner.bk_biz_id,
        name=name,
        language=int(language),
        description=_text(p, "description", limit=MAX_DESCRIPTION) or "",
        content=content,
        version=_version(p),
        version_desc=_text(p, "version_desc", limit=MAX_DESCRIPTION) or "",
        user=call.caller.username,
        tags=_tags(p),
    )
    await _record(call, owner, _api("create_script", public), view)
    return owner.show(view)


async def update_script_basic(call: Call, public: bool) -> dict[str, Any]:
    owner = await _owner(call, public, PUBLIC_MANAGE if public else MANAGE)
    p = call.params
    script_id = _script_id(p)
    name = _name(p, required=False)
    description = _text(p, "description", limit=MAX_DESCRIPTION)
    if description is None and p.get("description") == "":
        description = ""  # an empty description clears it
    tags = _tags(p)
    if name is None and description is None and tags is None:
        raise JobError.missing("name|description|tags")
    view = await call.services.scripts.update_script_basic(
        owner.bk_biz_id,
        script_id,
        user=call.caller.username,
        name=name,
        description=description,
        tags=tags,
    )
    await _record(call, owner, _api("update_script_basic", public), view)
    return owner.show(view)


async def delete_script(call: Call, public: bool) -> None:
    owner = await _owner(call, public, PUBLIC_MANAGE if public else MANAGE)
    view = await call.services.scripts.delete_script(owner.bk_biz_id, _script_id(call.params))
    await _record(call, owner, _api("delete_script", public), view)


# versions --------------------------------------------------------------------
async def create_script_version(call: Call, public: bool) -> dict[str, Any]:
    owner = await _owner(call, public, PUBLIC_MANAGE if public else MANAGE)
    p = call.params
    script_id = _script_id(p)
    content = _content(p)
    view = await call.services.scripts.create_version(
        owner.bk_biz_id,
        script_id,
        content=content,
        version=_version(p),
        version_desc=_text(p, "version_desc", limit=MAX_DESCRIPTION) or "",
        user=call.caller.username,
    )
    await _record(call, owner, _api("create_script_version", public), view)
    return owner.show(view)


async def update_script_version(call: Call, public: bool) -> dict[str, Any]:
    owner = await _owner(call, public, PUBLIC_MANAGE if public else MANAGE)
    p = call.params
    script_id = _script_id(p)
    version_id = _version_id(p)
    view = await call.services.scripts.update_version(
        owner.bk_biz_id,
        script_id,
        version_id,
        content=_content(p),
        version_desc=_text(p, "version_desc", limit=MAX_DESCRIPTION),
        user=call.caller.username,
    )
    await _record(call, owner, _api("update_script_version", public), view)
    return owner.show(view)


async def publish_script_version(call: Call, public: bool) -> dict[str, Any]:
    owner = await _owner(call, public, PUBLIC_MANAGE if public else MANAGE)
    p = call.params
    view = await call.services.scripts.publish_version(
        owner.bk_biz_id, _script_id(p), _version_id(p), user=call.caller.username
    )
    await _record(call, owner, _api("publish_script_version", public), view)
    return _status(view)


async def disable_script_version(call: Call, public: bool) -> dict[str, Any]:
    owner = await _owner(call, public, PUBLIC_MANAGE if public else MANAGE)
    p = call.params
    view = await call.services.scripts.disable_version(
        owner.bk_biz_id, _script_id(p), _version_id(p), user=call.caller.username
    )
    await _record(call, owner, _api("disable_script_version", public), view)
    return _status(view)


async def delete_script_version(call: Call, public: bool) -> None:
    owner = await _owner(call, public, PUBLIC_MANAGE if public else MANAGE)
    p = call.params
    view = await call.services.scripts.delete_version(
        owner.bk_biz_id, _script_id(p), _version_id(p), user=call.caller.username
    )
    await _record(call, owner, _api("delete_script_version", public), view)


# routes ----------------------------------------------------------------------
KindHandler = Callable[[Call, bool], Awaitable[Any]]

READS: tuple[KindHandler, ...] = (
    get_script_list,
    get_script_version_list,
    get_script_version_detail,
)
WRITES: tuple[KindHandler, ...] = (
    create_script,
    update_script_basic,
    delete_script,
    create_script_version,
    update_script_version,
    publish_script_version,
    disable_script_version,
    delete_script_version,
)


def _api(name: str, public: bool) -> str:
    """``get_script_list`` → ``get_public_script_list`` for the public kind."""
    return name.replace("script", "public_script", 1) if public else name


def _bind(handler: KindHandler, public: bool) -> Handler:
    async def bound(call: Call) -> Any:
        return await handler(call, public)

    return bound


def register(router: APIRouter) -> None:
    for public in (False, True):
        for handler in READS:
            # bk-log probes get_public_script_list as a system app, maybe with no user
            add_api(
                router,
                _api(handler.__name__, public),
                _bind(handler, public),
                query=True,
                need_user=not public,
            )
        for handler in WRITES:
            add_api(router, _api(handler.__name__, public), _bind(handler, public), query=False)
