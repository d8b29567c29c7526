"""Live fan-out: a publisher tells every subscriber of a topic that something changed.

``LiveBus`` is the interface; ``InProcessBus`` serves one node. A Redis pub/sub
implementation (the scale-out work) keeps the same two calls. Delivery is best
effort on purpose: an event is a hint that a viewer should read the store again,
so a subscriber that falls behind loses old hints (and is told so with one
``{"type": "overflow"}`` event) instead of holding memory for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

QUEUE_SIZE = 256
OVERFLOW: dict[str, Any] = {"type": "overflow"}


class LiveBus(Protocol):
    def publish(self, topic: str, event: dict[str, Any]) -> None: ...

    def subscribe(self, topics: list[str]) -> AsyncIterator[dict[str, Any]]: ...


class _Subscriber:
    __slots__ = ("overflowed", "queue")

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(size)
        self.overflowed = False

    def offer(self, event: dict[str, Any]) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # keep the newest hints' meaning ("read again") with one marker
            self.overflowed = True
            self.queue.get_nowait()
            self.queue.put_nowait(OVERFLOW)


class InProcessBus:
    """Subscribers of this process; publishing never blocks and costs nothing unwatched."""

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._topics: dict[str, set[_Subscriber]] = {}

    def subscribers(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        for sub in self._topics.get(topic, ()):
            sub.offer(event)

    async def subscribe(self, topics: list[str]) -> AsyncIterator[dict[str, Any]]:
        sub = _Subscriber(self.queue_size)
        for topic in topics:
            self._topics.setdefault(topic, set()).add(sub)
        try:
            while True:
                event = await sub.queue.get()
                if event is OVERFLOW:
                    sub.overflowed = False
                yield event
        finally:
            for topic in topics:
                subs = self._topics.get(topic)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._topics[topic]
