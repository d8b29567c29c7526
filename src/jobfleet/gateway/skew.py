"""Agents of an earlier release: what the server does not send them.

A fleet is upgraded server first, and agents of the release before keep running for
weeks. Such an agent ignores a message it does not know, or does not know all a
message asks: it would put a sensitive parameter on the script's command line, and
leave a GSE request unanswered until the server's timeout. The server therefore
sends a message that needs a capability (``domain.protocol``, ``CAP_*``) only to
agents that announced it, and answers for the others as the agent would if it
refused the message itself, at once, with the reason and the remedy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from jobfleet.domain import protocol
from jobfleet.domain.status import HostStatus
from jobfleet.store.database import now_ms

log = logging.getLogger(__name__)

# what an agent lacking the capability cannot do, for the message that says so
_CANNOT = {
    protocol.CAP_SENSITIVE: "keep a sensitive parameter off the script's command line, "
    "where every user of the host could read it",
    protocol.CAP_PROC: "manage processes",
    protocol.CAP_DISPATCH: "hand messages to local plugins",
}
# the capabilities the server asks of an agent before it sends it some messages
GATED = frozenset(_CANNOT)

Answer = Callable[[dict[str, Any]], None]


def needs(message: protocol.ServerMessage | dict[str, Any]) -> str | None:
    """The capability an agent needs to be sent ``message``, or None."""
    kind = message.get("t")
    if kind == protocol.RUN:
        return protocol.CAP_SENSITIVE if message.get("sensitive") else None
    if kind == protocol.PROC:
        return protocol.CAP_PROC
    if kind == protocol.DISPATCH:
        return protocol.CAP_DISPATCH
    return None


def refusal(
    message: protocol.ServerMessage | dict[str, Any], cap: str, version: str
) -> dict[str, Any]:
    """What an agent of ``version`` lacking ``cap`` answers to ``message``, had it refused
    the message itself: a failed task for a run, an error for a request."""
    reason = (
        f"the agent of this host (version {version or 'unknown'}) cannot {_CANNOT[cap]}: "
        "upgrade it"
    )
    status = int(HostStatus.GSE_TASK_ERROR)
    if message.get("t") == protocol.RUN:
        now = now_ms()
        return dict(
            protocol.done(
                str(message.get("id")), 1, status=status, exit=None, start=now, end=now,
                data=reason + "\n",
            )
        )
    return dict(protocol.reply(str(message.get("id")), status=status, error=reason))


def gate(
    caps: frozenset[str] | None, version: str, answer: Answer, agent_id: str
) -> Callable[[protocol.ServerMessage | dict[str, Any]], bool] | None:
    """For a connection whose agent announced ``caps`` (None: it announced nothing), what
    tells whether a message may not go to it, and then answers in its name with
    ``answer`` (on the next loop turn: the sender is still sending). None when the agent
    has every capability the server asks for."""
    lacking = GATED - (caps or frozenset())
    if not lacking:
        return None

    def refuses(message: protocol.ServerMessage | dict[str, Any]) -> bool:
        cap = needs(message)
        if cap is None or cap not in lacking:
            return False
        log.warning(
            "agent_capability_missing agent=%s version=%s capability=%s kind=%s",
            agent_id, version, cap, message.get("t"),
        )
        asyncio.get_running_loop().call_soon(answer, refusal(message, cap, version))
        return True

    return refuses
