"""Live events on the node's bus: fan-out per topic, bounded queues, clean unsubscribe."""

from __future__ import annotations

import asyncio
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
    got.append(await asyncio.wait_for(first, 1))
    live.publish("step:7", {"n": 2})
    got.append(await asyncio.wait_for(events.__anext__(), 1))
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
    got = [await asyncio.wait_for(first, 1), await asyncio.wait_for(events.__anext__(), 1)]
    assert OVERFLOW in got
    await events.aclose()
