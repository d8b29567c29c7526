"""The engine as the API and cron see it: create a job, start, terminate, retry or
move on a step. Each call changes the store and hands the job to the runner."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import HostStatus, RunStatus
from jobfleet.engine import quotas
from jobfleet.engine.batches import SKIPPED_NOTE, StepTasks
from jobfleet.engine.decisions import Decisions
from jobfleet.engine.dispatch import Dispatcher
from jobfleet.engine.leases import LeaseKeeper
from jobfleet.engine.runner import JobRunner
from jobfleet.engine.settings import EngineSettings
from jobfleet.engine.signals import Signals
from jobfleet.engine.writer import ResultWriter
from jobfleet.store.database import now_ms
from jobfleet.store.jobs import JobStore, NewJob
from jobfleet.store.leases import lease_clock
from jobfleet.store.secrets import Cipher

# a skip taken by a node that does not drive the step: how long the caller waits to see
# the driving node end the step (it finds the hosts ended in the store), and how often
# it looks; the skip holds whether or not the step ended meanwhile
SKIP_WAIT = 10.0
SKIP_POLL = 0.1


class Jobs:
    def __init__(
        self,
        store: JobStore,
        runner: JobRunner,
        tasks: StepTasks,
        decisions: Decisions,
        dispatcher: Dispatcher,
        writer: ResultWriter,
        leases: LeaseKeeper,
        signals: Signals,
        cipher: Cipher,
        settings: EngineSettings,
    ) -> None:
        self.store = store
        self.runner = runner
        self.tasks = tasks
        self.decisions = decisions
        self.dispatcher = dispatcher
        self.writer = writer
        self.leases = leases
        self.signals = signals
        self.cipher = cipher
        self.settings = settings
        self._loops: list[asyncio.Task[None]] = []
        self._signalling: set[asyncio.Task[None]] = set()

    # lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loops.append(loop.create_task(self.writer.run()))
        self._loops.append(loop.create_task(self.leases.run()))

    def expect_back(self, hosts: set[int]) -> None:
        """At start: the hosts whose agents this node held before it stopped."""
        self.dispatcher.expect_back(hosts)

    async def stop(self) -> None:
        """Stop driving jobs without changing their state: another start resumes them."""
        # nothing of this engine may touch the database once the server closes it
        await self.runner.stop()
        loops, self._loops = self._loops, []
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await self.dispatcher.stop()

    async def recover(self) -> None:
        """Take over active jobs with no live owner (including this node's previous life)."""
        await self.leases.recover()

    # creating and starting --------------------------------------------------
    async def submit(
        self, job: NewJob, start: bool, conn: AsyncConnection | None = None
    ) -> tuple[int, list[int]]:
        """Create a job and, if ``start``, run it.

        With ``conn`` the rows join that transaction and nothing runs yet: the caller
        calls ``resume_job`` after its commit (until then the job is leased to this
        node, so another node takes it over if this one dies first).
        """
        now = now_ms()
        if job.values.get("callback_url"):
            # a callback URL may carry its receiver's token: stored sealed, and so is the
            # outbox row made from it (engine/callbacks.py opens it to send)
            job.values["callback_url"] = self.cipher.encrypt(job.values["callback_url"])
        job.values.update(
            status=int(RunStatus.RUNNING if start else RunStatus.BLANK),
            create_time=now,
            start_time=now if start else None,
            owner_node=self.settings.node_id if start else None,
            lease_until=lease_clock() + self.settings.lease_ttl if start else None,
        )
        if start:
            biz, app = job.values["bk_biz_id"], job.values["app_code"]
            async with quotas.admitted(self.store.db, biz, app, conn) as tx:
                job_id, step_ids = await self.store.create(job, tx)
        else:
            job_id, step_ids = await self.store.create(job, conn)
        if start and conn is None:
            self.runner.launch(job_id, recovering=False)
        return job_id, step_ids

    def resume_job(self, job_id: int) -> None:
        """Drive a job created inside a caller's transaction (see ``submit``)."""
        self.runner.launch(job_id, recovering=False)

    async def start_job(self, job_id: int) -> bool:
        """Start a job created with ``start_task=false``; False if it was not waiting."""
        job = await self.store.job(job_id)
        if job is None or job.status != RunStatus.BLANK:
            return False
        started = await quotas.start_waiting(
            self.store.db,
            job,
            status=int(RunStatus.RUNNING),
            start_time=now_ms(),
            owner_node=self.settings.node_id,
            lease_until=lease_clock() + self.settings.lease_ttl,
        )
        if started:
            self.runner.launch(job_id, recovering=False)
        return started

    async def terminate(self, job_id: int) -> None:
        job = await self.store.job(job_id)
        if job is None:
            return
        if job.status == RunStatus.BLANK and await self.store.terminate_waiting(job_id):
            # never started: its steps and hosts end terminated with it
            await self.runner.finish(job_id, RunStatus.TERMINATED, job.callback_url)
            return
        # conditional: the job may have ended, or another terminate come, since the read
        if not await self.store.mark_stopping(job_id):
            job = await self.store.job(job_id)
            if job is not None and job.status == RunStatus.STOPPING:
                raise JobError(
                    ErrorCode.TASK_ALREADY_TERMINATING,
                    f"Job instance {job_id} is already terminating",
                )
            raise JobError(
                ErrorCode.UNSUPPORTED_OPERATION, f"Job instance {job_id} has already finished"
            )
        self.decisions.request_stop(job_id)
        # the node that drives the job may be another one
        await self.signals.stop(job_id)

    # operators on steps -----------------------------------------------------
    async def retry_step(self, step: Row[Any], *, failed_only: bool) -> bool:
        """Run a failed or stopped step again (all hosts, or the failed ones) and go on."""
        job = await self.store.job(step.job_instance_id)
        if job is None or self.runner.running(step.job_instance_id):
            return False
        # a job that runs again counts against the running-job quotas again
        async with quotas.admitted(self.store.db, job.bk_biz_id, job.app_code) as conn:
            done = await self.store.new_attempt(
                step,
                failed_only=failed_only,
                node_id=self.settings.node_id,
                ttl=self.settings.lease_ttl,
                conn=conn,
            )
        if done:
            self.runner.launch(step.job_instance_id, recovering=False)
        return done

    async def continue_after(self, step: Row[Any], status: RunStatus) -> bool:
        """Give a failed or stopped step a passing status (ignored, skipped) and go on."""
        job = await self.store.job(step.job_instance_id)
        if job is None or self.runner.running(step.job_instance_id):
            return False
        async with quotas.admitted(self.store.db, job.bk_biz_id, job.app_code) as conn:
            done = await self.store.continue_job(
                step, int(status), self.settings.node_id, self.settings.lease_ttl, conn
            )
        if done:
            self.runner.launch(step.job_instance_id, recovering=False)
        return done

    async def force_stop(self, step_id: int) -> bool:
        """End the termination wait of a step now: hosts still running end as 404.

        The node that drives the step ends them at once. Any other node ends them in
        the store, where the driving node finds them as it finds a terminate: told
        over the bus when there is one, else at its next look (``reconcile_interval``).
        False when the step is not terminating or waits for no host."""
        if self.tasks.force_stop(step_id):
            return True
        step = await self.store.step(step_id)
        if step is None or step.status != RunStatus.STOPPING:
            return False
        count = step.execute_count
        hosts = [
            r.bk_host_id
            for r in await self.store.hosts(step_id, count)
            if r.status == HostStatus.RUNNING
        ]
        if not hosts:
            return False
        await self.dispatcher.conclude_hosts(
            step_id, count, hosts, HostStatus.GSE_TASK_TERMINATE_FAILED, SKIPPED_NOTE
        )
        await self.signals.results_stored([(step_id, count, h) for h in hosts])
        # answer once the step has ended, when the driving node ends it soon
        deadline = time.monotonic() + SKIP_WAIT
        while time.monotonic() < deadline:
            step = await self.store.step(step_id)
            if step is None or step.status != RunStatus.STOPPING:
                break
            await asyncio.sleep(SKIP_POLL)
        return True

    def wake_step(self, step_id: int) -> None:
        """An operator changed a waiting step: its runner looks at the store now."""
        self.decisions.wake_step(step_id)
        if self.signals.clustered:
            task = asyncio.get_running_loop().create_task(self.signals.wake(step_id))
            self._signalling.add(task)
            task.add_done_callback(self._signalling.discard)

    def confirm_waiting(self, job: Row[Any], step: Row[Any] | None) -> None:
        """A confirmation step waits (again) for its approvers: tell them."""
        self.runner.confirm_waiting(job, step)
