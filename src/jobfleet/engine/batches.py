"""A step's host tasks, all at once or batch by batch (``rolling_config``): send
them, wait for every result, and end hosts that pass their timeout or are
terminated."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Row

from jobfleet.domain.rolling import MODE_CONFIRM, MODE_PAUSE, STAGGERED, RollingConfig
from jobfleet.domain.states import normalize_host_status, step_status_from_hosts
from jobfleet.domain.status import HostStatus, RunStatus
from jobfleet.engine.decisions import Decisions
from jobfleet.engine.dispatch import Dispatcher
from jobfleet.engine.settings import EngineSettings
from jobfleet.engine.tracking import SENT, WAITING, StepRun, Tracker
from jobfleet.engine.writer import ResultWriter
from jobfleet.store.database import now_ms
from jobfleet.store.jobs import JobLease, JobStore
from jobfleet.store.outage import OutageLog

log = logging.getLogger(__name__)

OPEN = (HostStatus.WAITING, HostStatus.RUNNING)
# the log line of a host whose termination an operator stopped waiting for
SKIPPED_NOTE = "jobfleet: the termination was skipped by an operator\n"


class StepTasks:
    def __init__(
        self,
        store: JobStore,
        tracker: Tracker,
        dispatcher: Dispatcher,
        writer: ResultWriter,
        decisions: Decisions,
        settings: EngineSettings,
    ) -> None:
        self.store = store
        self.tracker = tracker
        self.dispatcher = dispatcher
        self.writer = writer
        self.decisions = decisions
        self.settings = settings
        # every waiting step looks every few seconds: one spell for them all
        self._check_outage = OutageLog(log, "step_check_failed")

    async def start_step(self, lease: JobLease, step: Row[Any]) -> int:
        started: int = step.start_time or now_ms()
        if step.status != RunStatus.RUNNING:
            await lease.update_step(step.id, status=int(RunStatus.RUNNING), start_time=started)
        return started

    async def end_step(
        self, lease: JobLease, step: Row[Any], started: int, stopped: bool
    ) -> RunStatus:
        if stopped:
            status = RunStatus.STOP_SUCCESS
        else:
            counts = await self.store.status_counts(step.id, step.execute_count)
            status = step_status_from_hosts(counts, ignore_error=step.ignore_error)
        end = now_ms()
        await lease.update_step(
            step.id, status=int(status), end_time=end, total_time=end - started
        )
        return status

    async def run(
        self,
        lease: JobLease,
        step: Row[Any],
        stop: asyncio.Event,
        recovering: bool,
        template: dict[str, Any],
        timeout_status: int = HostStatus.TASK_TIMEOUT,
        per_host: dict[int, dict[str, Any]] | None = None,
        before_end: Callable[[], Awaitable[None]] | None = None,
    ) -> RunStatus:
        """Send one task per pending host of ``step`` and wait for all of them (and for
        ``before_end``, work of the step that is not a host's, before the step ends)."""
        if step.rolling_config and step.batch_count > 1:
            return await self._run_rolling(
                lease, step, stop, recovering, template, timeout_status, per_host or {}
            )
        started = await self.start_step(lease, step)
        count = step.execute_count
        rows = await self.store.hosts(step.id, count)
        run = StepRun(
            lease.job_id, step.id, count, template, int(timeout_status), per_host=per_host or {}
        )
        no_agent = _take_open(run, rows)
        if run.pending:
            self.tracker.track(run)
            try:
                if not stop.is_set():
                    # a job terminated before its step was taken up (its node died)
                    # sends nothing more: what its hosts run is ended below
                    await self.dispatcher.dispatch(run, no_agent, recovering)
                stopped = await self._wait(lease, run, stop, started / 1000 + step.timeout)
            finally:
                self._untrack(run)
        else:
            stopped = stop.is_set()
        if before_end is not None:
            await before_end()
        return await self.end_step(lease, step, started, stopped)

    def force_stop(self, step_id: int) -> bool:
        """End the termination wait of a step now: hosts still running end as 404."""
        run = self.tracker.pending_for(step_id)
        if run is None:
            return False
        self.writer.conclude(
            run,
            list(run.pending),
            HostStatus.GSE_TASK_TERMINATE_FAILED,
            SKIPPED_NOTE,
        )
        return True

    def _untrack(self, run: StepRun) -> None:
        for host in self.tracker.untrack(run):
            self.dispatcher.results.forget((run.step_id, run.execute_count, host))

    async def _run_rolling(
        self,
        lease: JobLease,
        step: Row[Any],
        stop: asyncio.Event,
        recovering: bool,
        template: dict[str, Any],
        timeout_status: int,
        per_host: dict[int, dict[str, Any]],
    ) -> RunStatus:
        """The step's batches in order. ``current_batch`` is the last batch let start:
        set as it starts, or (mode 3) as the step parks before it, so that an
        operator's go-ahead is in the store from the moment it is given. A runner that
        resumes the step (its node restarted) takes up every batch up to it as it is,
        and goes on from there."""
        config = RollingConfig.from_dict(step.rolling_config)
        count = step.execute_count
        rows = await self.store.hosts(step.id, count)
        previous = _last_started(step, rows)
        if step.status == RunStatus.WAITING_USER:
            # parked before batch ``previous + 1`` when the runner last stopped (a node
            # of an earlier release named the batch before it in ``current_batch``)
            confirmed = not stop.is_set() and await self._await_rolling_confirm(
                lease, step, stop
            )
            step = await self.store.step(step.id) or step
            rows = await self.store.hosts(step.id, count)
            if confirmed:
                previous = min(previous + 1, step.batch_count)
            if step.current_batch != previous:
                # a batch that never started is not shown as the current one
                await lease.update_step(step.id, current_batch=previous)
        elif step.current_batch:
            # an operator's go-ahead given while no runner waited for it
            await lease.update_job_if(int(RunStatus.WAITING_USER), status=int(RunStatus.RUNNING))
        started = await self.start_step(lease, step)
        total = len(rows)
        batches = sorted({r.batch for r in rows if r.status in OPEN})
        run = StepRun(
            lease.job_id, step.id, count, template, int(timeout_status), per_host=per_host
        )
        run.done.set()
        self.tracker.track(run)
        stopped = stop.is_set()
        begun = [r for r in rows if r.batch <= previous]
        # a batch that had begun keeps the deadline it had: from its first host's start
        starts = [r.start_time for r in begun if r.batch == previous and r.start_time]
        deadline = (min(starts) / 1000 if starts else time.time()) + step.timeout
        try:
            if begun:
                # no pause or confirmation again before batches that had begun; a job
                # terminated meanwhile sends them nothing more and ends what they run
                await self._start_batch(run, begun, recovering, send=not stopped)
                if not starts:
                    deadline = time.time() + step.timeout
            for batch in (b for b in batches if b > previous):
                if stop.is_set():
                    stopped = True
                    break
                if previous:
                    go_on, stopped = await self._between(
                        lease, step, config, run, stop, deadline, previous, batch, total
                    )
                    if not go_on:
                        break
                await lease.update_step(
                    step.id, current_batch=batch, status=int(RunStatus.RUNNING)
                )
                await self._start_batch(run, [r for r in rows if r.batch == batch], recovering)
                deadline = time.time() + step.timeout
                previous = batch
            if run.pending:
                # a terminate in a staggered pause still ends the batches already started
                stopped = await self._wait(lease, run, stop, deadline) or stopped
        finally:
            self._untrack(run)
        return await self.end_step(lease, step, started, stopped)

    async def _between(
        self,
        lease: JobLease,
        step: Row[Any],
        config: RollingConfig,
        run: StepRun,
        stop: asyncio.Event,
        deadline: float,
        done: int,
        following: int,
        total: int,
    ) -> tuple[bool, bool]:
        """What comes after batch ``done`` has started, before batch ``following``
        starts: (start it?, was the job terminated?)."""
        staggered = config.execution_mode == STAGGERED
        if staggered:
            if await self._pause(lease.job_id, stop, config.start_delay()):
                return False, True
        elif await self._wait(lease, run, stop, deadline):
            return False, True
        failed = await self._failed(step.id, step.execute_count)
        if config.threshold_crossed(failed, total):
            log.warning("rolling_threshold_crossed step=%s batch=%s", step.id, done)
            return False, False
        # mode 1: a failure in the batch just run (staggered: in any batch started so
        # far) starts no further one
        if config.mode == MODE_PAUSE and (
            failed if staggered else await self._failed(step.id, step.execute_count, done)
        ):
            return False, False
        # mode 3: each next batch starts once an operator says so
        if config.mode == MODE_CONFIRM:
            if not await self._await_rolling_confirm(lease, step, stop, following):
                # the batch that waited never started: not shown as the current one
                await lease.update_step(step.id, current_batch=done)
                return False, stop.is_set()
        elif not staggered:
            await lease.update_step(step.id, status=int(RunStatus.ROLLING_WAITING))
        return True, False

    async def _start_batch(
        self, run: StepRun, rows: list[Row[Any]], recovering: bool, send: bool = True
    ) -> None:
        before = set(run.pending)
        no_agent = _take_open(run, rows)
        added = [h for h in run.pending if h not in before]
        if not added:
            return
        run.done.clear()
        self.tracker.add_hosts(run, added)
        if send:
            await self.dispatcher.dispatch(run, no_agent, recovering)

    async def _failed(self, step_id: int, count: int, batch: int | None = None) -> int:
        counts = await self.store.status_counts(step_id, count, batch=batch)
        return sum(
            n
            for status, n in counts.items()
            if normalize_host_status(status).finished
            and not normalize_host_status(status).succeeded
        )

    async def _pause(self, job_id: int, stop: asyncio.Event, seconds: float) -> bool:
        """Sleep between staggered batches; True if the job was terminated meanwhile."""
        # up to an hour with no turn to show: the lease keeper must not take the pause
        # for a stuck driver and hand the job to another node
        self.decisions.progress.expect(job_id, seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        return stop.is_set()

    async def _await_rolling_confirm(
        self,
        lease: JobLease,
        step: Row[Any],
        stop: asyncio.Event,
        following: int | None = None,
    ) -> bool:
        """Park before batch ``following`` (mode 3) until ``operate_step_instance`` 13;
        False if stopped."""
        values: dict[str, Any] = {"status": int(RunStatus.WAITING_USER)}
        if following is not None:
            values["current_batch"] = following
        await lease.update_step(step.id, **values)
        # only a running job waits: a terminate another node took meanwhile (10) stays,
        # for it is how this node learns of it when no bus message reaches it
        await lease.update_job_if(int(RunStatus.RUNNING), status=int(RunStatus.WAITING_USER))
        return await self.decisions.await_decision(lease, step, stop) is not None

    async def _wait(
        self, lease: JobLease, run: StepRun, stop: asyncio.Event, deadline: float
    ) -> bool:
        """Wait for every host of ``run``; True if the job was terminated meanwhile."""
        deadline += self.settings.timeout_slack
        progress = self.decisions.progress
        while not run.done.is_set():
            progress.touch(run.job_id)
            if stop.is_set():
                await self._terminate(lease, run)
                return True
            left = deadline - time.time()
            if left <= 0:
                self._time_out(run)
                await self._concluded(run)
                break
            waiter = asyncio.ensure_future(run.done.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait(
                {waiter, stopper},
                timeout=min(left, self.settings.reconcile_interval),
                return_when=asyncio.FIRST_COMPLETED,
            )
            waiter.cancel()
            stopper.cancel()
            if not run.done.is_set() and not stop.is_set():
                await self._check(run, stop)
        return stop.is_set()

    async def _concluded(self, run: StepRun) -> None:
        """Wait for the writer to store what the driver concluded of its hosts. While
        the database is away or its disk full, that waits too, for every job at once: the
        driver shows it is alive meanwhile, or each would be taken for stalled and given
        up, a line and a lapsed lease per job, for a condition the writer already
        tells in one line."""
        progress = self.decisions.progress
        while not run.done.is_set():
            progress.touch(run.job_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.done.wait(), self.settings.reconcile_interval)

    async def _check(self, run: StepRun, stop: asyncio.Event) -> None:
        """The waiting step's periodic look at the store. These are safety nets: a
        database that does not answer for a while (a restart) is looked at again next
        time, while the results wait in the writer and the agents' spools, instead of
        ending the job; the step's timeout still bounds the wait."""
        try:
            await self._reconcile(run)
            self.dispatcher.check_absent(run)
            await self.decisions.check_stop(run.job_id, stop)
            self._check_outage.ok()
        except asyncio.CancelledError:
            raise
        except Exception:
            self._check_outage.failed("step=%s", run.step_id)

    async def _reconcile(self, run: StepRun) -> None:
        """Drop hosts the store already shows finished (a result that raced the tracking)."""
        rows = await self.store.hosts(run.step_id, run.execute_count, host_ids=list(run.pending))
        for row in rows:
            if row.status not in OPEN:
                run.finish(row.bk_host_id)

    def _time_out(self, run: StepRun) -> None:
        hosts = list(run.pending)
        for host in hosts:
            self.dispatcher.kill(run, host, "timeout")
        self.writer.conclude(
            run,
            hosts,
            normalize_host_status(run.timeout_status),
            "jobfleet: the task passed its timeout without a result from the agent\n",
        )

    async def _terminate(self, lease: JobLease, run: StepRun) -> None:
        await lease.update_step(run.step_id, status=int(RunStatus.STOPPING))
        unsent = [
            host
            for host in list(run.pending)
            if not self.dispatcher.kill(run, host, "terminate", sent_only=True)
        ]
        self.writer.conclude(run, unsent, HostStatus.GSE_TASK_TERMINATE_SUCCESS, "")
        deadline = time.monotonic() + self.settings.terminate_wait
        while not run.done.is_set():
            self.decisions.progress.touch(run.job_id)
            left = deadline - time.monotonic()
            if left <= 0:
                self.writer.conclude(
                    run,
                    list(run.pending),
                    HostStatus.GSE_TASK_TERMINATE_FAILED,
                    "jobfleet: the agent did not confirm the termination\n",
                )
                await self._concluded(run)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    run.done.wait(), min(left, self.settings.reconcile_interval)
                )
            if not run.done.is_set():
                # hosts ended by another node (an agent there, a skip taken there) with
                # no bus to tell this one
                await self._reconcile(run)


def _last_started(step: Row[Any], rows: list[Row[Any]]) -> int:
    """The last batch of a rolling step that was let start: ``current_batch``, but for
    a step parked (mode 3) before a batch none of whose hosts has begun."""
    batch: int = step.current_batch
    if (
        step.status == RunStatus.WAITING_USER
        and batch > 0
        and all(r.status == HostStatus.WAITING for r in rows if r.batch == batch)
    ):
        return batch - 1
    return batch


def _take_open(run: StepRun, rows: list[Row[Any]]) -> set[int]:
    """Add the rows' open hosts to ``run``; those with no agent installed."""
    no_agent: set[int] = set()
    for row in rows:
        if row.status in OPEN:
            run.pending[row.bk_host_id] = WAITING if row.status == HostStatus.WAITING else SENT
            if not row.agent_id:
                no_agent.add(row.bk_host_id)
    return no_agent
