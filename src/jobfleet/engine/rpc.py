"""Asking a host's agent something and waiting for its reply (file listings,
uploads of source files): requests that are not host tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from jobfleet.domain import protocol
from jobfleet.engine.ports import AgentDirectory, AgentLink

log = logging.getLogger(__name__)

# how long after a request could not be handed to its agent it is sent again (s)
RETRY_UNDELIVERED = 0.5


class AgentUnavailable(Exception):
    def __init__(self, host: int) -> None:
        super().__init__(f"the agent of host {host} is not connected")
        self.host = host


class AgentRpc:
    def __init__(self, agents: AgentDirectory, agent_lost_grace: float) -> None:
        self.agents = agents
        self.agent_lost_grace = agent_lost_grace
        self._replies: dict[str, tuple[int, asyncio.Future[dict[str, Any]]]] = {}

    def reply(self, conn: AgentLink, message: dict[str, Any]) -> None:
        """An agent answered: only the host that was asked may answer.

        Its text is mapped as a host's output is (``protocol.clean_reply``): a NUL in
        an error would make PostgreSQL refuse the write that holds it, and with it the
        other hosts' results of the same step or operation."""
        waiter = self._replies.get(str(message.get("id")))
        if waiter is not None and waiter[0] == conn.bk_host_id and not waiter[1].done():
            try:
                cleaned = protocol.clean_reply(message)
            except ValueError as exc:
                # refused as any message that does not fit; the request fails with why
                log.warning("agent_reply_refused host=%s error=%s", conn.bk_host_id, exc)
                cleaned = protocol.refused_reply(str(message.get("id")), str(exc))
            waiter[1].set_result(cleaned)

    async def call(self, host: int, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``message`` to a host's agent and wait for its reply.

        A request survives the agent dropping and coming back within the grace
        period: it is sent again on the new connection.
        """
        deadline = time.monotonic() + timeout
        while True:
            conn = self.agents.for_host(host)
            if conn is None:
                appeared = await self.await_agent(
                    host, min(self.agent_lost_grace, deadline - time.monotonic())
                )
                if not appeared:
                    raise AgentUnavailable(host)
                continue
            request_id = uuid.uuid4().hex
            waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._replies[request_id] = (host, waiter)
            try:
                conn.send({**message, "id": request_id})
                while not waiter.done():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"host {host} did not answer in {timeout:g}s")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(waiter), min(left, 1.0))
                    # ``!=``: a link to another node is made anew at each lookup
                    if not waiter.done() and self.agents.for_host(host) != conn:
                        break  # the connection changed: ask again
                if waiter.done():
                    answer = waiter.result()
                    if not answer.get(protocol.UNDELIVERED):
                        return answer
                    # the agent left the node it was sent to: asked again where it is
                    # found now, once a moment has passed for the map to say so
                    pause = min(RETRY_UNDELIVERED, deadline - time.monotonic())
                    await asyncio.sleep(max(0.0, pause))
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"host {host} did not answer in {timeout:g}s")
            finally:
                self._replies.pop(request_id, None)

    async def await_agent(self, host: int, within: float) -> bool:
        """Whether the host's agent is connected, waiting ``within`` seconds at most."""
        deadline = time.monotonic() + max(within, 0)
        while time.monotonic() < deadline:
            if self.agents.for_host(host) is not None:
                return True
            await asyncio.sleep(0.1)
        return self.agents.for_host(host) is not None
