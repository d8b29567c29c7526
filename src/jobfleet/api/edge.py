"""What happens to a request before routing and authentication: merged slashes, body size
limits and the cap on API requests in flight. All are plain ASGI, so nothing is read or
buffered before they decide.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobfleet.api import envelope
from jobfleet.domain.errors import ErrorCode, JobError

log = logging.getLogger(__name__)


_SLASHES = re.compile(r"/{2,}")
_SLASHES_RAW = re.compile(rb"/{2,}")
API_ROOT = "/api/"


class MergeSlashes:
    """Reads a run of slashes in an API path as one, as the nginx-based gateways in front of
    bk-job and GSE do (``merge_slashes``): clients join a base URL that ends in ``/`` to a
    path that starts with one (``BK_COMPONENT_API_URL + "/api/bk-job/prod/"``). Other paths
    (the console's) are left as they came."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and "//" in path:
            merged = _SLASHES.sub("/", path)
            if merged.startswith(API_ROOT):
                scope = {**scope, "path": merged}
                raw = scope.get("raw_path")
                if isinstance(raw, bytes):
                    scope["raw_path"] = _SLASHES_RAW.sub(b"/", raw)
        await self.app(scope, receive, send)


class BodyTooLarge(JobError):
    """Raised from ``receive`` once a body passes its limit; handlers answer it as any
    JobError (HTTP 413 in the envelope)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            ErrorCode.BAD_REQUEST,
            f"Request body larger than the limit of {limit} bytes for this URL",
            http_status=413,
        )


async def _answer(
    scope: Scope, send: Send, exc: JobError, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    language = envelope.request_language(HTTPConnection(scope))
    response = envelope.error(exc, uuid.uuid4().hex, language)
    response.raw_headers.extend(headers)
    await response(scope, _never_receive, send)


async def _never_receive() -> Message:  # pragma: no cover - a response never reads
    return {"type": "http.disconnect"}


class BodyLimit:
    """Refuses a body over its route's limit: by ``Content-Length`` before reading a byte,
    and by counting when the client streams without one.

    ``large_prefixes``: paths that take files (up to ``large``); every other path takes
    up to ``default``.
    """

    def __init__(
        self, app: ASGIApp, *, default: int, large: int, large_prefixes: Sequence[str]
    ) -> None:
        self.app = app
        self.default = default
        self.large = large
        self.large_prefixes = tuple(large_prefixes)

    def limit_of(self, path: str) -> int:
        return self.large if path.startswith(self.large_prefixes) else self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope["path"])
        # the connection is closed after a refusal: the rest of the body is never read
        close = [(b"connection", b"close")]
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
        if length is not None and (length < 0 or length > limit):
            exc = (
                BodyTooLarge(limit)
                if length > limit
                else JobError(ErrorCode.BAD_REQUEST, "Invalid Content-Length", http_status=400)
            )
            await _answer(scope, send, exc, close)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if received > limit:
                    message = {**message, "headers": [*message.get("headers", []), *close]}
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:
            # a handler that did not answer it itself
            if not started:
                await _answer(scope, send, exc, close)


class RequestCap:
    """At most ``limit`` API requests in flight; past it, HTTP 503 in the envelope at once.

    WebSockets (agents), the agents' own routes and ``exempt`` paths (the health check)
    are not counted, so a flood of slow API calls leaves room for them.
    """

    def __init__(self, app: ASGIApp, *, limit: int, exempt: Sequence[str] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = tuple(exempt)
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0 or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            log.warning("api_busy in_flight=%d path=%s", self.in_flight, scope["path"])
            await _answer(
                scope,
                send,
                JobError(
                    ErrorCode.SERVICE_UNAVAILABLE,
                    f"The server is handling {self.limit} requests already: try again shortly",
                    http_status=503,
                ),
                [(b"retry-after", b"1")],
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
