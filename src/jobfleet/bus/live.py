"""Live fan-out: a publisher tells every subscriber of a topic that something changed.

``LiveBus`` is what live views use (the engine's ``ports.LiveEvents``); ``BusLive``
implements it on the node's ``Bus`` (pub/sub: in-process on one node, Redis in a
cluster). Delivery is best effort on purpose: an event is a hint that a viewer
should read the store again, so publishing never waits and a slow or lost hint
delays a view without corrupting it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

from jobfleet.bus.base import Bus

QUEUE_SIZE = 256
OVERFLOW: dict[str, Any] = {"type": "overflow"}
# seconds before a subscription the bus dropped (Redis restarting) is made again, the
# last one repeated for as long as it takes
RESUBSCRIBE = (0.5, 1.0, 2.0, 5.0)


class LiveBus(Protocol):
    def publish(self, topic: str, event: dict[str, Any]) -> None: ...

    def subscribe(self, topics: list[str]) -> AsyncIterator[dict[str, Any]]: ...


class BusLive:
    """Live events on a node's bus; one subscription may watch several topics."""

    def __init__(
        self, bus: Bus, queue_size: int = QUEUE_SIZE, resubscribe: tuple[float, ...] = RESUBSCRIBE
    ) -> None:
        self.bus = bus
        self.queue_size = queue_size
        self.resubscribe = resubscribe
        self._sending: set[asyncio.Task[None]] = set()

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: nobody can be watching
        task = loop.create_task(self._publish(topic, event))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _publish(self, topic: str, event: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await self.bus.publish(topic, event)

    async def subscribe(self, topics: list[str]) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.queue_size)

        def offer(event: dict[str, Any]) -> None:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # the viewer is behind: one marker says "read everything again"
                queue.get_nowait()
                queue.put_nowait(OVERFLOW)

        async def pump(topic: str) -> None:
            failures = 0
            while True:
                if failures:
                    # what went by while the bus was away: the viewer reads it again
                    offer(OVERFLOW)
                try:
                    async for event in self.bus.subscribe(topic):
                        failures = 0
                        offer(event)
                    return
                except Exception:
                    # Redis went away (a restart): subscribe again after a while
                    delays = self.resubscribe
                    await asyncio.sleep(delays[min(failures, len(delays) - 1)])
                    failures += 1

        loop = asyncio.get_running_loop()
        pumps = [loop.create_task(pump(t)) for t in topics]
        try:
            await asyncio.sleep(0)  # the subscriptions exist before the caller goes on
            while True:
                yield await queue.get()
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
