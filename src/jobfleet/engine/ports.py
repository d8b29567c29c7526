"""What the engine needs from the agent gateway, as an interface."""

from __future__ import annotations

from typing import Any, Protocol


class AgentLink(Protocol):
    known: set[str]
    bk_host_id: int

    def send(self, message: dict[str, Any]) -> None: ...


class AgentDirectory(Protocol):
    def for_host(self, bk_host_id: int) -> AgentLink | None: ...
