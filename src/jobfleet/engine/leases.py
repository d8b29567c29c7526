"""Which node drives which job: this node renews its leases and takes over active
jobs whose owner stopped renewing (including this node's own previous life)."""

from __future__ import annotations

import asyncio
import logging
import time

from jobfleet.engine.runner import JobRunner
from jobfleet.engine.settings import EngineSettings
from jobfleet.store.leases import LeaseStore
from jobfleet.store.outage import OutageLog

log = logging.getLogger(__name__)
# leases use the database's clock whatever a node's says; past this the node's own
# times (cron schedules, retries, expiries) are off by as much: said in one line
SKEW_WARN = 2.0
SKEW_EVERY = 60.0


class LeaseKeeper:
    def __init__(self, leases: LeaseStore, runner: JobRunner, settings: EngineSettings) -> None:
        self.leases = leases
        self.runner = runner
        self.settings = settings
        # jobs whose driver was stuck: not renewed, and not taken back by this node
        # before then (monotonic), so that another node takes them over first
        self._given_up: dict[int, float] = {}
        self._skew_checked = -SKEW_EVERY
        self._skewed = False

    async def run(self) -> None:
        outage = OutageLog(log, "lease_loop_failed")
        while True:
            try:
                await self._give_up_stalled()
                await self.leases.renew(
                    self.settings.node_id, self.settings.lease_ttl, self._given_up
                )
                await self.recover()
                await self._check_skew()
                outage.ok()
            except asyncio.CancelledError:
                raise
            except Exception:
                outage.failed()
            await asyncio.sleep(self.settings.lease_renew)

    async def _give_up_stalled(self) -> None:
        now = time.monotonic()
        self._given_up = {j: t for j, t in self._given_up.items() if t > now}
        # a well driver shows a turn at least every reconcile_interval
        limit = max(self.settings.driver_stall, 3 * self.settings.reconcile_interval)
        for job_id, seconds in self.runner.stalled(limit).items():
            log.error(
                "job_driver_stalled job=%s seconds=%.0f: no progress past driver_stall; "
                "its lease is given up for another node (or this one after lease_ttl) "
                "to take the job over from the store",
                job_id,
                seconds,
            )
            self.runner.abandon(job_id)
            self._given_up[job_id] = now + self.settings.lease_ttl
            await self.leases.give_up(job_id, self.settings.node_id)

    async def _check_skew(self) -> None:
        now = time.monotonic()
        if now - self._skew_checked < SKEW_EVERY:
            return
        self._skew_checked = now
        skew = await self.leases.clock_skew()
        if abs(skew) > SKEW_WARN:
            log.warning(
                "clock_skew seconds=%+.1f: this node's clock is off the database's; job "
                "leases follow the database's, but this node's schedules and expiries "
                "follow its own: synchronise the clocks (NTP)",
                skew,
            )
        elif self._skewed:
            log.warning("clock_skew_ended seconds=%+.1f", skew)
        self._skewed = abs(skew) > SKEW_WARN

    async def recover(self) -> None:
        """Take over active jobs with no live owner."""
        node = self.settings.node_id
        for job_id in await self.leases.claimable(node):
            if self.runner.running(job_id) or job_id in self._given_up:
                continue
            # a take, not a claim: the driver claims the job as it starts (runner.py),
            # and a claim here could come after that of a driver launched meanwhile
            # (a submit) and fence it off
            if await self.leases.take(job_id, node, self.settings.lease_ttl):
                log.info("job_recovered job=%s", job_id)
                self.runner.launch(job_id, recovering=True)
