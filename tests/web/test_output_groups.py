"""The job page's output groups: computed once for a finished step, at most once per
interval for a running one, and once for concurrent viewers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from jobfleet.web.output_groups import Group, GroupCache, Grouping, shown


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def counting(
    groups: list[Group], calls: list[int], pause: float = 0.0
) -> Callable[[], Awaitable[list[Group]]]:
    async def compute() -> list[Group]:
        calls.append(1)
        if pause:
            await asyncio.sleep(pause)
        return groups

    return compute


GROUPS = [
    Group("disk full", [7], ["127.0.0.7"]),
    Group("ok", [1, 2, 3], ["127.0.0.1", "127.0.0.2", "127.0.0.3"]),
]


async def test_a_finished_step_is_grouped_once() -> None:
    cache, calls = GroupCache(clock=Clock()), list[int]()
    first = await cache.get((1, 0), True, counting(GROUPS, calls))
    for _ in range(5):
        assert await cache.get((1, 0), True, counting([], calls)) is first
    assert len(calls) == 1 and cache.computed == 1
    assert cache.peek((1, 0)) is first and cache.peek((2, 0)) is None
    # another attempt of the step is another entry
    await cache.get((1, 1), True, counting(GROUPS, calls))
    assert len(calls) == 2


async def test_a_running_step_is_regrouped_after_the_interval_only() -> None:
    clock = Clock()
    cache, calls = GroupCache(running_ttl=2.0, clock=clock), list[int]()
    await cache.get((1, 0), False, counting(GROUPS, calls))
    clock.now += 1.0
    await cache.get((1, 0), False, counting(GROUPS, calls))
    assert len(calls) == 1
    clock.now += 1.5
    await cache.get((1, 0), False, counting(GROUPS, calls))
    assert len(calls) == 2
    # once it has finished, the next computation is kept for good
    clock.now += 5
    final = await cache.get((1, 0), True, counting(GROUPS, calls))
    clock.now += 3600
    assert await cache.get((1, 0), True, counting([], calls)) is final
    assert len(calls) == 3


async def test_concurrent_viewers_share_one_computation() -> None:
    cache, calls = GroupCache(clock=Clock()), list[int]()
    results = await asyncio.gather(
        *(cache.get((4, 0), True, counting(GROUPS, calls, pause=0.05)) for _ in range(10))
    )
    assert len(calls) == 1
    assert all(r is results[0] for r in results)


async def test_the_least_recently_used_step_is_dropped() -> None:
    cache, calls = GroupCache(capacity=2, clock=Clock()), list[int]()
    for step in (1, 2):
        await cache.get((step, 0), True, counting(GROUPS, calls))
    await cache.get((1, 0), True, counting(GROUPS, calls))  # 1 is used again
    await cache.get((3, 0), True, counting(GROUPS, calls))  # 2 goes
    assert len(calls) == 3
    await cache.get((1, 0), True, counting(GROUPS, calls))
    assert len(calls) == 3
    await cache.get((2, 0), True, counting(GROUPS, calls))
    assert len(calls) == 4


def test_what_the_page_shows_holds_no_address_lists() -> None:
    grouping = Grouping(GROUPS * 30, True, 0.0)
    page = shown(grouping, 50)
    assert len(page) == 50
    assert page[1] == {"index": 1, "sample": "ok", "count": 3, "first": 1, "first_ip": "127.0.0.1"}
    assert all("ips" not in g and "hosts" not in g for g in page)
