"""What operators decide about a running job: terminate it, or move a step that
waits for them (a confirmation step, a rolling step between batches) on.

Decisions are made through the store, so they hold across restarts and reach the
node that drives the job whichever node took the call; a wake-up makes this node
look at once, and it looks every ``reconcile_interval`` anyway.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import Row

from jobfleet.domain.states import STEP_PASSED
from jobfleet.domain.status import RunStatus
from jobfleet.engine.progress import Progress
from jobfleet.store.jobs import JobLease, JobStore, LostJob
from jobfleet.store.outage import OutageLog

log = logging.getLogger(__name__)


class Decisions:
    def __init__(self, store: JobStore, reconcile_interval: float) -> None:
        self.store = store
        self.reconcile_interval = reconcile_interval
        self.progress = Progress()
        self._stops: dict[int, asyncio.Event] = {}
        self._steps: dict[int, asyncio.Event] = {}
        # every parked step looks again each interval: one spell for them all
        self._check_outage = OutageLog(log, "decision_check_failed")

    def stop_event(self, job_id: int) -> asyncio.Event:
        """Set once the job is to stop; the runner of the job holds it."""
        return self._stops.setdefault(job_id, asyncio.Event())

    def forget_job(self, job_id: int) -> None:
        self._stops.pop(job_id, None)

    def request_stop(self, job_id: int) -> None:
        self.stop_event(job_id).set()

    async def check_stop(self, job_id: int, stop: asyncio.Event) -> None:
        """A terminate taken by another node reaches the driving node through the store."""
        job = await self.store.job(job_id)
        if job is not None and job.status == RunStatus.STOPPING:
            stop.set()

    def wake_step(self, step_id: int) -> None:
        """An operator changed a waiting step: its runner looks at the store now."""
        event = self._steps.get(step_id)
        if event is not None:
            event.set()

    async def await_decision(
        self, lease: JobLease, step: Row[Any], stop: asyncio.Event
    ) -> Row[Any] | None:
        """Wait while a step is parked in status 7; its row once an operator moved it on,
        None if the job was terminated meanwhile (``LostJob`` once it was claimed again
        since ``lease``)."""
        job_id = lease.job_id
        event = self._steps.setdefault(step.id, asyncio.Event())
        try:
            while True:
                # a wait of days for an approver is a driver that is well
                self.progress.touch(job_id)
                try:
                    current = await self.store.step(step.id)
                    self._check_outage.ok()
                    if current is not None and current.status != RunStatus.WAITING_USER:
                        if current.status in STEP_PASSED or current.status == RunStatus.RUNNING:
                            # only a waiting job resumes: a terminate taken meanwhile (10)
                            # is how a driving node on another server learns of it
                            await lease.update_job_if(
                                int(RunStatus.WAITING_USER), status=int(RunStatus.RUNNING)
                            )
                        return current
                    await self.check_stop(job_id, stop)
                    if current is None or stop.is_set():
                        return None
                except (asyncio.CancelledError, LostJob):
                    raise
                except Exception:
                    # a wait of days outlives a database restart: look again next time
                    self._check_outage.failed("step=%s", step.id)
                event.clear()
                waiter = asyncio.ensure_future(event.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait(
                    {waiter, stopper},
                    timeout=self.reconcile_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waiter.cancel()
                stopper.cancel()
        finally:
            self._steps.pop(step.id, None)
