"""Reaching an agent whichever node holds it.

The engine looks agents up through ``ClusterAgents``: a host whose agent is
connected here gets its live connection; one held by another node gets a
``RemoteLink``, whose messages travel on the bus to that node, where
``AgentRouter.deliver`` hands them to the agent (or passes them on, if the agent
moved meanwhile). Replies to requests that came from another node go back to it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from jobfleet.bus.base import Bus
from jobfleet.domain import protocol
from jobfleet.domain.protocol import ServerMessage
from jobfleet.gateway.registry import AgentConnection, Registry

log = logging.getLogger(__name__)

AGENT = "agent"
REPLY = "reply"
# how long a node remembers where to send the reply to a request it passed on
REPLY_ROUTE_TTL = 3600.0
MAX_HOPS = 3
# what an agent answers with a ``reply``, to go back to the node that asked
REQUESTS = (protocol.FILE_LIST, protocol.FILE_UPLOAD, protocol.PROC, protocol.DISPATCH)


class AgentEvents(Protocol):
    def agent_online(self, conn: Any) -> None: ...

    def agent_offline(self, conn: Any) -> None: ...

    def connection_closed(self, conn: Any) -> None: ...

    def agent_message(self, conn: Any, message: dict[str, Any]) -> None: ...


class RemoteLink:
    """An agent connected to another node, as the engine sees it."""

    # what the agent holds is known only where it is connected: that node filters
    # repeats, and the agent ignores a task it already has
    known: frozenset[str] = frozenset()
    agent_id = ""

    def __init__(self, bus: Bus, node: str, bk_host_id: int) -> None:
        self.bus = bus
        self.node = node
        self.bk_host_id = bk_host_id
        self.peer = f"node:{node}"

    # each lookup makes a new link: one to the same node for the same host is the same
    # way to the agent (a request sent through it is not asked again)
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteLink):
            return NotImplemented
        return (self.node, self.bk_host_id) == (other.node, other.bk_host_id)

    def __hash__(self) -> int:
        return hash((self.node, self.bk_host_id))

    def hold_reading(self, held: bool) -> None:
        """Nothing to hold: the node holding the agent reads it."""

    def send(self, message: ServerMessage | dict[str, Any]) -> None:
        self.bus.send(
            self.node,
            {"k": AGENT, "host": self.bk_host_id, "from": self.bus.node_id, "msg": message},
        )


class ClusterAgents:
    """The agent directory of a node: its own connections, then the bus's map."""

    def __init__(self, registry: Registry, bus: Bus) -> None:
        self.registry = registry
        self.bus = bus

    def for_host(self, bk_host_id: int) -> AgentConnection | RemoteLink | None:
        conn = self.registry.for_host(bk_host_id)
        if conn is not None or not self.bus.clustered:
            return conn
        node = self.bus.holder(bk_host_id)
        if node is None or node == self.bus.node_id:
            return None
        return RemoteLink(self.bus, node, bk_host_id)

    async def refresh(self, hosts: list[int]) -> bool:
        if self.bus.clustered and hosts:
            return await self.bus.refresh(hosts)
        return True


class AgentRouter:
    """The holding side: messages for agents connected here, and where replies go."""

    def __init__(self, registry: Registry, bus: Bus) -> None:
        self.registry = registry
        self.bus = bus
        # request id -> (the node that asked, the host asked, until when)
        self._reply_to: dict[str, tuple[str, int, float]] = {}

    def deliver(self, message: dict[str, Any]) -> None:
        host = int(message["host"])
        inner: dict[str, Any] = message["msg"]
        conn = self.registry.for_host(host)
        if conn is not None:
            if inner.get("t") == protocol.RUN and inner.get("id") in conn.known:
                return  # the agent has it already
            if inner.get("t") in REQUESTS:
                self._remember(str(inner.get("id")), str(message["from"]), host)
            conn.send(inner)
            return
        hops = int(message.get("hops") or 0)
        node = self.bus.holder(host)
        if node is not None and node != self.bus.node_id and hops < MAX_HOPS:
            self.bus.send(node, {**message, "hops": hops + 1})
        else:
            log.info("bus_agent_absent host=%s kind=%s", host, inner.get("t"))
            asker = message.get("from")
            if inner.get("t") in REQUESTS and isinstance(asker, str) and asker:
                # the node that asked would wait for an answer to its deadline while
                # its map still shows the agent here (it may come back here)
                self.bus.send(
                    asker,
                    {
                        "k": REPLY,
                        "host": host,
                        "msg": protocol.undelivered_reply(str(inner.get("id"))),
                    },
                )

    def _remember(self, request_id: str, node: str, host: int) -> None:
        now = time.monotonic()
        if len(self._reply_to) > 10_000:
            self._reply_to = {k: v for k, v in self._reply_to.items() if v[2] > now}
        self._reply_to[request_id] = (node, host, now + REPLY_ROUTE_TTL)

    def route_reply(self, conn: AgentConnection, message: dict[str, Any]) -> bool:
        """Send an agent's reply to the node that asked; False if this node asked.

        Only the host that was asked may take the route: another agent sending a reply
        under the same id would otherwise use it up, and the asked host's true reply
        would find no way back and leave the request to time out."""
        request_id = str(message.get("id"))
        route = self._reply_to.get(request_id)
        if route is None or route[1] != conn.bk_host_id:
            return False
        del self._reply_to[request_id]
        if route[0] == self.bus.node_id:
            return False
        self.bus.send(route[0], {"k": REPLY, "host": conn.bk_host_id, "msg": message})
        return True


class RoutedEvents:
    """What the gateway tells the engine, with the agents' presence on the bus and
    replies for other nodes sent there."""

    def __init__(self, inner: AgentEvents, router: AgentRouter, bus: Bus) -> None:
        self.inner = inner
        self.router = router
        self.bus = bus

    def agent_online(self, conn: AgentConnection) -> None:
        self.bus.hold([conn.bk_host_id])
        self.inner.agent_online(conn)

    def agent_offline(self, conn: AgentConnection) -> None:
        self.bus.release([conn.bk_host_id])
        self.inner.agent_offline(conn)

    def connection_closed(self, conn: AgentConnection) -> None:
        self.inner.connection_closed(conn)

    def agent_message(self, conn: AgentConnection, message: dict[str, Any]) -> None:
        if message.get("t") == protocol.REPLY and self.router.route_reply(conn, message):
            return
        self.inner.agent_message(conn, message)
