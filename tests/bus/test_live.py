"""The in-process live bus: fan-out per topic, bounded queues, clean unsubscribe."""

from __future__ import annotations

import asyncio
from typing import Any

from jobfleet.bus.live import OVERFLOW, InProcessBus


async def test_subscribers_of_a_topic_get_its_events() -> None:
    bus = InProcessBus()
    got: list[dict[str, Any]] = []

    async def watch() -> None:
        async for event in bus.subscribe(["job:1", "step:7"]):
            got.append(event)
            if len(got) == 2:
                return

    task = asyncio.create_task(watch())
    await asyncio.sleep(0)
    bus.publish("job:2", {"n": 0})
    bus.publish("job:1", {"n": 1})
    bus.publish("step:7", {"n": 2})
    await asyncio.wait_for(task, 1)
    assert got == [{"n": 1}, {"n": 2}]
    assert bus.subscribers("job:1") == 0  # gone with the subscription


async def test_a_slow_subscriber_is_told_it_overflowed() -> None:
    bus = InProcessBus(queue_size=2)
    events = bus.subscribe(["job:1"])
    first = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0)
    for n in range(10):
        bus.publish("job:1", {"n": n})
    got = [await first, await events.__anext__()]
    # at most the queue's size is held, and the loss is said
    assert OVERFLOW in got
    bus.publish("job:1", {"n": 10})
    assert await events.__anext__() == {"n": 10}
    await events.aclose()
    assert bus.subscribers("job:1") == 0
