"""The interface every bus implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol


class BusListener(Protocol):
    """What a node is told by its bus."""

    async def message(self, message: dict[str, Any]) -> None:
        """A message another node (or this one) sent to this node."""

    def presence(self, node: str, online: list[int], offline: list[int]) -> None:
        """Agents came to or left ``node`` (this node's own changes included)."""

    async def node_gone(self, node: str, hosts: list[int]) -> None:
        """``node`` stopped renewing its liveness and this node took over what it left;
        ``hosts`` are the agents it held."""

    def reconnected(self) -> None:
        """The connection to the shared bus came back after a loss: what was sent
        meanwhile may be lost, so resend what is still awaited."""


class Bus(Protocol):
    node_id: str
    # True when other nodes may exist: callers skip cross-node work otherwise
    clustered: bool

    async def start(self, listener: BusListener) -> None: ...

    async def stop(self) -> None: ...

    def send(self, node: str, message: dict[str, Any]) -> None:
        """Queue a message for ``node``; held while the bus is away, delivered at least
        once and in order per sender."""

    async def flush(self) -> None:
        """Wait until what was queued has been handed over."""

    async def publish(self, topic: str, event: dict[str, Any]) -> None:
        """Fire and forget, to whoever watches ``topic`` now (live views)."""

    def subscribe(self, topic: str) -> AsyncIterator[dict[str, Any]]: ...

    # which node holds which agent ---------------------------------------------
    def hold(self, hosts: list[int]) -> None:
        """Agents of these hosts are connected to this node now."""

    def release(self, hosts: list[int]) -> None:
        """Agents of these hosts left this node."""

    def holder(self, host: int) -> str | None:
        """The live node that holds the host's agent, as this node last heard."""

    async def refresh(self, hosts: list[int]) -> bool:
        """Read where these hosts' agents are from the shared map now (for hosts a job
        is about to fail as absent: news of their arrival may still be on its way).
        False when the map could not be read: where they are is unknown then."""

    def live_nodes(self) -> set[str]: ...

    async def live_among(self, nodes: list[str]) -> set[str] | None:
        """Those of ``nodes`` that are alive now by the cluster's own rule (a live
        registration), read from the shared truth rather than this node's view; None
        while that cannot be told (the shared bus unreachable, or restarted empty so
        recently that live nodes may not have registered again yet)."""
