"""What the engine needs from the agent gateway, as an interface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

from jobfleet.domain.protocol import ServerMessage


class AgentLink(Protocol):
    # read-only: a link to an agent on another node knows less than a local one
    @property
    def known(self) -> AbstractSet[str]: ...

    @property
    def bk_host_id(self) -> int: ...

    @property
    def agent_id(self) -> str: ...

    @property
    def peer(self) -> str: ...

    def send(self, message: ServerMessage | dict[str, Any]) -> None: ...

    def hold_reading(self, held: bool) -> None:
        """Stop reading what the agent sends (True) until told again (False)."""


class AgentDirectory(Protocol):
    def for_host(self, bk_host_id: int) -> AgentLink | None: ...

    async def refresh(self, hosts: list[int]) -> bool:
        """Look again where these hosts' agents are (a cluster's shared map); False
        when it could not be read."""


class MessageRefusals(Protocol):
    """Where the engine reports an agent message it would not store."""

    def refuse(self, conn: Any, reason: str, detail: str, *, audit: bool = True) -> None: ...


class NodeMessages(Protocol):
    """The bus between server nodes, as the engine uses it."""

    node_id: str
    clustered: bool

    def send(self, node: str, message: dict[str, Any]) -> None: ...


class LiveEvents(Protocol):
    """Where the engine tells live viewers that something of a job changed (bus/).

    Topics are ``job:<job_instance_id>`` (job and step status) and
    ``step:<step_instance_id>`` (host results and output of a step). An event is a
    small hint, never the data itself: viewers read what changed from the store, so
    an event lost between nodes delays a view and never corrupts it.
    """

    def publish(self, topic: str, event: dict[str, Any]) -> None: ...

    def subscribe(self, topics: list[str]) -> AsyncIterator[dict[str, Any]]: ...


class NoLiveEvents:
    """No live viewers: events go nowhere, subscriptions wait forever."""

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        return None

    async def subscribe(self, topics: list[str]) -> AsyncIterator[dict[str, Any]]:
        await asyncio.Event().wait()
        yield {}


class AgentRequests(Protocol):
    """Asking a host's agent something and waiting for its ``reply``."""

    async def call(self, host: int, message: dict[str, Any], timeout: float) -> dict[str, Any]: ...
