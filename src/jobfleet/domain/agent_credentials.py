"""An agent's credential as it travels: ``Authorization: Agent <agent_id>:<secret>`` on its
WebSocket and on its file requests."""

from __future__ import annotations

SCHEME = "Agent "


def parse_credential(header: str | None) -> tuple[str, str] | None:
    """``(agent_id, secret)`` from an ``Authorization`` header; None if it holds no agent
    credential."""
    if not header or not header.startswith(SCHEME):
        return None
    agent_id, _, secret = header[len(SCHEME) :].strip().partition(":")
    return (agent_id, secret) if agent_id and secret else None
