"""Live events on the node's bus: fan-out per topic, bounded queues, clean unsubscribe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from jobfleet.bus.live import OVERFLOW, BusLive
from jobfleet.bus.local import LocalBus


async def test_subscribers_of_a_topic_get_its_events() -> None:
    live = BusLive(LocalBus("n1"))
    got: list[dict[str, Any]] = []
    events = live.subscribe(["job:1", "step:7"])
    first = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.01)
    live.publish("job:2", {"n": 0})
    live.publish("job:1", {"n": 1})
    got.append(await asyncio.wait_for(first, 10))
    live.publish("step:7", {"n": 2})
    got.append(await asyncio.wait_for(events.__anext__(), 10))
    assert got == [{"n": 1}, {"n": 2}]
    await events.aclose()


async def test_a_slow_subscriber_is_told_it_overflowed() -> None:
    live = BusLive(LocalBus("n1"), queue_size=2)
    events = live.subscribe(["job:1"])
    first = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.01)
    for n in range(10):
        live.publish("job:1", {"n": n})
    await asyncio.sleep(0.01)
    got = [await asyncio.wait_for(first, 10), await asyncio.wait_for(events.__anext__(), 10)]
    assert OVERFLOW in got
    await events.aclose()


class DroppingBus(LocalBus):
    """A node's bus whose first subscriptions to a topic break, as Redis's do when it
    restarts: the subscription raises, and a new one works again."""

    def __init__(self, breaks: int) -> None:
        super().__init__("n1")
        self.breaks = breaks
        self.attempts = 0

    async def subscribe(self, topic: str) -> AsyncIterator[dict[str, Any]]:
        self.attempts += 1
        if self.attempts <= self.breaks:
            raise ConnectionError("Connection closed by server.")
        async for event in super().subscribe(topic):
            yield event


async def test_a_subscription_the_bus_drops_is_made_again() -> None:
    bus = DroppingBus(breaks=2)
    live = BusLive(bus, resubscribe=(0.01, 0.02))
    events = live.subscribe(["job:1"])
    first = asyncio.ensure_future(events.__anext__())
    # events may have gone by while it was down: the viewer is told to read them again
    assert await asyncio.wait_for(first, 10) == OVERFLOW
    for _ in range(100):
        if bus.attempts >= 3:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
    live.publish("job:1", {"n": 1})
    got = [await asyncio.wait_for(events.__anext__(), 10)]
    while got[-1] == OVERFLOW:
        got.append(await asyncio.wait_for(events.__anext__(), 10))
    assert got[-1] == {"n": 1}, got
    assert bus.attempts == 3
    await events.aclose()
