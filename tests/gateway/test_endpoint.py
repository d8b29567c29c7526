"""gateway/endpoint.py over a real WebSocket on loopback: agent authentication, the
hello/welcome handshake, the live registry, and refused messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from tests.integration.harness import bound_socket, eventually, serve_on
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from jobfleet.domain.throttle import Throttle
from jobfleet.gateway.endpoint import (
    CLOSE_PROTOCOL,
    CLOSE_REVOKED,
    Gateway,
)
from jobfleet.gateway.presence import Presence
from jobfleet.gateway.refusals import Refusals
from jobfleet.gateway.registry import AgentConnection, Registry
from jobfleet.store.audit import AuditLog
from jobfleet.store.database import Database
from jobfleet.store.identity import IdentityStore


class Events:
    """What the engine would be told: who came, who went, what they said."""

    def __init__(self) -> None:
        self.online: list[int] = []
        self.offline: list[int] = []
        self.messages: list[dict[str, Any]] = []

    def agent_online(self, conn: AgentConnection) -> None:
        self.online.append(conn.bk_host_id)

    def agent_offline(self, conn: AgentConnection) -> None:
        self.offline.append(conn.bk_host_id)

    def agent_message(self, conn: AgentConnection, message: dict[str, Any]) -> None:
        self.messages.append(message)


@dataclass
class Node:
    url: str
    gateway: Gateway
    registry: Registry
    identity: IdentityStore
    events: Events
    audit: AuditLog
    agent_id: str
    secret: str
    host_id: int

    def dial(self, credential: str | None = None) -> Any:
        cred = f"{self.agent_id}:{self.secret}" if credential is None else credential
        headers = {"Authorization": f"Agent {cred}"} if cred else {}
        return connect(self.url, additional_headers=headers, open_timeout=10)


@pytest.fixture
async def node(database_url: str) -> AsyncIterator[Node]:
    db = Database(database_url)
    await db.migrate()
    identity = IdentityStore(db)
    await identity.create_business(2, "biz")
    token = await identity.create_enroll_token(note="tests")
    agent_id, secret, host_id = await identity.enroll(
        token, ip="10.9.0.1", bk_cloud_id=0, bk_biz_id=2, hostname="h1", os_type="linux"
    )
    registry, events, audit = Registry(), Events(), AuditLog(db)
    presence = Presence(db, "node-test")
    gateway = Gateway(
        identity,
        registry,
        presence,
        heartbeat=5.0,
        refusals=Refusals(audit, window=3600),
        failures=Throttle("failed authentications", 0.001, 3),
    )
    gateway.events = events

    async def socket(ws: WebSocket) -> None:
        await gateway.serve(ws)

    app = Starlette(routes=[WebSocketRoute("/agents/connect", socket)])
    sock = bound_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    presence.start()
    gateway.start()
    task = await serve_on(server, sock)
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/agents/connect"
    try:
        yield Node(url, gateway, registry, identity, events, audit, agent_id, secret, host_id)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        await gateway.stop()
        await presence.stop()
        await db.close()


async def closed_with(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    return ws.close_code


async def refused(node: Node, credential: str) -> None:
    """Refused before the handshake completes: the client sees HTTP 403."""
    with pytest.raises(InvalidStatus) as caught:
        async with node.dial(credential):
            pass
    assert caught.value.response.status_code == 403


async def hello(ws: ClientConnection) -> dict[str, Any]:
    await ws.send(json.dumps({"t": "hello", "hostname": "h1", "version": "test", "known": []}))
    return dict(json.loads(await asyncio.wait_for(ws.recv(), 10)))


@pytest.mark.parametrize("credential", ["", "nobody:nothing", "no-colon"])
async def test_an_agent_without_a_good_credential_is_refused(
    node: Node, credential: str, caplog: pytest.LogCaptureFixture
) -> None:
    await refused(node, credential)
    assert len(node.registry) == 0 and node.events.online == []
    assert "agent_auth_failed peer=127.0.0.1" in caplog.text


async def test_hello_is_answered_with_welcome_and_the_agent_is_live(node: Node) -> None:
    async with node.dial() as ws:
        welcome = await hello(ws)
        assert welcome["t"] == "welcome"
        assert (welcome["agent_id"], welcome["bk_host_id"]) == (node.agent_id, node.host_id)
        assert welcome["heartbeat"] == 5.0
        conn = node.registry.for_host(node.host_id)
        assert conn is not None and conn.agent_id == node.agent_id
        assert node.events.online == [node.host_id]
    await eventually(lambda: _true(len(node.registry) == 0))
    assert node.events.offline == [node.host_id]


async def test_the_first_message_must_be_hello(node: Node) -> None:
    async with node.dial() as ws:
        await ws.send(json.dumps({"t": "out", "id": "t1", "seq": 1, "data": "x"}))
        assert await closed_with(ws) == CLOSE_PROTOCOL
    assert len(node.registry) == 0


async def test_good_messages_reach_the_engine_and_bad_ones_are_refused_and_acked(
    node: Node,
) -> None:
    async with node.dial() as ws:
        await hello(ws)
        good = {"t": "out", "id": "1:1:1", "seq": 1, "data": "hello\n"}
        bad = {"t": "out", "id": "1:1:1", "seq": 2, "data": 5}
        await ws.send(json.dumps([good, bad]))
        # a message that will never be taken is acknowledged, so it is not sent again
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack == {"t": "ack", "acks": [["1:1:1", 2]]}
        await eventually(lambda: _true(node.events.messages))
    assert node.events.messages == [good]
    [reason] = node.gateway.refusals.counts
    await node.gateway.refusals.flush()
    [entry] = await node.audit.recent(10)
    assert entry["resource_id"] == node.agent_id and entry["detail"]["reason"] == reason


async def test_revoking_the_credential_cuts_the_connection(node: Node) -> None:
    async with node.dial() as ws:
        await hello(ws)
        await node.identity.revoke_agent(node.agent_id)
        assert await closed_with(ws) == CLOSE_REVOKED
    assert len(node.registry) == 0
    await refused(node, f"{node.agent_id}:{node.secret}")


async def test_an_address_out_of_failures_is_throttled_but_a_proven_agent_is_not(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    async with node.dial() as ws:  # proves itself before the flood
        await hello(ws)
    for _ in range(3):
        await refused(node, "nobody:nothing")
    assert "agent_auth_throttled" not in caplog.text
    await refused(node, "nobody:nothing")
    assert "agent_auth_throttled peer=127.0.0.1" in caplog.text
    async with node.dial() as ws:
        assert (await hello(ws))["t"] == "welcome"


async def _true(value: object) -> bool:
    return bool(value)
