"""What the engine needs from the agent gateway, as an interface."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any, Protocol


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

    def send(self, message: dict[str, Any]) -> None: ...


class AgentDirectory(Protocol):
    def for_host(self, bk_host_id: int) -> AgentLink | None: ...


class MessageRefusals(Protocol):
    """Where the engine reports an agent message it would not store."""

    def refuse(self, conn: Any, reason: str, detail: str, *, audit: bool = True) -> None: ...


class NodeMessages(Protocol):
    """The bus between server nodes, as the engine uses it."""

    node_id: str
    clustered: bool

    def send(self, node: str, message: dict[str, Any]) -> None: ...


class AgentRequests(Protocol):
    """Asking a host's agent something and waiting for its ``reply``."""

    async def call(self, host: int, message: dict[str, Any], timeout: float) -> dict[str, Any]: ...
