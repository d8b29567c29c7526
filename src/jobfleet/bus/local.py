"""The bus of a single node: messages to itself are handled in order, live events
go to the subscribers of this process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from jobfleet.bus.base import BusListener

log = logging.getLogger(__name__)

# a live viewer that falls this far behind loses events (it resumes from the store)
SUBSCRIBER_BACKLOG = 10_000


class LocalBus:
    clustered = False

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._listener: BusListener | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._topics: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._held: set[int] = set()

    async def start(self, listener: BusListener) -> None:
        self._listener = listener
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def send(self, node: str, message: dict[str, Any]) -> None:
        if node == self.node_id:
            self._inbox.put_nowait(message)
        else:
            log.warning("bus_no_such_node node=%s kind=%s", node, message.get("k"))

    async def flush(self) -> None:
        return None

    async def _run(self) -> None:
        assert self._listener is not None
        while True:
            message = await self._inbox.get()
            try:
                await self._listener.message(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bus_message_failed kind=%s", message.get("k"))

    async def publish(self, topic: str, event: dict[str, Any]) -> None:
        for queue in list(self._topics.get(topic, ())):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)

    async def subscribe(self, topic: str) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self._topics.setdefault(topic, set()).add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            subscribers = self._topics.get(topic)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del self._topics[topic]

    def hold(self, hosts: list[int]) -> None:
        self._held.update(hosts)

    def release(self, hosts: list[int]) -> None:
        self._held.difference_update(hosts)

    async def refresh(self, hosts: list[int]) -> bool:
        return True

    def holder(self, host: int) -> str | None:
        return self.node_id if host in self._held else None

    def live_nodes(self) -> set[str]:
        return {self.node_id}

    async def live_among(self, nodes: list[str]) -> set[str] | None:
        # a node on its own: no other node id is anyone's any more
        return {self.node_id} & set(nodes)
