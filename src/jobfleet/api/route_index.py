"""Exact paths answered by a dictionary look-up instead of the router's scan.

FastAPI finds a request's route by trying every route in turn; with the bk-job
path forms (four prefixes, with and without the trailing slash, GET and POST)
the API has some 850 routes, and a request for one near the end paid about
850 pattern matches: more than the rest of a status query. Routes whose
endpoint takes the plain ``Request`` (those ``api/routing.py`` makes, marked
with ``PLAIN_REQUEST``) and whose path has no parameters are looked up here by
(method, path); anything else goes to the router as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from jobfleet.domain.errors import JobError

# the attribute that marks an endpoint as taking only the request
PLAIN_REQUEST = "jobfleet_plain_request"

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorAnswer = Callable[[Request, Exception], Awaitable[Response]]


def mark_plain(endpoint: Endpoint) -> Endpoint:
    setattr(endpoint, PLAIN_REQUEST, True)
    return endpoint


class ExactRoute(Route):
    """A route for one exact path and a plain endpoint, for the undocumented forms of a
    path (other prefixes, the trailing slash). It costs a string comparison to build and
    to match, where an ``APIRoute`` analyses its endpoint and compiles a pattern, which
    for the API's many path forms was most of the time it took to build the app. It is
    a starlette ``Route`` so that a router which includes it rebuilds it as one."""

    def __init__(self, path: str, endpoint: Endpoint, methods: Sequence[str], name: str) -> None:
        # not Route.__init__: that compiles the pattern this route does without
        self.path = self.path_format = path
        self.endpoint = mark_plain(endpoint)
        self.allowed = frozenset(m.upper() for m in methods)
        self.methods = set(self.allowed)
        self.name = name
        self.include_in_schema = False
        self.param_convertors = {}

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or get_route_path(scope) != self.path:
            return Match.NONE, {}
        child = {"endpoint": self.endpoint, "path_params": dict(scope.get("path_params", {}))}
        return (Match.FULL if scope["method"] in self.allowed else Match.PARTIAL), child

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in self.allowed:
            # as starlette's Route does: the app's exception handler answers it
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(sorted(self.allowed))})
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


def plain_routes(routes: Sequence[BaseRoute]) -> dict[tuple[str, str], Endpoint]:
    """(method, path) → endpoint of the routes this index may answer."""
    table: dict[tuple[str, str], Endpoint] = {}
    for route in routes:
        if isinstance(route, ExactRoute):
            for method in route.allowed:
                table.setdefault((method, route.path), route.endpoint)
            continue
        if not isinstance(route, APIRoute) or "{" in route.path or route.dependencies:
            continue
        if not getattr(route.endpoint, PLAIN_REQUEST, False):
            continue
        for method in route.methods or ():
            # the first route registered for a path wins, as in the router
            table.setdefault((method, route.path), route.endpoint)
    return table


class RouteIndex:
    """Answers the indexed routes itself; a ``JobError`` goes to ``on_error`` (the
    API's exception handler)."""

    def __init__(
        self, app: ASGIApp, *, routes: Sequence[BaseRoute], on_error: ErrorAnswer
    ) -> None:
        self.app = app
        self.table = plain_routes(routes)
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            self.table.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        response: Any
        try:
            response = await endpoint(request)
        except JobError as exc:
            response = await self.on_error(request, exc)
        await response(scope, receive, send)
