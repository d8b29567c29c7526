"""A step's hosts grouped by output, computed once per finished step.

Grouping reads every host's output and masks it (domain/clusters.py): for a
10,000-host step that is the costliest thing the job page asks for. A finished
step's output no longer changes, so its groups are kept (the most recently used
steps, up to ``capacity``) and every later request costs only the groups it shows.
A running step's groups are computed at most once per ``running_ttl`` seconds,
however many viewers ask; concurrent requests for one step share one computation.
The page shows the largest groups' samples and counts; the addresses of a group
are fetched only when someone copies them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from jobfleet.api.services import Services
from jobfleet.domain import clusters

# a step and its attempt
Key = tuple[int, int]
SAMPLE_CHARS = 2000
# a terminal's control sequences (colours, cursor moves, titles): a sample shows the
# text, as the log pane does (console.js), not stray characters like [1;31m
ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


@dataclass(frozen=True)
class Group:
    sample: str
    hosts: list[int]
    ips: list[str]


@dataclass(frozen=True)
class Grouping:
    groups: list[Group]
    # was the step finished when this was computed (then it never changes)
    final: bool
    made: float


class GroupCache:
    def __init__(
        self,
        capacity: int = 64,
        running_ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.running_ttl = running_ttl
        self.clock = clock
        self._entries: OrderedDict[Key, Grouping] = OrderedDict()
        self._locks: dict[Key, asyncio.Lock] = {}
        # computations made, for tests and metrics
        self.computed = 0

    def _fresh(self, key: Key) -> Grouping | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.final or self.clock() - entry.made < self.running_ttl:
            self._entries.move_to_end(key)
            return entry
        return None

    def peek(self, key: Key) -> Grouping | None:
        """The groups of ``key`` if they are held and fresh, without computing them."""
        return self._fresh(key)

    async def get(
        self, key: Key, finished: bool, compute: Callable[[], Awaitable[list[Group]]]
    ) -> Grouping:
        """The groups of ``key``; ``finished``: the step has ended (known by the caller
        before ``compute`` reads its output, so a result read while it ran is not kept
        as final)."""
        found = self._fresh(key)
        if found is not None:
            return found
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            found = self._fresh(key)
            if found is not None:
                return found
            groups = await compute()
            self.computed += 1
            entry = Grouping(groups, finished, self.clock())
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                old, _ = self._entries.popitem(last=False)
                self._locks.pop(old, None)
        return entry


async def group_step(services: Services, step_id: int, execute_count: int) -> list[Group]:
    """Read a step's hosts and outputs and group them (the masking off the event loop)."""
    rows = await services.jobs.hosts(step_id, execute_count)
    logs = await services.jobs.logs(step_id, execute_count, [r.bk_host_id for r in rows])
    ips = {int(r.bk_host_id): str(r.ip) for r in rows}
    grouped = await asyncio.to_thread(clusters.group_outputs, list(logs.items()))
    return [
        Group(logs[hosts[0]][:SAMPLE_CHARS], hosts, [ips[h] for h in hosts])
        for _key, hosts in grouped
    ]


def shown(grouping: Grouping, limit: int) -> list[dict[str, Any]]:
    """What the page shows of the first ``limit`` groups: no address lists."""
    return [
        {
            "index": i,
            "sample": ESCAPES.sub("", g.sample),
            "count": len(g.hosts),
            "first": g.hosts[0],
            "first_ip": g.ips[0],
        }
        for i, g in enumerate(grouping.groups[:limit])
    ]
