"""Which node drives which job: this node renews its leases and takes over active
jobs whose owner stopped renewing (including this node's own previous life)."""

from __future__ import annotations

import asyncio
import logging

from jobfleet.engine.runner import JobRunner
from jobfleet.engine.settings import EngineSettings
from jobfleet.store.leases import LeaseStore
from jobfleet.store.outage import OutageLog

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, leases: LeaseStore, runner: JobRunner, settings: EngineSettings) -> None:
        self.leases = leases
        self.runner = runner
        self.settings = settings

    async def run(self) -> None:
        outage = OutageLog(log, "lease_loop_failed")
        while True:
            try:
                await self.leases.renew(self.settings.node_id, self.settings.lease_ttl)
                await self.recover()
                outage.ok()
            except asyncio.CancelledError:
                raise
            except Exception:
                outage.failed()
            await asyncio.sleep(self.settings.lease_renew)

    async def recover(self) -> None:
        """Take over active jobs with no live owner."""
        node = self.settings.node_id
        for job_id in await self.leases.claimable(node):
            if self.runner.running(job_id):
                continue
            if await self.leases.claim(job_id, node, self.settings.lease_ttl):
                log.info("job_recovered job=%s", job_id)
                self.runner.launch(job_id, recovering=True)
