"""Running jobs: a runner per job drives its steps; results flow in through one writer.

Follow a host task: ``_dispatch`` marks it running and sends it to the agent;
the agent streams ``out`` and ``done`` messages, which the gateway hands to
``agent_message``; ``_write_loop`` stores them in batches, acknowledges them to
the agent and wakes the step waiting for them; when no host of the step is
pending, ``_run_tasks`` computes the step status and the runner goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

import orjson
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain import protocol
from jobfleet.domain.rolling import MODE_CONFIRM, MODE_PAUSE, STAGGERED, RollingConfig
from jobfleet.domain.scripts import split_params
from jobfleet.domain.states import (
    STEP_PASSED,
    job_status_from_steps,
    normalize_host_status,
    step_status_from_hosts,
)
from jobfleet.domain.status import HostStatus, RunStatus, StepType
from jobfleet.engine import notify, quotas, variables
from jobfleet.engine.ports import (
    AgentDirectory,
    AgentLink,
    LiveEvents,
    MessageRefusals,
    NoLiveEvents,
)
from jobfleet.engine.results import DatabaseDown, Results, TaskKey, gse_error_code
from jobfleet.engine.settings import EngineSettings
from jobfleet.engine.tracking import SENT, WAITING, StepRun
from jobfleet.store.database import now_ms
from jobfleet.store.jobs import HostResult, JobStore, NewJob
from jobfleet.store.secrets import Cipher

log = logging.getLogger(__name__)

# a note the engine adds to a host's log sorts after anything the agent sent
NOTE_SEQ = 1_000_000_000
# While many results are still expected, the writer waits this long for more to
# share one transaction (a commit per result costs ~1.5 ms of CPU); the last few
# results of a job, and small jobs, are written at once.
WRITE_LINGER = 0.02
WRITE_LINGER_MIN_PENDING = 64


class AgentUnavailable(Exception):
    def __init__(self, host: int) -> None:
        super().__init__(f"the agent of host {host} is not connected")
        self.host = host


class FileStepRunner(Protocol):
    async def run(
        self, job: Row[Any], step: Row[Any], stop: asyncio.Event, recovering: bool
    ) -> RunStatus: ...


class Engine:
    def __init__(
        self,
        store: JobStore,
        agents: AgentDirectory,
        cipher: Cipher,
        settings: EngineSettings,
        refusals: MessageRefusals | None = None,
        events: LiveEvents | None = None,
    ) -> None:
        self.store = store
        self._events: LiveEvents = events or NoLiveEvents()
        self.agents = agents
        self.cipher = cipher
        self.settings = settings
        self.runs: dict[tuple[int, int], StepRun] = {}
        self.by_host: dict[int, set[tuple[int, int]]] = {}
        self.runners: dict[int, asyncio.Task[None]] = {}
        self.stop_requests: dict[int, asyncio.Event] = {}
        self._lost: dict[int, asyncio.TimerHandle] = {}
        self._queue: asyncio.Queue[tuple[AgentLink | None, dict[str, Any]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._late: set[asyncio.Task[None]] = set()
        self._replies: dict[str, tuple[int, asyncio.Future[dict[str, Any]]]] = {}
        self.file_steps: FileStepRunner | None = None
        self.on_job_finished: list[Any] = []
        # called with (job row, step row) when a confirmation step starts waiting
        self.on_confirm_waiting: list[Any] = []
        self.step_events: dict[int, asyncio.Event] = {}
        self.results = Results(
            store, settings.max_output_bytes, refusals, self._is_live, self._events
        )

    # lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._write_loop()))
        self._tasks.append(loop.create_task(self._lease_loop()))

    async def stop(self) -> None:
        """Stop driving jobs without changing their state: another start resumes them."""
        # nothing of this engine may touch the database once the server closes it
        pending = [*self.runners.values(), *self._tasks, *self._late]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self.runners.clear()
        for handle in self._lost.values():
            handle.cancel()

    # submission -------------------------------------------------------------
    async def submit(
        self, job: NewJob, start: bool, conn: AsyncConnection | None = None
    ) -> tuple[int, list[int]]:
        """Create a job and, if ``start``, run it.

        With ``conn`` the rows join that transaction and nothing runs yet: the caller
        calls ``resume_job`` after its commit (until then the job is leased to this
        node, so another node takes it over if this one dies first).
        """
        now = now_ms()
        job.values.update(
            status=int(RunStatus.RUNNING if start else RunStatus.BLANK),
            create_time=now,
            start_time=now if start else None,
            owner_node=self.settings.node_id if start else None,
            lease_until=time.time() + self.settings.lease_ttl if start else None,
        )
        if start:
            biz, app = job.values["bk_biz_id"], job.values["app_code"]
            async with quotas.admitted(self.store.db, biz, app, conn) as tx:
                job_id, step_ids = await self.store.create(job, tx)
        else:
            job_id, step_ids = await self.store.create(job, conn)
        if start and conn is None:
            self._launch(job_id, recovering=False)
        return job_id, step_ids

    def resume_job(self, job_id: int) -> None:
        """Drive a job created inside a caller's transaction (see ``submit``)."""
        self._launch(job_id, recovering=False)

    async def retry_step(self, step: Row[Any], *, failed_only: bool) -> bool:
        """Run a failed or stopped step again (all hosts, or the failed ones) and go on."""
        job = await self.store.job(step.job_instance_id)
        if job is None or step.job_instance_id in self.runners:
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
            self._launch(step.job_instance_id, recovering=False)
        return done

    async def continue_after(self, step: Row[Any], status: RunStatus) -> bool:
        """Give a failed or stopped step a passing status (ignored, skipped) and go on."""
        job = await self.store.job(step.job_instance_id)
        if job is None or step.job_instance_id in self.runners:
            return False
        async with quotas.admitted(self.store.db, job.bk_biz_id, job.app_code) as conn:
            done = await self.store.continue_job(
                step, int(status), self.settings.node_id, self.settings.lease_ttl, conn
            )
        if done:
            self._launch(step.job_instance_id, recovering=False)
        return done

    def force_stop(self, step_id: int) -> bool:
        """End the termination wait of a step now: hosts still running end as 404."""
        for run in list(self.runs.values()):
            if run.step_id == step_id and run.pending:
                self._conclude(
                    run,
                    list(run.pending),
                    HostStatus.GSE_TASK_TERMINATE_FAILED,
                    "jobfleet: the termination was skipped by an operator\n",
                )
                return True
        return False

    def wake_step(self, step_id: int) -> None:
        """An operator changed a waiting step: its runner looks at the store now."""
        event = self.step_events.get(step_id)
        if event is not None:
            event.set()

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
            lease_until=time.time() + self.settings.lease_ttl,
        )
        if started:
            self._launch(job_id, recovering=False)
        return started

    async def terminate(self, job_id: int) -> None:
        job = await self.store.job(job_id)
        if job is None:
            return
        if job.status == RunStatus.BLANK:
            await self._finish(job_id, RunStatus.TERMINATED, job.callback_url)
            return
        await self.store.update_job(job_id, status=int(RunStatus.STOPPING))
        self._events.publish(f"job:{job_id}", {"type": "job", "status": int(RunStatus.STOPPING)})
        self.stop_requests.setdefault(job_id, asyncio.Event()).set()

    def _launch(self, job_id: int, recovering: bool) -> None:
        if job_id in self.runners:
            return
        task = asyncio.get_running_loop().create_task(self._drive(job_id, recovering))
        self.runners[job_id] = task
        task.add_done_callback(lambda _t: self.runners.pop(job_id, None))

    # the runner -------------------------------------------------------------
    async def _drive(self, job_id: int, recovering: bool) -> None:
        stop = self.stop_requests.setdefault(job_id, asyncio.Event())
        try:
            job = await self.store.job(job_id)
            if job is None or RunStatus(job.status).finished:
                return
            if job.status == RunStatus.STOPPING:
                stop.set()
            for step in await self.store.steps(job_id):
                status = RunStatus(step.status)
                if status in STEP_PASSED:
                    continue
                if status.finished or stop.is_set():
                    break
                status = await self._run_step(job, step, stop, recovering)
                if status not in STEP_PASSED:
                    break
            statuses = [s.status for s in await self.store.steps(job_id)]
            final = job_status_from_steps(statuses)
            if stop.is_set() and final is not RunStatus.SUCCESS:
                final = RunStatus.STOP_SUCCESS
            await self._finish(job_id, final, job.callback_url)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job_failed job=%s", job_id)
            await self._finish(job_id, RunStatus.ABNORMAL_STATE, None)
        finally:
            self.stop_requests.pop(job_id, None)

    async def _run_step(
        self, job: Row[Any], step: Row[Any], stop: asyncio.Event, recovering: bool
    ) -> RunStatus:
        if step.type == StepType.MANUAL_CONFIRM:
            return await self._confirm(job, step, stop)
        state = None
        if job.variables is not None:
            steps = await self.store.steps(job.id)
            state = variables.state_before(job, steps, step.step_order, self.cipher)
        if step.type == StepType.SCRIPT:
            template = self._template(step)
            per_host: dict[int, dict[str, Any]] = {}
            if state is not None:
                hosts = [r.bk_host_id for r in await self.store.hosts(step.id, step.execute_count)]
                template, per_host = variables.script_message(template, state, hosts)
            status = await self._run_tasks(job, step, stop, recovering, template, per_host=per_host)
            if state is not None:
                rows = await self.store.hosts(step.id, step.execute_count)
                after = variables.collect(state, rows)
                await self.store.update_step(step.id, variables=variables.seal(after, self.cipher))
            return status
        if step.type == StepType.FILE and self.file_steps is not None:
            if state is not None and step.start_time is None:
                config = variables.render_file_config(step.config or {}, state.values())
                await self.store.update_step(step.id, config=config)
                step = await self.store.step(step.id) or step
            status = await self.file_steps.run(job, step, stop, recovering)
            if state is not None:
                await self.store.update_step(step.id, variables=variables.seal(state, self.cipher))
            return status
        log.error("step_type_unsupported job=%s step=%s type=%s", job.id, step.id, step.type)
        await self.store.update_step(
            step.id, status=int(RunStatus.ABNORMAL_STATE), end_time=now_ms()
        )
        return RunStatus.ABNORMAL_STATE

    def _template(self, step: Row[Any]) -> dict[str, Any]:
        param = step.script_param or ""
        sensitive = bool(step.is_param_sensitive and param)
        if sensitive:
            param = self.cipher.decrypt(param)
        template: dict[str, Any] = {
            "lang": step.script_language,
            "script": step.script_content or "",
            "args": split_params(param) if param else [],
            "account": step.account_name,
            "timeout": step.timeout,
            "env": {},
            "max_output": self.settings.max_output,
        }
        if sensitive:
            # the agent keeps such args off the script's command line
            template["sensitive"] = True
        return template

    async def _confirm(self, job: Row[Any], step: Row[Any], stop: asyncio.Event) -> RunStatus:
        """A manual confirmation step: the job waits (status 7) for an operator."""
        if step.status != RunStatus.WAITING_USER:
            await self.store.update_step(
                step.id,
                status=int(RunStatus.WAITING_USER),
                start_time=step.start_time or now_ms(),
            )
            await self.store.update_job(job.id, status=int(RunStatus.WAITING_USER))
            self._events.publish(f"job:{job.id}", {"type": "step", "step_instance_id": step.id})
            waiting = await self.store.step(step.id)
            for listener in self.on_confirm_waiting:
                listener(job, waiting)
        current = await self._await_decision(job, step, stop)
        if current is None:
            end = now_ms()
            latest = await self.store.step(step.id)
            started = (latest.start_time if latest is not None else None) or end
            await self.store.update_step(
                step.id, status=int(RunStatus.STOP_SUCCESS), end_time=end, total_time=end - started
            )
            return RunStatus.STOP_SUCCESS
        return RunStatus(current.status)

    async def _await_decision(
        self, job: Row[Any], step: Row[Any], stop: asyncio.Event
    ) -> Row[Any] | None:
        """Wait while a step is parked in status 7; its row once an operator moved it on,
        None if the job was terminated meanwhile.

        The decision is made through the store (``operate_step_instance`` writes the
        step's new status), so it holds across restarts and reaches the node that
        drives the job whichever node took the call; ``wake_step`` makes this node look
        at once, and it looks every ``reconcile_interval`` anyway.
        """
        event = self.step_events.setdefault(step.id, asyncio.Event())
        try:
            while True:
                current = await self.store.step(step.id)
                if current is not None and current.status != RunStatus.WAITING_USER:
                    if current.status in STEP_PASSED or current.status == RunStatus.RUNNING:
                        await self.store.update_job(job.id, status=int(RunStatus.RUNNING))
                    self._events.publish(
                        f"job:{job.id}", {"type": "step", "step_instance_id": step.id}
                    )
                    return current
                await self._stop_requested(job.id, stop)
                if current is None or stop.is_set():
                    return None
                event.clear()
                waiter = asyncio.ensure_future(event.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait(
                    {waiter, stopper},
                    timeout=self.settings.reconcile_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waiter.cancel()
                stopper.cancel()
        finally:
            self.step_events.pop(step.id, None)

    async def start_step(self, step: Row[Any]) -> int:
        started: int = step.start_time or now_ms()
        if step.status != RunStatus.RUNNING:
            await self.store.update_step(step.id, status=int(RunStatus.RUNNING), start_time=started)
            self._events.publish(
                f"job:{step.job_instance_id}", {"type": "step", "step_instance_id": step.id}
            )
        return started

    async def end_step(self, step: Row[Any], started: int, stopped: bool) -> RunStatus:
        if stopped:
            status = RunStatus.STOP_SUCCESS
        else:
            counts = await self.store.status_counts(step.id, step.execute_count)
            status = step_status_from_hosts(counts, ignore_error=step.ignore_error)
        end = now_ms()
        await self.store.update_step(
            step.id, status=int(status), end_time=end, total_time=end - started
        )
        self._events.publish(
            f"job:{step.job_instance_id}", {"type": "step", "step_instance_id": step.id}
        )
        return status

    async def _run_tasks(
        self,
        job: Row[Any],
        step: Row[Any],
        stop: asyncio.Event,
        recovering: bool,
        template: dict[str, Any],
        timeout_status: int = HostStatus.TASK_TIMEOUT,
        per_host: dict[int, dict[str, Any]] | None = None,
    ) -> RunStatus:
        """Send one task per pending host of ``step`` and wait for all of them."""
        if step.rolling_config and step.batch_count > 1:
            return await self._run_rolling(
                job, step, stop, recovering, template, timeout_status, per_host or {}
            )
        started = await self.start_step(step)
        count = step.execute_count
        rows = await self.store.hosts(step.id, count)
        run = StepRun(
            job.id, step.id, count, template, int(timeout_status), per_host=per_host or {}
        )
        no_agent: set[int] = set()
        for row in rows:
            if row.status in (HostStatus.WAITING, HostStatus.RUNNING):
                run.pending[row.bk_host_id] = WAITING if row.status == HostStatus.WAITING else SENT
                if not row.agent_id:
                    no_agent.add(row.bk_host_id)
        if run.pending:
            self._track(run)
            try:
                await self._dispatch(run, no_agent, recovering)
                stopped = await self._wait(run, stop, started / 1000 + step.timeout)
            finally:
                self._untrack(run)
        else:
            stopped = stop.is_set()
        return await self.end_step(step, started, stopped)

    async def _run_rolling(
        self,
        job: Row[Any],
        step: Row[Any],
        stop: asyncio.Event,
        recovering: bool,
        template: dict[str, Any],
        timeout_status: int,
        per_host: dict[int, dict[str, Any]],
    ) -> RunStatus:
        """Run a step's hosts batch by batch (``rolling_config``)."""
        config = RollingConfig.from_dict(step.rolling_config)
        if step.status == RunStatus.WAITING_USER:
            # parked between batches when the runner last stopped
            confirmed = await self._await_rolling_confirm(job, step, stop)
            step = await self.store.step(step.id) or step
            if not confirmed:
                return await self.end_step(step, step.start_time or now_ms(), True)
        started = await self.start_step(step)
        count = step.execute_count
        rows = await self.store.hosts(step.id, count)
        total = len(rows)
        open_ = (HostStatus.WAITING, HostStatus.RUNNING)
        batches = sorted({r.batch for r in rows if r.status in open_})
        run = StepRun(job.id, step.id, count, template, int(timeout_status), per_host=per_host)
        run.done.set()
        self.runs[run.key()] = run
        stopped = stop.is_set()
        deadline = time.time() + step.timeout
        try:
            for i, batch in enumerate(batches):
                if stop.is_set():
                    stopped = True
                    break
                last = i == len(batches) - 1
                await self.store.update_step(
                    step.id, current_batch=batch, status=int(RunStatus.RUNNING)
                )
                await self._start_batch(run, [r for r in rows if r.batch == batch], recovering)
                deadline = time.time() + step.timeout
                if config.execution_mode == STAGGERED:
                    if last:
                        break
                    if await self._pause(stop, config.start_delay()):
                        stopped = True
                        break
                    if config.threshold_crossed(await self._failed(step.id, count), total):
                        log.warning("rolling_threshold_crossed step=%s batch=%s", step.id, batch)
                        break
                    continue
                stopped = await self._wait(run, stop, deadline)
                if stopped or last:
                    break
                failed = await self._failed(step.id, count)
                if config.threshold_crossed(failed, total):
                    log.warning("rolling_threshold_crossed step=%s batch=%s", step.id, batch)
                    break
                if config.mode == MODE_PAUSE and await self._failed(step.id, count, batch):
                    break
                if config.mode == MODE_CONFIRM:
                    if not await self._await_rolling_confirm(job, step, stop):
                        stopped = stop.is_set()
                        break
                else:
                    await self.store.update_step(step.id, status=int(RunStatus.ROLLING_WAITING))
            if not stopped and run.pending:
                stopped = await self._wait(run, stop, deadline)
        finally:
            self._untrack(run)
        return await self.end_step(step, started, stopped)

    async def _start_batch(self, run: StepRun, rows: list[Row[Any]], recovering: bool) -> None:
        no_agent: set[int] = set()
        added = []
        for row in rows:
            if row.status in (HostStatus.WAITING, HostStatus.RUNNING):
                run.pending[row.bk_host_id] = WAITING if row.status == HostStatus.WAITING else SENT
                added.append(row.bk_host_id)
                if not row.agent_id:
                    no_agent.add(row.bk_host_id)
        if not added:
            return
        run.done.clear()
        for host in added:
            self.by_host.setdefault(host, set()).add(run.key())
        await self._dispatch(run, no_agent, recovering)

    async def _failed(self, step_id: int, count: int, batch: int | None = None) -> int:
        counts = await self.store.status_counts(step_id, count, batch=batch)
        return sum(
            n
            for status, n in counts.items()
            if normalize_host_status(status).finished
            and not normalize_host_status(status).succeeded
        )

    async def _pause(self, stop: asyncio.Event, seconds: float) -> bool:
        """Sleep between staggered batches; True if the job was terminated meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        return stop.is_set()

    async def _await_rolling_confirm(
        self, job: Row[Any], step: Row[Any], stop: asyncio.Event
    ) -> bool:
        """Park between batches (mode 3) until ``operate_step_instance`` 13; False if stopped."""
        await self.store.update_step(step.id, status=int(RunStatus.WAITING_USER))
        await self.store.update_job(job.id, status=int(RunStatus.WAITING_USER))
        self._events.publish(f"job:{job.id}", {"type": "step", "step_instance_id": step.id})
        return await self._await_decision(job, step, stop) is not None

    async def _wait(self, run: StepRun, stop: asyncio.Event, deadline: float) -> bool:
        """Wait for every host of ``run``; True if the job was terminated meanwhile."""
        deadline += self.settings.timeout_slack
        while not run.done.is_set():
            if stop.is_set():
                await self._terminate_run(run)
                return True
            left = deadline - time.time()
            if left <= 0:
                self._timeout_run(run)
                await run.done.wait()
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
                await self._reconcile(run)
                await self._stop_requested(run.job_id, stop)
        return stop.is_set()

    async def _stop_requested(self, job_id: int, stop: asyncio.Event) -> None:
        """A terminate taken by another node reaches the driving node through the store."""
        job = await self.store.job(job_id)
        if job is not None and job.status == RunStatus.STOPPING:
            stop.set()

    async def _reconcile(self, run: StepRun) -> None:
        """Drop hosts the store already shows finished (a result that raced the tracking)."""
        rows = await self.store.hosts(run.step_id, run.execute_count, host_ids=list(run.pending))
        for row in rows:
            if row.status not in (HostStatus.WAITING, HostStatus.RUNNING):
                run.finish(row.bk_host_id)

    def _timeout_run(self, run: StepRun) -> None:
        hosts = list(run.pending)
        for host in hosts:
            conn = self.agents.for_host(host)
            if conn is not None:
                conn.send({"t": protocol.KILL, "id": run.task_id(host), "reason": "timeout"})
        self._conclude(
            run,
            hosts,
            normalize_host_status(run.timeout_status),
            "jobfleet: the task passed its timeout without a result from the agent\n",
        )

    async def _terminate_run(self, run: StepRun) -> None:
        await self.store.update_step(run.step_id, status=int(RunStatus.STOPPING))
        unsent = []
        for host, state in list(run.pending.items()):
            conn = self.agents.for_host(host)
            if state == SENT and conn is not None:
                conn.send({"t": protocol.KILL, "id": run.task_id(host), "reason": "terminate"})
            else:
                unsent.append(host)
        self._conclude(run, unsent, HostStatus.GSE_TASK_TERMINATE_SUCCESS, "")
        try:
            await asyncio.wait_for(run.done.wait(), self.settings.terminate_wait)
        except TimeoutError:
            self._conclude(
                run,
                list(run.pending),
                HostStatus.GSE_TASK_TERMINATE_FAILED,
                "jobfleet: the agent did not confirm the termination\n",
            )
            await run.done.wait()

    async def _dispatch(self, run: StepRun, no_agent: set[int], recovering: bool) -> None:
        waiting = [h for h, s in run.pending.items() if s == WAITING]
        online = {h for h in waiting if self.agents.for_host(h) is not None}
        if online:
            await self.store.mark_running(run.step_id, run.execute_count, list(online))
        for host, state in list(run.pending.items()):
            conn = self.agents.for_host(host)
            if conn is None:
                continue
            if state == WAITING:
                if host in online:
                    run.pending[host] = SENT
                    self.results.sent((run.step_id, run.execute_count, host))
                    conn.send(run.message(host))
            elif run.task_id(host) not in conn.known:
                conn.send(run.message(host))
        offline = [h for h in run.pending if self.agents.for_host(h) is None]
        if not offline:
            return
        missing = [h for h in offline if h in no_agent]
        if missing:
            self._conclude(
                run,
                missing,
                HostStatus.AGENT_NOT_INSTALLED,
                "jobfleet: no agent is installed on this host\n",
            )
        absent = [h for h in offline if h not in no_agent]
        if recovering:
            for host in absent:
                self._expect_agent(host, self.settings.recovery_window)
        elif absent:
            self._conclude(
                run,
                absent,
                HostStatus.GSE_AGENT_ERROR,
                "jobfleet: the agent of this host is not connected\n",
            )

    def _conclude(self, run: StepRun, hosts: Iterable[int], status: HostStatus, note: str) -> None:
        """End hosts on the engine's own authority, through the same writer as agent results."""
        end = now_ms()
        for host in hosts:
            self._queue.put_nowait(
                (
                    None,
                    {
                        "t": protocol.DONE,
                        "id": run.task_id(host),
                        "seq": NOTE_SEQ,
                        "status": int(status),
                        "exit": None,
                        "start": None,
                        "end": end,
                        "data": note,
                    },
                )
            )

    async def conclude_hosts(
        self, step_id: int, execute_count: int, hosts: list[int], status: int, note: str
    ) -> None:
        """End hosts that no task was sent to (a file step whose sources failed)."""
        end = now_ms()
        chunks = [
            {
                "step_instance_id": step_id,
                "execute_count": execute_count,
                "bk_host_id": h,
                "seq": NOTE_SEQ,
                "content": note,
            }
            for h in hosts
            if note
        ]
        finals = [
            HostResult(
                step_id,
                execute_count,
                h,
                int(status),
                end_time=end,
                error_code=gse_error_code(status),
            )
            for h in hosts
        ]
        await self.store.ingest(chunks, finals)

    # agent events (from the gateway) ---------------------------------------
    def _track(self, run: StepRun) -> None:
        self.runs[run.key()] = run
        for host in run.pending:
            self.by_host.setdefault(host, set()).add(run.key())

    def _untrack(self, run: StepRun) -> None:
        self.runs.pop(run.key(), None)
        for host in list(run.pending):
            self._forget(host, run.key())
            self.results.forget((run.step_id, run.execute_count, host))

    def _is_live(self, key: TaskKey) -> bool:
        """Was this task sent from this node, and is its result still to come?"""
        run = self.runs.get((key[0], key[1]))
        return run is not None and run.pending.get(key[2]) == SENT

    def _forget(self, host: int, key: tuple[int, int]) -> None:
        keys = self.by_host.get(host)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.by_host[host]

    def agent_online(self, conn: AgentLink) -> None:
        host = conn.bk_host_id
        handle = self._lost.pop(host, None)
        if handle is not None:
            handle.cancel()
        waiting: list[StepRun] = []
        for key in self.by_host.get(host, ()):
            run = self.runs.get(key)
            if run is None or host not in run.pending:
                continue
            if run.task_id(host) in conn.known:
                continue
            if run.pending[host] == WAITING:
                waiting.append(run)
            else:
                conn.send(run.message(host))
        for run in waiting:
            task = asyncio.get_running_loop().create_task(self._send_late(run, host))
            self._late.add(task)
            task.add_done_callback(self._late.discard)

    async def _send_late(self, run: StepRun, host: int) -> None:
        await self.store.mark_running(run.step_id, run.execute_count, [host])
        conn = self.agents.for_host(host)
        if conn is not None and run.pending.get(host) == WAITING:
            run.pending[host] = SENT
            self.results.sent((run.step_id, run.execute_count, host))
            conn.send(run.message(host))

    def agent_offline(self, conn: AgentLink) -> None:
        if self.by_host.get(conn.bk_host_id):
            self._expect_agent(conn.bk_host_id, self.settings.agent_lost_grace)

    def _expect_agent(self, host: int, within: float) -> None:
        if host not in self._lost:
            self._lost[host] = asyncio.get_running_loop().call_later(
                within, self._agent_lost, host, within
            )

    def _agent_lost(self, host: int, waited: float) -> None:
        self._lost.pop(host, None)
        if self.agents.for_host(host) is not None:
            return
        for key in list(self.by_host.get(host, ())):
            run = self.runs.get(key)
            if run is not None and host in run.pending:
                log.warning("agent_lost host=%s step=%s", host, run.step_id)
                self._conclude(
                    run,
                    [host],
                    HostStatus.GSE_AGENT_ERROR,
                    f"jobfleet: the agent lost its connection and did not come back "
                    f"within {waited:g}s\n",
                )

    def agent_message(self, conn: AgentLink, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind in (protocol.OUTPUT, protocol.DONE, protocol.FILE_LOG):
            self._queue.put_nowait((conn, message))
        elif kind == protocol.REPLY:
            waiter = self._replies.get(str(message.get("id")))
            if waiter is not None and waiter[0] == conn.bk_host_id and not waiter[1].done():
                waiter[1].set_result(message)

    async def rpc(self, host: int, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Ask a host's agent something and wait for its reply.

        A request survives the agent dropping and coming back within the grace
        period: it is sent again on the new connection.
        """
        deadline = time.monotonic() + timeout
        while True:
            conn = self.agents.for_host(host)
            if conn is None:
                appeared = await self._await_agent(
                    host, min(self.settings.agent_lost_grace, deadline - time.monotonic())
                )
                if not appeared:
                    raise AgentUnavailable(host)
                continue
            request_id = uuid.uuid4().hex
            waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._replies[request_id] = (host, waiter)
            try:
                conn.send({**message, "id": request_id})
                while not waiter.done():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"host {host} did not answer in {timeout:g}s")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(waiter), min(left, 1.0))
                    if not waiter.done() and self.agents.for_host(host) is not conn:
                        break  # the connection changed: ask again
                if waiter.done():
                    return waiter.result()
            finally:
                self._replies.pop(request_id, None)

    async def _await_agent(self, host: int, within: float) -> bool:
        deadline = time.monotonic() + max(within, 0)
        while time.monotonic() < deadline:
            if self.agents.for_host(host) is not None:
                return True
            await asyncio.sleep(0.1)
        return self.agents.for_host(host) is not None

    # the writer -------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if (
                self._queue.qsize() < 256
                and sum(len(r.pending) for r in self.runs.values()) > WRITE_LINGER_MIN_PENDING
            ):
                await asyncio.sleep(WRITE_LINGER)
            while not self._queue.empty() and len(batch) < 20_000:
                batch.append(self._queue.get_nowait())
            attempt = 0
            while True:
                try:
                    await self._write(batch)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # the database is down (a bad message is set aside by the writer
                    # itself): nothing was acknowledged, so agents still hold these
                    # results; keep trying, nothing is dropped
                    attempt += 1
                    if isinstance(exc, DatabaseDown):
                        log.error(
                            "result_write_waiting_for_database attempt=%d size=%d error=%s",
                            attempt,
                            len(batch),
                            exc,
                        )
                    else:
                        log.exception("result_write_failed attempt=%d size=%d", attempt, len(batch))
                        if attempt >= 3:
                            await self._write_each(batch)
                            break
                    await asyncio.sleep(min(5.0, 0.2 * attempt))

    async def _write_each(self, batch: list[tuple[AgentLink | None, dict[str, Any]]]) -> None:
        """A batch that fails for a reason other than the database, one message at a
        time: what fails alone is dropped, so it cannot hold back the rest."""
        for item in batch:
            while True:
                try:
                    await self._write([item])
                    break
                except asyncio.CancelledError:
                    raise
                except DatabaseDown:
                    await asyncio.sleep(1.0)
                except Exception:
                    log.exception("result_dropped task=%s", item[1].get("id"))
                    break

    async def _write(self, batch: list[tuple[AgentLink | None, dict[str, Any]]]) -> None:
        plan = await self.results.plan(batch)
        refused = await self.results.store_entries(plan.entries)
        for conn, items in plan.acks.items():
            # what the database refused is acknowledged too: the agent would send it
            # again after every reconnect, and it would be refused again
            conn.send({"t": protocol.ACK, "acks": items})
        set_aside = {id(e) for e in refused}
        for key, tally in plan.tallies.items():
            if key in self.results.tallies or self._is_live(key):
                self.results.tallies[key] = tally
        for entry in plan.entries:
            result = entry.final
            if result is None:
                continue
            run_key = (result.step_instance_id, result.execute_count)
            run = self.runs.get(run_key)
            if id(entry) in set_aside:
                if entry.conn is not None and run is not None and result.bk_host_id in run.pending:
                    self._conclude(
                        run,
                        [result.bk_host_id],
                        HostStatus.GSE_TASK_ERROR,
                        "jobfleet: the agent's result for this host could not be stored\n",
                    )
                continue
            self.results.forget(entry.key)
            if run is not None and result.bk_host_id in run.pending:
                run.finish(result.bk_host_id)
                self._forget(result.bk_host_id, run_key)

    # finishing --------------------------------------------------------------
    async def _finish(self, job_id: int, status: RunStatus, callback_url: str | None) -> None:
        steps = await self.store.steps(job_id)
        callback = None
        if callback_url:
            step_list = [{"step_instance_id": s.id, "status": s.status} for s in steps]
            payload = orjson.dumps(
                {
                    "job_instance_id": job_id,
                    "status": int(status),
                    "step_instances": step_list,
                    "step_instance_list": step_list,
                }
            ).decode()
            callback = (callback_url, payload, self.settings.callback_attempts)
        end = now_ms()
        notices = await notify.outbox_rows(
            self.store, self.cipher, job_id, status, steps, end, self.settings.callback_attempts
        )
        await self.store.finish_job(job_id, int(status), callback, notices, end)
        log.info("job_finished job=%s status=%d", job_id, status)
        self._events.publish(f"job:{job_id}", {"type": "job", "status": int(status)})
        for listener in self.on_job_finished:
            listener(job_id, status)

    # ownership --------------------------------------------------------------
    async def _lease_loop(self) -> None:
        while True:
            try:
                await self.store.leases.renew(self.settings.node_id, self.settings.lease_ttl)
                await self.recover()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease_loop_failed")
            await asyncio.sleep(self.settings.lease_renew)

    async def recover(self) -> None:
        """Take over active jobs with no live owner (including this node's previous life)."""
        leases = self.store.leases
        for job_id in await leases.claimable(self.settings.node_id):
            if job_id in self.runners:
                continue
            if await leases.claim(job_id, self.settings.node_id, self.settings.lease_ttl):
                log.info("job_recovered job=%s", job_id)
                self._launch(job_id, recovering=True)
