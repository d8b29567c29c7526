"""The retention task's loop: periods, batches and pauses (the SQL is tested end to end)."""

from __future__ import annotations

import asyncio
import time

from jobfleet.engine.retention import DAY, Retention, RetentionSettings
from jobfleet.store.retention import RetentionStore


class FakeStore(RetentionStore):
    """Rows by kind; every call takes at most ``limit`` of them."""

    def __init__(self, jobs: int, audit: int, blob_ids: list[str], in_use: set[str]) -> None:
        self.left = {"jobs": jobs, "audit": audit, "heal": 0, "procs": 0, "firings": 0}
        self.blob_ids = sorted(blob_ids)
        self.in_use = in_use
        self.calls: list[tuple[str, int]] = []
        self.cutoffs: list[int] = []

    async def purge_jobs(self, before_ms: int, limit: int) -> int:
        return self._take("jobs", before_ms, limit)

    async def purge_audit(self, before_ms: int, limit: int) -> int:
        return self._take("audit", before_ms, limit)

    async def purge_heal_decisions(self, before_ms: int, limit: int) -> int:
        return self._take("heal", before_ms, limit)

    async def purge_proc_operations(self, before_ms: int, limit: int) -> int:
        return self._take("procs", before_ms, limit)

    async def purge_cron_firings(self, before_ms: int, limit: int) -> int:
        return self._take("firings", before_ms, limit)

    def _take(self, kind: str, before_ms: int, limit: int) -> int:
        self.cutoffs.append(before_ms)
        count = min(limit, self.left[kind])
        self.left[kind] -= count
        self.calls.append((kind, count))
        return count

    async def blobs_in_use(self, changed_since: int | None = None) -> set[str]:
        return self.in_use

    async def purge_blobs(self, before_ms: int, limit: int, keep: set[str],
                          after: str) -> tuple[str, int]:
        page = [b for b in self.blob_ids if b > after][:limit]
        gone = [b for b in page if b not in keep]
        self.blob_ids = [b for b in self.blob_ids if b not in gone]
        self.calls.append(("blobs", len(gone)))
        return (page[-1] if len(page) == limit else ""), len(gone)


async def test_a_pass_works_in_batches_until_one_comes_back_short() -> None:
    store = FakeStore(7, 3, [f"{i:032x}" for i in range(5)], {f"{1:032x}"})
    retention = Retention(store, RetentionSettings(jobs=DAY, audit=2 * DAY, blobs=DAY, heal=0,
                                                   batch=3, pause=0.0))
    done = await retention.run_once()
    assert done == {"jobs": 7, "procs": 0, "firings": 0, "audit": 3, "blobs": 4,
                    "heal": 0}
    assert store.calls == [("jobs", 3), ("jobs", 3), ("jobs", 1), ("procs", 0), ("firings", 0),
                           ("audit", 3), ("audit", 0), ("blobs", 2), ("blobs", 2)]
    assert store.blob_ids == [f"{1:032x}"]
    now_ms = time.time() * 1000
    assert abs(store.cutoffs[0] - (now_ms - DAY * 1000)) < 5000
    assert abs(store.cutoffs[-1] - (now_ms - 2 * DAY * 1000)) < 5000


async def test_zero_keeps_forever_and_no_task_runs_when_all_are_zero() -> None:
    store = FakeStore(4, 4, ["a" * 32], set())
    retention = Retention(store, RetentionSettings(jobs=0, audit=DAY, blobs=0, heal=0, batch=10))
    assert await retention.run_once() == {"jobs": 0, "procs": 0, "firings": 0, "audit": 4,
                                             "blobs": 0, "heal": 0}
    assert store.left["jobs"] == 4
    idle = Retention(store, RetentionSettings(jobs=0, audit=0, blobs=0, heal=0))
    idle.start()
    assert idle._task is None
    await idle.stop()


async def test_the_background_task_pauses_between_batches_and_stops() -> None:
    store = FakeStore(1000, 0, [], set())
    retention = Retention(store, RetentionSettings(jobs=DAY, audit=0, blobs=0, heal=0, batch=10,
                                                   pause=0.05, interval=60))
    retention.start()
    await asyncio.sleep(0.3)
    await retention.stop()
    # paused between batches: far fewer than the 100 a tight loop would have taken
    assert 2 <= len(store.calls) <= 10, store.calls
