"""Where agents talk to the server: the public bootstrap document, and the gate
that keeps agent routes off a plain-text listener.

Agent routes are enroll, the WebSocket and blob transfers (administration of
agents, also under ``/agents/``, is not one). The agent listener serves only
those; the API
listener serves them only over TLS or when the operator opted out of TLS for
agents. Which listener a request came in on is set by the server on the ASGI
scope, never read from headers a client could send.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from jobfleet.api import envelope
from jobfleet.api.route_index import mark_plain
from jobfleet.api.routing import OWN_PREFIX, services_of
from jobfleet.domain.enrollment import AgentChannel
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.audit import AuditLog

log = logging.getLogger(__name__)

AGENT_PREFIX = OWN_PREFIX + "/agents/"
ENROLL_PATH = AGENT_PREFIX + "enroll"
CONNECT_PATH = AGENT_PREFIX + "connect"
BLOBS_PREFIX = AGENT_PREFIX + "blobs/"
BOOTSTRAP_PATH = OWN_PREFIX + "/agent-bootstrap"
# the scope key a listener sets: "agent", "api-tls" or "api"
LISTENER = "jobfleet.listener"
CLOSE_PLAINTEXT = 4403


def bootstrap_document(channel: AgentChannel) -> dict[str, Any]:
    return {
        "ca_pem": channel.ca_pem,
        "ca_fingerprint": channel.fingerprint,
        "agent_port": channel.port,
        "plaintext": channel.plaintext,
    }


@mark_plain
async def agent_bootstrap(request: Request) -> Response:
    """Public: nothing in it is secret, and an agent trusts it only after its CA
    matches the fingerprint in the agent's token."""
    return envelope.ok(bootstrap_document(services_of(request).agent_channel), uuid.uuid4().hex)


def register(router: APIRouter) -> None:
    router.add_api_route(BOOTSTRAP_PATH, agent_bootstrap, methods=["GET"], name="agent_bootstrap")


class ListenerGate:
    """Wraps the app for one listener.

    With ``agent_socket``, an agent's WebSocket that passes the gate goes straight
    to it, not through the HTTP middleware and the router: each of those layers is
    a coroutine frame that thousands of connections would hold for their whole life.
    (On the agent listener the agents' WebSockets never reach the gate: uvicorn hands
    them to ``gateway.wire`` with no ASGI at all; other WebSocket paths still come here.)
    """

    def __init__(
        self,
        app: ASGIApp,
        listener: str,
        channel: AgentChannel,
        audit: AuditLog,
        agent_socket: Callable[[WebSocket], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self.listener = listener
        self.channel = channel
        self.audit = audit
        self.agent_socket = agent_socket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope[LISTENER] = self.listener
        path: str = scope.get("path", "")
        agent_route = path in (ENROLL_PATH, CONNECT_PATH) or path.startswith(BLOBS_PREFIX)
        if self.listener == "agent" and not (agent_route or path in ("/healthz", "/readyz")):
            await _refuse(
                scope,
                receive,
                send,
                JobError(
                    ErrorCode.BAD_REQUEST,
                    f"No API at {path} on the agent port; use the API port",
                    http_status=404,
                ),
            )
            return
        if self.listener == "api" and agent_route and not self.channel.plaintext:
            log.warning("agent_plaintext_refused path=%s peer=%s", path, _peer(scope))
            if path == ENROLL_PATH:
                await self._audit_refused_enroll(scope)
            await _refuse(
                scope,
                receive,
                send,
                JobError(
                    ErrorCode.PERMISSION_DENIED,
                    "Agents must use the encrypted agent port "
                    f"({self.channel.port}); plain-text agent connections are refused "
                    "(a server started with --agent-plaintext accepts them)",
                    http_status=403,
                ),
            )
            return
        if scope["type"] == "websocket" and path == CONNECT_PATH and self.agent_socket:
            await self.agent_socket(WebSocket(scope, receive, send))
            return
        await self.app(scope, receive, send)

    async def _audit_refused_enroll(self, scope: Scope) -> None:
        try:
            await self.audit.record(
                app_code="",
                username="",
                action="agent_enroll_refused",
                resource_type="host",
                detail={"reason": "plain-text connection"},
                source_ip=_peer(scope),
            )
        except Exception:
            log.exception("audit_failed action=agent_enroll_refused")


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


async def _refuse(scope: Scope, receive: Receive, send: Send, exc: JobError) -> None:
    if scope["type"] == "websocket":
        # closing before accepting answers the handshake with HTTP 403
        await send({"type": "websocket.close", "code": CLOSE_PLAINTEXT, "reason": exc.message})
        return
    language = envelope.request_language(HTTPConnection(scope))
    response = envelope.error(exc, uuid.uuid4().hex, language)
    await response(scope, receive, send)
