"""Purging old history in the background: finished jobs, GSE process operations and
cron firings, audit entries, blobs and self-healing decisions.

Each pass deletes in batches of ``batch`` rows, one transaction each, with a
pause between batches, so that the engine's own writes are never held back for
long. A period of 0 keeps that kind of history forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from jobfleet.store.outage import OutageLog
from jobfleet.store.retention import RetentionStore

log = logging.getLogger(__name__)

DAY = 86_400.0


@dataclass(frozen=True)
class RetentionSettings:
    """Periods in seconds (0: keep forever)."""

    jobs: float = 90 * DAY
    audit: float = 365 * DAY
    blobs: float = 30 * DAY
    heal: float = 90 * DAY
    # seconds between passes
    interval: float = 3600.0
    batch: int = 500
    # seconds between two batches of one pass
    pause: float = 0.1


class Retention:
    def __init__(self, store: RetentionStore, settings: RetentionSettings) -> None:
        self.store = store
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        s = self.settings
        if s.jobs or s.audit or s.blobs or s.heal:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        outage = OutageLog(log, "retention_pass_failed")
        while True:
            try:
                await self.run_once()
                outage.ok()
            except asyncio.CancelledError:
                raise
            except Exception:
                outage.failed()
            await asyncio.sleep(self.settings.interval)

    async def run_once(self) -> dict[str, int]:
        """One pass over every kind; how many of each were purged."""
        s = self.settings
        now = time.time()
        done = {"jobs": 0, "procs": 0, "firings": 0, "audit": 0, "blobs": 0, "heal": 0}
        if s.jobs:
            cutoff = int((now - s.jobs) * 1000)
            done["jobs"] = await self._batches(lambda: self.store.purge_jobs(cutoff, s.batch))
            # the process operations bk-nodeman and bk-monitor run are execution history too
            done["procs"] = await self._batches(
                lambda: self.store.purge_proc_operations(cutoff, s.batch)
            )
            done["firings"] = await self._batches(
                lambda: self.store.purge_cron_firings(cutoff, s.batch)
            )
        if s.audit:
            cutoff = int((now - s.audit) * 1000)
            done["audit"] = await self._batches(lambda: self.store.purge_audit(cutoff, s.batch))
        if s.blobs:
            done["blobs"] = await self._purge_blobs(int((now - s.blobs) * 1000))
        if s.heal:
            cutoff = int((now - s.heal) * 1000)
            done["heal"] = await self._batches(
                lambda: self.store.purge_heal_decisions(cutoff, s.batch)
            )
        if any(done.values()):
            log.info(
                "retention_purged jobs=%d procs=%d firings=%d audit=%d blobs=%d heal=%d",
                done["jobs"],
                done["procs"],
                done["firings"],
                done["audit"],
                done["blobs"],
                done["heal"],
            )
        return done

    async def _batches(self, batch: Callable[[], Awaitable[int]]) -> int:
        total = 0
        while True:
            count = await batch()
            total += count
            if count < self.settings.batch:
                return total
            await asyncio.sleep(self.settings.pause)

    async def _purge_blobs(self, cutoff: int) -> int:
        started = int(time.time() * 1000)
        keep = await self.store.blobs_in_use()
        total = 0
        after = ""
        while True:
            # a pass may take minutes: what a job started or retried, or a plan or template
            # saved, since it began needs its files as much as what was in use before
            keep |= await self.store.blobs_in_use(changed_since=started)
            after, count = await self.store.purge_blobs(cutoff, self.settings.batch, keep, after)
            total += count
            if not after:
                return total
            await asyncio.sleep(self.settings.pause)
