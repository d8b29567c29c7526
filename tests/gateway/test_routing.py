"""gateway/routing.py: replies to requests another node passed on go back to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from jobfleet.domain import protocol
from jobfleet.engine.rpc import AgentRpc
from jobfleet.gateway.registry import AgentConnection, Registry
from jobfleet.gateway.routing import REPLY, AgentRouter, ClusterAgents


class Bus:
    """The bus as a node's router sees it: what it sent, and where."""

    clustered = True
    node_id = "here"

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, node: str, message: dict[str, Any]) -> None:
        self.sent.append((node, message))

    def holder(self, host: int) -> str | None:
        return None


async def _drop(frame: bytes) -> None:
    pass


async def test_only_the_asked_host_takes_the_way_back_of_a_passed_on_request() -> None:
    registry, bus = Registry(), Bus()
    asked = AgentConnection("a1", 1, _drop)
    other = AgentConnection("a2", 2, _drop)
    registry.add(asked)
    registry.add(other)
    router = AgentRouter(registry, bus)  # type: ignore[arg-type]
    router.deliver({"k": "agent", "host": 1, "from": "there",
                    "msg": {"t": protocol.FILE_LIST, "id": "r1"}})
    forged = {"t": protocol.REPLY, "id": "r1", "status": 0, "files": []}
    # another host answering under the asked one's request id neither reaches the node
    # that asked nor uses up the way back
    assert router.route_reply(other, forged) is False
    assert bus.sent == []
    reply = {"t": protocol.REPLY, "id": "r1", "status": 0, "files": []}
    assert router.route_reply(asked, reply) is True
    assert bus.sent == [("there", {"k": REPLY, "host": 1, "msg": reply})]
    # once taken, the way back is gone
    assert router.route_reply(asked, reply) is False
    await asked.close()
    await other.close()


class HeldElsewhere(Bus):
    """Host 1's agent is connected to the node ``there``."""

    def holder(self, host: int) -> str | None:
        return "there" if host == 1 else None


@contextlib.asynccontextmanager
async def listing(
        bus: Bus) -> AsyncIterator[tuple[ClusterAgents, AgentRpc, asyncio.Future[Any]]]:
    """A file listing asked of host 1 through ``bus``; a test that fails leaves no call
    behind to run into the next test's loop."""
    agents = ClusterAgents(Registry(), bus)  # type: ignore[arg-type]
    rpc = AgentRpc(agents, agent_lost_grace=0.5)
    call = asyncio.ensure_future(rpc.call(1, {"t": protocol.FILE_LIST}, 10))
    try:
        yield agents, rpc, call
    finally:
        call.cancel()
        # what the call ended with is the test's to check, not its cleanup's
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await call


async def sent(bus: Bus, count: int) -> None:
    """Until ``bus`` has sent ``count`` messages: within seconds, so a request that is never
    sent fails the test rather than holding it to pytest's timeout."""
    async def until() -> None:
        while len(bus.sent) < count:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(until(), 5)


async def test_a_request_to_an_agent_on_another_node_is_sent_once_while_it_works() -> None:
    """A listing or upload that takes its agent more than a second is not asked again
    (and again) as if the agent had moved: it stays on the node it was sent to."""
    bus = HeldElsewhere()
    async with listing(bus) as (agents, rpc, call):
        await asyncio.sleep(2.5)
        assert len(bus.sent) == 1, bus.sent
        node, message = bus.sent[0]
        assert node == "there" and message["msg"]["t"] == protocol.FILE_LIST
        link = agents.for_host(1)
        assert link is not None
        rpc.reply(link, {"t": protocol.REPLY, "id": message["msg"]["id"], "files": []})
        assert (await asyncio.wait_for(call, 10))["files"] == []


async def test_a_request_for_an_agent_that_left_is_answered_as_undelivered() -> None:
    """The node that asked learns at once that its request found no agent, rather than
    waiting to its deadline while its map shows the agent still here."""
    registry, bus = Registry(), Bus()
    router = AgentRouter(registry, bus)  # type: ignore[arg-type]
    router.deliver({"k": "agent", "host": 1, "from": "there",
                    "msg": {"t": protocol.FILE_UPLOAD, "id": "r1"}})
    router.deliver({"k": "agent", "host": 1, "from": "there",
                    "msg": {"t": protocol.KILL, "id": "1:0:1"}})
    assert bus.sent == [("there", {"k": REPLY, "host": 1,
                                   "msg": protocol.undelivered_reply("r1")})]


async def test_a_request_answered_as_undelivered_is_asked_again() -> None:
    bus = HeldElsewhere()
    async with listing(bus) as (agents, rpc, call):
        await sent(bus, 1)
        link = agents.for_host(1)
        assert link is not None
        rpc.reply(link, protocol.undelivered_reply(bus.sent[0][1]["msg"]["id"]))
        await sent(bus, 2)
        assert not call.done()
        rpc.reply(link, {"t": protocol.REPLY, "id": bus.sent[1][1]["msg"]["id"], "files": []})
        assert (await asyncio.wait_for(call, 10))["files"] == []
