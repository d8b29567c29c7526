"""gateway/routing.py: replies to requests another node passed on go back to it."""

from __future__ import annotations

from typing import Any

from jobfleet.domain import protocol
from jobfleet.gateway.registry import AgentConnection, Registry
from jobfleet.gateway.routing import REPLY, AgentRouter


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
