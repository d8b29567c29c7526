"""Driving a job: its steps in order, each by its kind (script, file, confirmation),
to a final status, and what happens when a job ends (callback, notifications)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson
from sqlalchemy import Row

from jobfleet.domain import protocol
from jobfleet.domain.scripts import loaded_script, split_params
from jobfleet.domain.states import STEP_PASSED, job_status_from_steps
from jobfleet.domain.status import HostStatus, RunStatus, StepType
from jobfleet.engine import notify, sql, variables
from jobfleet.engine.batches import StepTasks
from jobfleet.engine.decisions import Decisions
from jobfleet.engine.settings import EngineSettings
from jobfleet.engine.writer import NOTE_SEQ
from jobfleet.store.database import now_ms
from jobfleet.store.health import Health, connection_lost
from jobfleet.store.jobs import UNFINISHED_HOST, HostResult, JobLease, JobStore, LostJob
from jobfleet.store.outage import OutageLog, disk_refused
from jobfleet.store.secrets import Cipher

log = logging.getLogger(__name__)

# the log line of a host left open by a job that failed inside jobfleet
FAILED_NOTE = "jobfleet: the job failed on the server while this host's task was open\n"

# called with (job id, final status) once a job has ended
JobFinished = Callable[[int, RunStatus], None]
# called with (job row, step row) when a confirmation step starts waiting
ConfirmWaiting = Callable[[Row[Any], Row[Any] | None], None]


class FileStepRunner(Protocol):
    async def run(
        self,
        lease: JobLease,
        job: Row[Any],
        step: Row[Any],
        stop: asyncio.Event,
        recovering: bool,
    ) -> RunStatus: ...


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        tasks: StepTasks,
        file_steps: FileStepRunner,
        decisions: Decisions,
        cipher: Cipher,
        settings: EngineSettings,
        on_job_finished: Sequence[JobFinished] = (),
        on_confirm_waiting: Sequence[ConfirmWaiting] = (),
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.file_steps = file_steps
        self.decisions = decisions
        self.cipher = cipher
        self.settings = settings
        self.on_job_finished = tuple(on_job_finished)
        self.on_confirm_waiting = tuple(on_confirm_waiting)
        self._runners: dict[int, asyncio.Task[None]] = {}
        self._died = OutageLog(log, "job_driver_died")
        self.progress = decisions.progress

    def running(self, job_id: int) -> bool:
        """Is this node driving the job now?"""
        return job_id in self._runners

    def launch(self, job_id: int, recovering: bool) -> None:
        if job_id in self._runners:
            return
        task = asyncio.get_running_loop().create_task(self._drive(job_id, recovering))
        self._runners[job_id] = task
        self.progress.touch(job_id)
        task.add_done_callback(lambda t: self._ended(job_id, t))

    def stalled(self, limit: float) -> dict[int, float]:
        """Jobs this node drives whose driver showed no progress for ``limit`` seconds
        (engine/progress.py), with the seconds since it last did."""
        return {j: s for j, s in self.progress.stalled(limit).items() if j in self._runners}

    def abandon(self, job_id: int) -> None:
        """Stop driving a job whose driver is stuck, without changing its state."""
        task = self._runners.pop(job_id, None)
        self.progress.forget(job_id)
        if task is not None:
            task.cancel()

    def _ended(self, job_id: int, task: asyncio.Task[None]) -> None:
        if self._runners.get(job_id) is not task:
            return  # abandoned: a new driver may hold the job now
        self._runners.pop(job_id, None)
        self.progress.forget(job_id)
        if task.cancelled():
            return
        if task.exception() is None:
            # a job driven to its end: the database takes writes again, if it did not
            self._died.ok()
            return
        # the database is away: the job stays active and leased to this node, whose
        # lease keeper resumes it (``recover``); every job this node drives dies with
        # it, so one line tells of them all
        self._died.failed(
            "job=%s: resumed once the database answers", job_id, exc=task.exception()
        )

    async def stop(self) -> None:
        """Stop driving jobs without changing their state: another start resumes them."""
        runners = list(self._runners.values())
        for task in runners:
            task.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        self._runners.clear()

    def confirm_waiting(self, job: Row[Any], step: Row[Any] | None) -> None:
        """Tell the listeners that a confirmation step waits for its approvers."""
        for listener in self.on_confirm_waiting:
            listener(job, step)

    async def _drive(self, job_id: int, recovering: bool) -> None:
        stop = self.decisions.stop_event(job_id)
        lease: JobLease | None = None
        try:
            # every driver claims the job itself, whoever granted it (a submit, a start,
            # a retry, the lease keeper): its claim's generation fences what it writes,
            # so a driver of an earlier claim, on this node or another, writes nothing
            lease = await self.store.claim(job_id, self.settings.node_id, self.settings.lease_ttl)
            if lease is None:
                return  # finished, or another node's lease holds
            job = await self.store.job(job_id)
            if job is None or RunStatus(job.status).finished:
                return
            if job.status == RunStatus.STOPPING:
                stop.set()
            ran = False
            for step in await self.store.steps(job_id):
                status = RunStatus(step.status)
                if status in STEP_PASSED:
                    continue
                if ran and status == RunStatus.BLANK and not stop.is_set():
                    # a terminate taken while the step before ended (an approver's answer
                    # and a terminate at once) is in the store before it reaches ``stop``;
                    # before the first step, the job was read just above
                    await self.decisions.check_stop(job_id, stop)
                if status.finished or (stop.is_set() and status == RunStatus.BLANK):
                    break
                # a step begun before the job was terminated (its node died while the
                # step ran or was terminating) is taken up to end as a terminate ends it
                self.progress.step(job_id)
                status = await self._run_step(lease, job, step, stop, recovering)
                ran = True
                if status not in STEP_PASSED:
                    break
            statuses = [s.status for s in await self.store.steps(job_id)]
            final = job_status_from_steps(statuses)
            if stop.is_set():
                # the terminate was taken (its answer said so), even if every step passed
                final = RunStatus.STOP_SUCCESS
            await self.finish(job_id, final, job.callback_url, lease=lease)
        except asyncio.CancelledError:
            raise
        except LostJob:
            self._lost(job_id)
        except Exception as error:
            if (
                connection_lost(error)
                or disk_refused(error) is not None
                or not await Health(self.store.db).answers()
            ):
                # the database is away (or its disk full), not the job wrong: the job
                # stays leased to this node and is resumed once the database answers
                # (``_ended``); closing its steps would kill what its hosts run and end
                # it abnormal for an outage
                raise
            log.exception("job_failed job=%s", job_id)
            if lease is None:
                raise  # the claim itself failed: nothing of the job's was touched
            try:
                await self._close_open_steps(lease)
                await self.finish(job_id, RunStatus.ABNORMAL_STATE, None, lease=lease)
            except LostJob:
                self._lost(job_id)
        finally:
            self.decisions.forget_job(job_id)

    def _lost(self, job_id: int) -> None:
        # the job was claimed again (this driver's lease lapsed or was given up): another
        # node, or a new driver on this one, drives it from the store; this driver stops
        # without writing more
        log.warning(
            "job_lost job=%s node=%s: the job was claimed again since this driver's claim; "
            "this driver stops",
            job_id,
            self.settings.node_id,
        )

    async def _close_open_steps(self, lease: JobLease) -> None:
        """A job that failed inside jobfleet ends abnormal (9): so do its steps that had
        begun, and their hosts still open say why, so that the job's status agrees with
        itself and a retry of the step (which takes status 9) applies. Tasks already sent
        are killed on their hosts."""
        job_id = lease.job_id
        try:
            for step in await self.store.steps(job_id):
                status = RunStatus(step.status)
                if status.finished or status == RunStatus.BLANK:
                    continue
                end = now_ms()
                count = step.execute_count
                rows = [
                    r for r in await self.store.hosts(step.id, count) if r.status in UNFINISHED_HOST
                ]
                open_hosts = [r.bk_host_id for r in rows]
                try:
                    await self.store.ingest(
                        [
                            {
                                "step_instance_id": step.id,
                                "execute_count": count,
                                "bk_host_id": h,
                                "seq": NOTE_SEQ,
                                "content": FAILED_NOTE,
                            }
                            for h in open_hosts
                        ],
                        [
                            HostResult(
                                step.id, count, h, int(HostStatus.UNKNOWN_ERROR), end_time=end
                            )
                            for h in open_hosts
                        ],
                    )
                finally:
                    # what was sent stops on its host as a terminate stops it, once its
                    # host is concluded: the agent's answer to the kill (terminated) would
                    # otherwise race the conclusion and win when the store is slow
                    for row in rows:
                        if row.status == HostStatus.RUNNING:
                            self.tasks.dispatcher.kill_task(
                                protocol.task_id(step.id, count, row.bk_host_id),
                                row.bk_host_id,
                                "terminate",
                            )
                started = step.start_time or end
                await lease.update_step(
                    step.id,
                    status=int(RunStatus.ABNORMAL_STATE),
                    end_time=end,
                    total_time=end - started,
                )
        except LostJob:
            raise
        except Exception:
            # the store itself may be what failed: the job still ends below if it can
            log.exception("job_steps_not_closed job=%s", job_id)

    async def _run_step(
        self,
        lease: JobLease,
        job: Row[Any],
        step: Row[Any],
        stop: asyncio.Event,
        recovering: bool,
    ) -> RunStatus:
        if step.type == StepType.MANUAL_CONFIRM:
            return await self._confirm(lease, job, step, stop)
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
            template, per_host = _wire(template, per_host)
            status = await self.tasks.run(
                lease, step, stop, recovering, template, per_host=per_host
            )
            if state is not None:
                rows = await self.store.hosts(step.id, step.execute_count)
                after = variables.collect(state, rows, self.cipher)
                sealed = variables.seal(after, self.cipher)
                await lease.update_step(step.id, variables=sealed)
            return status
        if step.type == StepType.SQL:
            base = self._template(step)
            shared = state.values() if state is not None else None
            untrusted = state.host_set() if state is not None else set()
            template = sql.sql_message(base, step, self.cipher, shared, untrusted)
            sql_hosts: dict[int, dict[str, Any]] = {}
            if state is not None and state.per_host:
                for row in await self.store.hosts(step.id, step.execute_count):
                    own = state.values(row.bk_host_id)
                    if own != shared:
                        sql_hosts[row.bk_host_id] = sql.sql_message(
                            base, step, self.cipher, own, state.host_set(row.bk_host_id)
                        )
            template, sql_hosts = _wire(template, sql_hosts)
            return await self.tasks.run(
                lease, step, stop, recovering, template, per_host=sql_hosts
            )
        if step.type == StepType.FILE:
            if state is not None and step.start_time is None:
                secrets = variables.password_names(state)
                config = variables.render_file_config(
                    step.config or {}, state.values(), secrets, state.host_set()
                )
                await lease.update_step(step.id, config=config)
                step = await self.store.step(step.id) or step
            status = await self.file_steps.run(lease, job, step, stop, recovering)
            if state is not None:
                sealed = variables.seal(state, self.cipher)
                await lease.update_step(step.id, variables=sealed)
            return status
        log.error("step_type_unsupported job=%s step=%s type=%s", job.id, step.id, step.type)
        await lease.update_step(step.id, status=int(RunStatus.ABNORMAL_STATE), end_time=now_ms())
        return RunStatus.ABNORMAL_STATE

    def _template(self, step: Row[Any]) -> dict[str, Any]:
        param = step.script_param or ""
        sensitive = bool(step.is_param_sensitive and param)
        if sensitive:
            param = self.cipher.decrypt(param)
        # the task id is each host's own (``StepRun.message``); the agent keeps sensitive
        # args off the script's command line
        return dict(
            protocol.run(
                "",
                lang=step.script_language,
                script=loaded_script(step.script_content, step.config),
                args=split_params(param) if param else [],
                account=step.account_name,
                timeout=step.timeout,
                env={},
                max_output=self.settings.max_output,
                sensitive=sensitive,
            )
        )

    async def _confirm(
        self, lease: JobLease, job: Row[Any], step: Row[Any], stop: asyncio.Event
    ) -> RunStatus:
        """A manual confirmation step: the job waits (status 7) for an operator."""
        if step.status != RunStatus.WAITING_USER:
            await lease.update_step(
                step.id,
                status=int(RunStatus.WAITING_USER),
                start_time=step.start_time or now_ms(),
            )
            # only a running job waits: a terminate another node took meanwhile (10)
            # stays, for it is how this node learns of it when no bus message reaches it
            await lease.update_job_if(int(RunStatus.RUNNING), status=int(RunStatus.WAITING_USER))
            self.confirm_waiting(job, await self.store.step(step.id))
        current = await self.decisions.await_decision(lease, step, stop)
        if current is None:
            end = now_ms()
            latest = await self.store.step(step.id)
            started = (latest.start_time if latest is not None else None) or end
            # an approver's decision that landed since keeps the step: its answer said so
            if await lease.update_step_if(
                step.id,
                int(RunStatus.WAITING_USER),
                status=int(RunStatus.STOP_SUCCESS),
                end_time=end,
                total_time=end - started,
            ):
                return RunStatus.STOP_SUCCESS
            latest = await self.store.step(step.id)
            return RunStatus(latest.status) if latest is not None else RunStatus.STOP_SUCCESS
        return RunStatus(current.status)

    async def finish(
        self,
        job_id: int,
        status: RunStatus,
        callback_url: str | None,
        *,
        lease: JobLease | None = None,
    ) -> None:
        """Store a job's final status with its callback and notifications (one transaction).
        ``lease``: the driver's, whose claim must still hold (``LostJob`` else); a job
        that never started has no driver."""
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
        if lease is None:
            await self.store.finish_job(job_id, int(status), callback, notices, end)
        # a terminate taken after the driver chose the status (the last step had passed)
        # still stops the job, as bk-job ends a terminating job whose step no longer runs
        # (a job that failed inside jobfleet stays abnormal: that is what went wrong)
        elif not await lease.finish(
            int(status),
            callback,
            notices,
            end,
            unless_stopping=status not in (RunStatus.STOP_SUCCESS, RunStatus.ABNORMAL_STATE),
        ):
            await self.finish(job_id, RunStatus.STOP_SUCCESS, callback_url, lease=lease)
            return
        log.info("job_finished job=%s status=%d", job_id, status)
        for listener in self.on_job_finished:
            listener(job_id, status)


def _wire(
    template: dict[str, Any], per_host: dict[int, dict[str, Any]]
) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """A step's run messages with a script that is not UTF-8 carried as its bytes; done
    once here, after variables changed the script, rather than for every host sent to."""
    lang = template.get("lang")
    wired = protocol.exact_script(template)
    hosts = {host: protocol.exact_script(own, lang) for host, own in per_host.items()}
    if "script_b64" in wired:
        # a host's own script replaces the step's: so must its bytes, or none be sent
        for host, own in hosts.items():
            if "script" in own and "script_b64" not in own:
                hosts[host] = {**own, "script_b64": protocol.encode_script(own["script"])}
    return wired, hosts
