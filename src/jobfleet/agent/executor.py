"""Supervising one host task: a script in its own process group, as the requested account.

The agent's connection code hands a :class:`TaskSpec` to an :class:`Executor` and
gets back a :class:`TaskResult`; output streams to a callback while the script runs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from jobfleet.agent import processes as _processes
from jobfleet.agent.accounts import Account as _Account
from jobfleet.agent.accounts import AccountError as _AccountError
from jobfleet.agent.accounts import account_environment, base_environment
from jobfleet.agent.accounts import lookup_account as _lookup_account
from jobfleet.agent.interpreters import (
    LANGUAGES,
    find_interpreter,
    missing_interpreter_message,
)
from jobfleet.agent.output import Output, Pipe
from jobfleet.agent.processes import KILL_WAIT
from jobfleet.agent.staging import (
    Script,
    VarsFile,
    fd_dir,
    script_args,
    script_file,
    script_in_memory,
)
from jobfleet.agent.task import OutputCallback, TaskResult, TaskSpec
from jobfleet.agent.watchdog import Watchdog
from jobfleet.domain.status import HostStatus, ScriptLanguage

logger = logging.getLogger(__name__)

# After the script's main process exits, a child it put in the background may still
# hold the output pipe open; read this much longer, then let the child be.
EXIT_GRACE = 0.3
# Output buffered beyond this (or 4 chunks) pauses reading until the consumer catches up.
PAUSE_READING_AT = 1 << 20
KILLED_EXIT_CODE = 128 + signal.SIGKILL
NOT_FOUND_EXIT_CODE = 127
CANNOT_EXECUTE_EXIT_CODE = 126
NO_EXIT_CODE = -1


_ACCOUNT_TTL = 60.0
# set in every task's environment; also how a later agent recognises a task's processes
TASK_ENV = _processes.TASK_ENV
# a sensitive parameter, for scripts other than shell ones (shell-quoted words)
PARAMS_ENV = "JOBFLEET_SCRIPT_PARAMS"
# where a script writes the variables it sets (a plan's later steps see them)
VARS_ENV = "JOBFLEET_VARS_FILE"


# --- executors ----------------------------------------------------------------------


class _TaskRun:
    """One execution of a task: its kill request, its output, and its supervision."""

    def __init__(self, spec: TaskSpec, output: Output, on_output: OutputCallback) -> None:
        self.spec = spec
        self.output = output
        self.kill_reason: str | None = None
        self.pipe: Pipe | None = None
        self._on_output = on_output
        self._waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def sleep(self, timeout: float | None) -> None:
        """Sleep until woken or ``timeout`` seconds pass."""
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        timer = loop.call_later(timeout, self.wake) if timeout is not None else None
        try:
            await self._waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def supervise(
        self, pipe: Pipe, pgid: int, kill: Callable[[], None]
    ) -> tuple[int, int, str]:
        """Deliver output until the script ends, killing its tree on timeout or request."""
        loop = asyncio.get_running_loop()
        spec = self.spec
        deadline = loop.time() + spec.timeout if spec.timeout > 0 else None
        killed: tuple[int, str] | None = None
        kill_until = 0.0
        delivering_after_exit = 0.0
        while not (pipe.eof and pipe.exited):
            now = loop.time()
            if killed is None and not pipe.exited and self._kill_due(deadline, now):
                assert self.kill_reason is not None
                killed = _kill_outcome(self.kill_reason, spec)
                logger.info(
                    "killing task task=%s pgid=%d reason=%s", spec.id, pgid, self.kill_reason
                )
                await loop.run_in_executor(None, kill)
                kill_until = loop.time() + KILL_WAIT
                continue
            if self.output.due(now):
                await self.deliver(final=False)
                if pipe.exited:
                    # a slow consumer must not eat the time left to drain the pipe
                    delivering_after_exit += loop.time() - now
                pipe.resume()
                continue
            if pipe.exited or killed is not None:
                if pipe.exited:
                    stop_at = pipe.exit_at + EXIT_GRACE + delivering_after_exit
                else:
                    stop_at = kill_until
                if now >= stop_at:
                    # a background process holds the pipe open, or a killed tree won't die
                    logger.info("stopped reading task=%s exited=%s", spec.id, pipe.exited)
                    break
                next_event = stop_at
            else:
                next_event = math.inf if deadline is None else deadline
            flush_at = self.output.next_due()
            wake_at = next_event if flush_at is None else min(flush_at, next_event)
            await self.sleep(None if wake_at == math.inf else max(0.0, wake_at - now))
        await self.deliver(final=True)
        if killed is not None:
            return killed[0], KILLED_EXIT_CODE, killed[1]
        return _exit_status(pipe.transport.get_returncode() if pipe.transport else None)

    def _kill_due(self, deadline: float | None, now: float) -> bool:
        if self.kill_reason is None and deadline is not None and now >= deadline:
            self.kill_reason = "timeout"
        return self.kill_reason is not None

    async def deliver(self, *, final: bool) -> None:
        text = self.output.take(final)
        if text:
            await self._on_output(text)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ProcessExecutor:
    """Runs scripts as real processes on this host."""

    def __init__(
        self,
        work_dir: Path,
        *,
        chunk_interval: float = 0.2,
        chunk_bytes: int = 65536,
        script_files: bool = False,
        containment: str | None = None,
    ) -> None:
        """``script_files`` writes every script under ``work_dir`` even where it could
        be handed to the interpreter as an in-memory file. ``containment``: ``cgroup``,
        ``proc`` or ``auto`` (see :mod:`jobfleet.agent.processes`); None reads
        ``JOBFLEET_AGENT_CONTAINMENT``."""
        self._work_dir = Path(work_dir)
        self._fd_dir = None if script_files else fd_dir()
        self._chunk_interval = chunk_interval
        self._chunk_bytes = max(1, chunk_bytes)
        self._running: dict[str, _TaskRun] = {}
        self._accounts: dict[str, tuple[float, _Account]] = {}
        self._base_env = base_environment()
        self._prepare_work_dir()
        self._containment = _processes.choose(containment, self._work_dir)
        logger.info("task containment mode=%s", self._containment.mode)
        # an earlier agent on this work directory may have died with tasks running
        self._containment.sweep()
        self._watchdog = Watchdog(self._containment)

    @property
    def containment(self) -> str:
        return self._containment.mode

    def close(self) -> threading.Thread | None:
        """Let the watchdog go; tasks still running are killed by it. The thread that
        waits for it (and then removes what the agent made) is returned, if any."""
        # a task being started holds the agent in its cgroup until its spawn returns;
        # the watchdog kills that cgroup, so the agent leaves it first
        try:
            self._containment.home()
        except OSError as exc:
            logger.warning("could not move the agent out of a task's cgroup error=%s", exc)
        # what the agent made goes once the watchdog, which kills what is in it, is done
        return self._watchdog.close(then=self._containment.close)

    def _prepare_work_dir(self) -> None:
        self._work_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # other accounts must reach their own 0700 task directories inside it
            mode = self._work_dir.stat().st_mode & 0o7777
            if mode & 0o011 != 0o011:
                self._work_dir.chmod(mode | 0o011)

    def kill(self, task_id: str, reason: str = "terminate") -> bool:
        """Kill a running task's whole tree; True if it was running."""
        task = self._running.get(task_id)
        if task is None or task.kill_reason is not None:
            return False
        if task.pipe is not None and task.pipe.exited:
            return False
        task.kill_reason = reason or "terminate"
        task.wake()
        return True

    async def run(
        self,
        spec: TaskSpec,
        on_output: OutputCallback,
        on_started: Callable[[int], None] | None = None,
    ) -> TaskResult:
        start_ms = now_ms()
        if spec.id in self._running:
            logger.warning("task already running task=%s", spec.id)
            return _failed(
                HostStatus.GSE_TASK_ERROR,
                NO_EXIT_CODE,
                start_ms,
                "jobfleet-agent: this task is already running",
            )
        output = Output(spec.max_output, self._chunk_bytes, self._chunk_interval)
        task = _TaskRun(spec, output, on_output)
        self._running[spec.id] = task
        try:
            return await self._prepare_and_run(task, on_started, start_ms)
        finally:
            del self._running[spec.id]

    async def _prepare_and_run(
        self, task: _TaskRun, on_started: Callable[[int], None] | None, start_ms: int
    ) -> TaskResult:
        spec = task.spec
        interpreter = find_interpreter(spec.lang)
        if interpreter is None:
            logger.warning("no interpreter task=%s lang=%d", spec.id, spec.lang)
            return _failed(
                HostStatus.SCRIPT_FAILED,
                NOT_FOUND_EXIT_CODE,
                start_ms,
                missing_interpreter_message(spec.lang),
            )
        try:
            account = self._account(spec.account)
        except _AccountError as exc:
            logger.warning("account refused task=%s account=%s", spec.id, spec.account)
            return _failed(HostStatus.GSE_USER_ERROR, NO_EXIT_CODE, start_ms, str(exc))
        if task.kill_reason is not None:
            status, message = _kill_outcome(task.kill_reason, spec)
            return _failed(status, KILLED_EXIT_CODE, start_ms, message)
        try:
            script = self._stage(spec, account)
        except OSError as exc:
            logger.warning("script write failed task=%s error=%s", spec.id, exc)
            return _failed(
                HostStatus.SCRIPT_FAILED,
                CANNOT_EXECUTE_EXIT_CODE,
                start_ms,
                f"jobfleet-agent: could not write the script: {exc}",
            )
        vars_file: VarsFile | None = None
        try:
            if spec.collect_vars:
                vars_file = VarsFile.create(spec, account, self._work_dir)
            argv = [*interpreter, script.path, *script_args(spec)]
            result = await self._spawn_and_supervise(
                task, argv, script, account, on_started, start_ms, vars_file
            )
            if vars_file is not None:
                result.variables = vars_file.read()
            return result
        except OSError as exc:
            logger.warning("variables file failed task=%s error=%s", spec.id, exc)
            return _failed(
                HostStatus.SCRIPT_FAILED,
                CANNOT_EXECUTE_EXIT_CODE,
                start_ms,
                f"jobfleet-agent: could not prepare the variables file: {exc}",
            )
        finally:
            script.discard()
            if vars_file is not None:
                vars_file.discard()

    def _stage(self, spec: TaskSpec, account: _Account) -> Script:
        # An in-memory file costs no directory entry (on some disks a create is slower
        # than the spawn itself) and leaves nothing behind if the agent dies.
        language = LANGUAGES[spec.lang]
        if self._fd_dir is not None and not language.needs_file:
            return script_in_memory(spec, language.ext, self._fd_dir)
        return script_file(spec, account, language.ext, self._work_dir)

    def _account(self, name: str) -> _Account:
        # pwd and getgrouplist read /etc (or a directory service) on every call
        now = time.monotonic()
        cached = self._accounts.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        account = _lookup_account(name)
        self._accounts[name] = (now + _ACCOUNT_TTL, account)
        return account

    def _environment(
        self, spec: TaskSpec, account: _Account, vars_file: VarsFile | None = None
    ) -> dict[str, str]:
        env = dict(self._base_env)
        env.update(account_environment(account))
        env.update(spec.env)
        if spec.sensitive_args and spec.lang != ScriptLanguage.SHELL:
            env[PARAMS_ENV] = shlex.join(spec.args)
        env[TASK_ENV] = spec.id
        env[_processes.TAG_ENV] = self._containment.tag(spec.id)
        if vars_file is not None:
            env[VARS_ENV] = vars_file.path
        return env

    def _forget(self, task_id: str) -> None:
        """The task is over: what it left running on purpose is no longer its."""
        try:
            self._containment.release(task_id)
        except OSError as exc:
            logger.warning("task cgroup not released task=%s error=%s", task_id, exc)
        self._watchdog.ended(task_id)

    async def _spawn_and_supervise(
        self,
        task: _TaskRun,
        argv: list[str],
        script: Script,
        account: _Account,
        on_started: Callable[[int], None] | None,
        start_ms: int,
        vars_file: VarsFile | None = None,
    ) -> TaskResult:
        spec = task.spec
        loop = asyncio.get_running_loop()
        high_water = max(4 * self._chunk_bytes, PAUSE_READING_AT)
        containment = self._containment
        try:
            self._watchdog.started(spec.id, None, may_start=True)
            # Where a process forks decides its child's cgroup. Nothing runs between
            # the move in and the fork (subprocess_exec forks before it first
            # yields), so every spawn, of any executor in this process, forks where
            # it moved; the move home comes before anything may kill the task.
            containment.enter(spec.id)
            try:
                transport, pipe = await loop.subprocess_exec(
                    lambda: Pipe(task.output, task.wake, high_water),
                    *argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=account.cwd,
                    env=self._environment(spec, account, vars_file),
                    pass_fds=script.pass_fds,
                    **account.switch,
                )
            finally:
                containment.home()
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            logger.warning("spawn failed task=%s error=%s", spec.id, exc)
            self._forget(spec.id)
            return _failed(
                HostStatus.SCRIPT_FAILED,
                CANNOT_EXECUTE_EXIT_CODE,
                start_ms,
                f"jobfleet-agent: could not start the script: {exc}",
            )
        except BaseException:
            # cancelled while starting: whatever had started goes with it
            containment.kill(spec.id, None)
            self._forget(spec.id)
            raise
        finally:
            script.close_fd()
        task.pipe = pipe
        pgid = transport.get_pid()
        self._watchdog.started(spec.id, pgid)
        logger.debug("task started task=%s pgid=%d", spec.id, pgid)
        kill = functools.partial(containment.kill, spec.id, pgid)
        try:
            if on_started is not None:
                on_started(pgid)
            status, exit_code, message = await task.supervise(pipe, pgid, kill)
        finally:
            if not pipe.exited:
                # cancelled, or a callback failed: leave nothing of the task running
                # (inline, as a cancelled coroutine cannot wait for a thread)
                kill()
            transport.close()
            self._forget(spec.id)
        end_ms = now_ms()
        logger.debug(
            "task finished task=%s status=%d exit=%d ms=%d",
            spec.id,
            status,
            exit_code,
            end_ms - start_ms,
        )
        return TaskResult(status, exit_code, start_ms, end_ms, message)


def _exit_status(returncode: int | None) -> tuple[int, int, str]:
    if returncode is None:
        return HostStatus.SCRIPT_FAILED, NO_EXIT_CODE, "jobfleet-agent: exit status unknown"
    if returncode == 0:
        return HostStatus.SUCCESS, 0, ""
    exit_code = returncode if returncode > 0 else 128 - returncode
    return HostStatus.SCRIPT_NOT_ZERO_EXIT_CODE, exit_code, ""


def _kill_outcome(reason: str, spec: TaskSpec) -> tuple[int, str]:
    if reason == "timeout":
        return (
            HostStatus.SCRIPT_TIMEOUT,
            f"jobfleet-agent: script timed out after {spec.timeout} s; killed its process tree",
        )
    return (
        HostStatus.GSE_TASK_TERMINATE_SUCCESS,
        f"jobfleet-agent: task terminated ({reason}); killed its process tree",
    )


def _failed(status: int, exit_code: int, start_ms: int, message: str) -> TaskResult:
    return TaskResult(status, exit_code, start_ms, now_ms(), message)
