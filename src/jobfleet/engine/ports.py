"""What the engine needs from the agent gateway, as an interface."""

from __future__ import annotations

from typing import Any, Protocol


class AgentLink(Protocol):
    known: set[str]
    bk_host_id: int
    agent_id: str
    peer: str

    def send(self, message: dict[str, Any]) -> None: ...


class AgentDirectory(Protocol):
    def for_host(self, bk_host_id: int) -> AgentLink | None: ...


class MessageRefusals(Protocol):
    """Where the engine reports an agent message it would not store."""

    def refuse(self, conn: Any, reason: str, detail: str, *, audit: bool = True) -> None: ...
