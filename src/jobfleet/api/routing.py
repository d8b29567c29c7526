"""One place that turns handlers into bk-job routes: paths, parsing, auth, the envelope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from jobfleet.api import envelope
from jobfleet.api.auth import Caller
from jobfleet.api.errors import answered, request_id, unexpected
from jobfleet.api.params import MAX_DEPTH, check_tree
from jobfleet.api.route_index import ExactRoute, mark_plain
from jobfleet.api.scope import resolve_scope
from jobfleet.api.services import Services
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.engine.submit import Scope

JOBV3_PREFIXES = (
    "/api/c/compapi/v2/jobv3",
    "/api/bk-job/prod/api/v3",
    "/api/bk-job/prod/api/v3/system",
    # the ESB path without a version: what bkapi-component-open calls by default
    "/api/c/compapi/jobv3",
)
JOBV2_PREFIXES = ("/api/c/compapi/v2/job", "/api/c/compapi/job")
GSE_V1_PREFIXES = ("/api/c/compapi/v2/gse", "/api/c/compapi/gse")
MAX_BODY = 32 * 1024 * 1024
# jobfleet's own routes, beside the bk-job and GSE compatible ones
OWN_PREFIX = "/api/jobfleet/v1"


@dataclass
class Call:
    request: Request
    params: dict[str, Any]
    caller: Caller
    services: Services

    async def scope(self, action: str) -> Scope:
        return await resolve_scope(self.services.identity, self.caller, self.params, action)


Handler = Callable[[Call], Awaitable[Any]]


async def read_params(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query_params)
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        # the size is bounded before this reads it (api/edge.py BodyLimit)
        body = await request.body()
        if body.strip():
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                if "depth limit" in str(exc) or "recursion" in str(exc).lower():
                    raise JobError.invalid(
                        "body", f"nested deeper than {MAX_DEPTH} levels"
                    ) from None
                raise JobError(ErrorCode.BAD_REQUEST, f"Malformed JSON body: {exc}") from None
            if not isinstance(parsed, dict):
                raise JobError(ErrorCode.BAD_REQUEST, "The JSON body must be an object")
            params.update(parsed)
    check_tree(params)
    return params


def make_endpoint(
    services_of: Callable[[Request], Services],
    handler: Handler,
    need_user: bool = True,
    raw_body: bool = False,
    unchecked: bool = False,
) -> Callable[[Request], Awaitable[Response]]:
    """``raw_body``: the handler streams the body (a file), parameters come in the query.
    ``unchecked``: the query as it is, the handler checks what it reads (YAML export)."""

    async def endpoint(request: Request) -> Response:
        services = services_of(request)
        try:
            if unchecked:
                params: dict[str, Any] = dict(request.query_params)
            else:
                params = dict(request.query_params) if raw_body else await read_params(request)
                if raw_body:
                    check_tree(params)
                # path parameters join the others in the handlers: the same bounds hold
                check_tree(dict(request.path_params))
            caller = await services.auth.authenticate(request, params, need_user=need_user)
            data = await handler(Call(request, params, caller, services))
            answered(request)
            # a handler may answer something else than the envelope (a YAML document)
            return data if isinstance(data, Response) else envelope.ok(data, request_id(request))
        except JobError:
            raise
        except ClientDisconnect:
            # the client went before its body came (or its body took too long): no fault
            # of the server's, nobody to answer, and its place is freed at once
            raise JobError(ErrorCode.BAD_REQUEST, "The client closed the connection") from None
        except Exception:
            raise await unexpected(request, services.db) from None

    return mark_plain(endpoint)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def with_path(handler: Handler) -> Handler:
    """``handler`` with the path's parameters joined to the others. A business in the
    path is the call's scope: nothing else in the call may name another."""

    async def wrapped(call: Call) -> Any:
        if "bk_biz_id" in call.request.path_params:
            call.params.pop("bk_scope_type", None)
            call.params.pop("bk_scope_id", None)
        call.params.update(call.request.path_params)
        return await handler(call)

    return wrapped


def add_own(router: APIRouter, method: str, path: str, handler: Handler) -> None:
    """One of jobfleet's own routes (``OWN_PREFIX`` + ``path``), its path parameters
    joined to the others, named ``"METHOD path"``."""
    router.add_api_route(
        OWN_PREFIX + path,
        make_endpoint(services_of, with_path(handler)),
        methods=[method],
        name=f"{method} {path}",
    )


def add_api(
    router: APIRouter,
    name: str,
    handler: Handler,
    *,
    query: bool,
    prefixes: Sequence[str] = JOBV3_PREFIXES,
    need_user: bool = True,
) -> None:
    """Serve ``name`` under every prefix, with and without the trailing slash. The first
    prefix's form without the slash is the documented operation; the others are
    ``ExactRoute``s."""
    endpoint = make_endpoint(services_of, handler, need_user)
    methods = ["GET", "POST"] if query else ["POST"]
    for i, prefix in enumerate(prefixes):
        for path in (f"{prefix}/{name}", f"{prefix}/{name}/"):
            if i != 0 or path.endswith("/"):
                router.routes.append(ExactRoute(path, endpoint, methods, f"{name}:{path}"))
                continue
            for method in methods:
                router.add_api_route(
                    path,
                    endpoint,
                    methods=[method],
                    name=f"{name}:{method}:{path}",
                    summary=name,
                    # one id per documented operation: OpenAPI wants them unique
                    operation_id=f"{prefix.strip('/').replace('/', '_')}_{name}_{method.lower()}",
                )
