"""Running one host task: a script in its own process group, as the requested account.

The agent's connection code hands a :class:`TaskSpec` to an :class:`Executor` and
gets back a :class:`TaskResult`; output streams to a callback while the script runs.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import json
import logging
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from jobfleet.agent import processes as _processes
from jobfleet.agent.accounts import Account as _Account
from jobfleet.agent.accounts import AccountError as _AccountError
from jobfleet.agent.accounts import lookup_account as _lookup_account
from jobfleet.domain.protocol import clean_text
from jobfleet.domain.status import HostStatus, ScriptLanguage

logger = logging.getLogger(__name__)

OutputCallback = Callable[[str], Awaitable[None]]

# After the script's main process exits, a child it put in the background may still
# hold the output pipe open; read this much longer, then let the child be.
EXIT_GRACE = 0.3
# How long to wait for a killed tree to be reaped before reporting anyway.
KILL_WAIT = 5.0
# Output buffered beyond this (or 4 chunks) pauses reading until the consumer catches up.
PAUSE_READING_AT = 1 << 20
KILLED_EXIT_CODE = 128 + signal.SIGKILL
NOT_FOUND_EXIT_CODE = 127
CANNOT_EXECUTE_EXIT_CODE = 126
NO_EXIT_CODE = -1
TRUNCATED_NOTICE = "\n[jobfleet-agent: output truncated at {limit} bytes]\n"

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PASSED_ENV = ("LANG", "LC_ALL", "TMPDIR")
_SYSTEM_PYTHONS = ("/usr/bin/python3",)
_ACCOUNT_TTL = 60.0
# set in every task's environment; also how a later agent recognises a task's processes
TASK_ENV = _processes.TASK_ENV
# a sensitive parameter, for scripts other than shell ones (shell-quoted words)
PARAMS_ENV = "JOBFLEET_SCRIPT_PARAMS"
# where a script writes the variables it sets (a plan's later steps see them)
VARS_ENV = "JOBFLEET_VARS_FILE"
MAX_VARS_BYTES = 1024 * 1024


@dataclass
class TaskSpec:
    id: str
    lang: int
    script: str
    args: list[str]
    account: str
    timeout: int
    env: dict[str, str]
    max_output: int
    # give the script a file to write ``name=value`` lines to (variables it sets)
    collect_vars: bool = False
    # the args are a sensitive parameter: never on a command line (see script_args)
    sensitive_args: bool = False


@dataclass
class TaskResult:
    status: int
    exit_code: int
    start_ms: int
    end_ms: int
    # a line for the log when the agent, not the script, decided the outcome
    message: str = ""
    # what the script wrote to $JOBFLEET_VARS_FILE, when the task asked for it
    variables: str | None = None


class Executor(Protocol):
    async def run(
        self,
        spec: TaskSpec,
        on_output: OutputCallback,
        on_started: Callable[[int], None] | None = None,
    ) -> TaskResult: ...

    def kill(self, task_id: str, reason: str = "terminate") -> bool: ...


# --- interpreters -------------------------------------------------------------------


@dataclass(frozen=True)
class _Language:
    name: str
    ext: str
    # (program, flags placed before the script path), in order of preference
    programs: tuple[tuple[str, tuple[str, ...]], ...]
    # the interpreter insists on a real path with the extension (pwsh -File does)
    needs_file: bool = False


_LANGUAGES: dict[int, _Language] = {
    # --noprofile/--norc: a task must not depend on, or be slowed by, rc files
    ScriptLanguage.SHELL: _Language(
        "shell", ".sh", (("bash", ("--noprofile", "--norc")), ("sh", ()))
    ),
    ScriptLanguage.BAT: _Language("bat", ".bat", ()),
    ScriptLanguage.PERL: _Language("perl", ".pl", (("perl", ()),)),
    ScriptLanguage.PYTHON: _Language(
        "python", ".py", (("python3", ()), ("python", ()), ("python2", ()))
    ),
    ScriptLanguage.POWERSHELL: _Language(
        "powershell",
        ".ps1",
        (("pwsh", ("-NoProfile", "-NonInteractive", "-File")),),
        needs_file=True,
    ),
    ScriptLanguage.SQL: _Language("sql", ".sql", ()),
}


def find_interpreter(lang: int) -> list[str] | None:
    """The argv prefix that runs a script of ``lang``, or None if this host lacks it."""
    found = _lookup_interpreter(lang, os.environ.get("PATH") or _DEFAULT_PATH)
    return list(found) if found is not None else None


@functools.cache
def _lookup_interpreter(lang: int, search_path: str) -> tuple[str, ...] | None:
    language = _LANGUAGES.get(lang)
    if language is None or not language.programs:
        return None
    dirs = [d for d in search_path.split(os.pathsep) if d]
    if lang == ScriptLanguage.PYTHON:
        python = _resolve_python(dirs, _SYSTEM_PYTHONS, sys.executable)
        return (python,) if python else None
    shims: list[tuple[str, tuple[str, ...]]] = []
    for program, flags in language.programs:
        real, shim = _which(program, dirs)
        if real:
            return (real, *flags)
        if shim:
            shims.append((shim, flags))
    return (shims[0][0], *shims[0][1]) if shims else None


def _resolve_python(dirs: Sequence[str], system: Sequence[str], running: str) -> str | None:
    """Pick a Python binary, avoiding version-manager shims that add ~85 ms per start."""
    for path in system:
        if _is_executable(path):
            return path
    shim_found: str | None = None
    for program, _ in _LANGUAGES[ScriptLanguage.PYTHON].programs:
        real, shim = _which(program, dirs)
        if real:
            return real
        shim_found = shim_found or shim
    if shim_found is None:
        return None
    # only shims: the shim would pick the same kind of interpreter the agent runs on;
    # the resolved binary ignores the agent's virtualenv, so scripts don't see its packages
    target = os.path.realpath(running) if running else ""
    return target if target and _is_executable(target) else shim_found


def _which(program: str, dirs: Sequence[str]) -> tuple[str | None, str | None]:
    """First real binary and first shim named ``program`` along ``dirs``."""
    shim: str | None = None
    for directory in dirs:
        path = os.path.join(directory, program)
        if not _is_executable(path):
            continue
        if _is_shim_dir(directory):
            shim = shim or path
            continue
        return path, shim
    return None, shim


def _is_shim_dir(directory: str) -> bool:
    # pyenv, pyenv-virtualenv, rbenv, plenv and asdf all put wrappers in a "shims" dir
    return os.path.basename(os.path.normpath(directory)) == "shims"


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _missing_interpreter_message(lang: int) -> str:
    language = _LANGUAGES.get(lang)
    if language is None:
        return f"jobfleet-agent: unknown script language {lang}"
    if not language.programs:
        return f"jobfleet-agent: {language.name} scripts cannot run on this host"
    looked_for = ", ".join(program for program, _ in language.programs)
    return (
        f"jobfleet-agent: no interpreter for {language.name} on this host (looked for {looked_for})"
    )


# --- process trees ------------------------------------------------------------------


def reap_without_threads(loop: asyncio.AbstractEventLoop) -> None:
    """Reap children through pidfds instead of a waiting thread per child.

    Python 3.11 starts a thread for every subprocess to wait for it; at a thousand
    short scripts that is a third of an agent's CPU. Linux 5.3+ can notify the loop
    through a pidfd instead, which is what Python 3.12 does by itself.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return  # the kernel has no pidfd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(loop)
        asyncio.set_child_watcher(watcher)


def kill_process_tree(pgid: int) -> None:
    """SIGKILL what is left of a task that an earlier agent process started.

    The pgid comes from the spool and may have been recycled since (after a reboot,
    say), so only processes that carry ``JOBFLEET_TASK_ID`` in their environment and
    do not descend from this agent process are touched.
    """
    _processes.kill_tree(pgid, stale=True)


# --- output -------------------------------------------------------------------------


class _Output:
    """Output bytes waiting to be delivered, capped at ``limit`` bytes in total."""

    def __init__(self, limit: int, chunk_bytes: int, interval: float) -> None:
        self._limit = limit if limit > 0 else None
        self._chunk_bytes = chunk_bytes
        self._interval = interval
        self._chunks: list[bytes] = []
        self._accepted = 0
        self._first_at = 0.0
        self._truncated = False
        self._notice_due = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = 0

    def feed(self, data: bytes, now: float) -> bool:
        """Buffer ``data``; True when the supervisor has a new reason to wake."""
        if self._truncated:
            return False
        if self._limit is not None and self._accepted + len(data) > self._limit:
            data = data[: self._limit - self._accepted]
            self._truncated = self._notice_due = True
        was_empty = self.pending == 0
        if data:
            self._chunks.append(data)
            self.pending += len(data)
            self._accepted += len(data)
            if was_empty:
                self._first_at = now
        return was_empty or self._notice_due or self.pending >= self._chunk_bytes

    def due(self, now: float) -> bool:
        if self._notice_due or self.pending >= self._chunk_bytes:
            return True
        return self.pending > 0 and now >= self._first_at + self._interval

    def next_due(self) -> float | None:
        return self._first_at + self._interval if self.pending else None

    def take(self, final: bool) -> str:
        data = b"".join(self._chunks)
        self._chunks.clear()
        self.pending = 0
        # at the cut, a split character becomes U+FFFD before the notice, not after;
        # a character split across two reads is decoded whole (the decoder keeps the
        # first bytes); bytes that are not UTF-8 become U+FFFD and NUL becomes U+2400
        text = clean_text(self._decoder.decode(data, final=final or self._notice_due))
        if self._notice_due:
            self._notice_due = False
            text += TRUNCATED_NOTICE.format(limit=self._limit)
        return text


class _Pipe(asyncio.SubprocessProtocol):
    """Collects a script's merged output and notices its exit."""

    def __init__(self, output: _Output, wake: Callable[[], None], high_water: int) -> None:
        self._output = output
        self._wake = wake
        self._high_water = high_water
        self._loop = asyncio.get_running_loop()
        self._paused = False
        self.transport: asyncio.SubprocessTransport | None = None
        self.eof = False
        self.exited = False
        self.exit_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.SubprocessTransport, transport)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if self._output.feed(data, self._loop.time()):
            self._wake()
        # backpressure while a slow consumer catches up: the script blocks on write
        if not self._paused and self._output.pending >= self._high_water:
            self._paused = self._set_reading(False)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.eof = True
        self._wake()

    def process_exited(self) -> None:
        self.exited = True
        self.exit_at = self._loop.time()
        self._wake()

    def resume(self) -> None:
        if self._paused:
            self._paused = not self._set_reading(True)

    def _set_reading(self, on: bool) -> bool:
        pipe = self.transport.get_pipe_transport(1) if self.transport else None
        if not isinstance(pipe, asyncio.ReadTransport) or pipe.is_closing():
            return False
        if on:
            pipe.resume_reading()
        else:
            pipe.pause_reading()
        return True


# --- script staging -----------------------------------------------------------------


def _fd_dir() -> str | None:
    """Where a child opens an inherited descriptor by path, if in-memory scripts work here."""
    if not hasattr(os, "memfd_create"):
        return None
    for path in ("/dev/fd", "/proc/self/fd"):
        if os.path.isdir(path):
            return path
    return None


class _Script:
    """A script staged for one run: the path the interpreter opens, and what to clean up."""

    def __init__(self, path: str, fd: int | None = None, task_dir: str | None = None) -> None:
        self.path = path
        self.fd = fd
        self._task_dir = task_dir

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self.fd,) if self.fd is not None else ()

    def close_fd(self) -> None:
        """Drop the parent's copy of an in-memory script once the child holds it."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def discard(self) -> None:
        self.close_fd()
        if self._task_dir is not None:
            _remove_task_dir(self._task_dir, self.path)
            self._task_dir = None


def script_args(spec: TaskSpec) -> list[str]:
    """What follows the script on its command line.

    A sensitive parameter never does: every account may read any process's command
    line (``ps``). A shell script gets it as its positional parameters, set by a first
    line of the staged script; other languages read it from ``JOBFLEET_SCRIPT_PARAMS``
    (only the account and root can read a process's environment).
    """
    return [] if spec.sensitive_args else spec.args


def staged_text(spec: TaskSpec) -> str:
    """The script as staged for the interpreter."""
    if spec.sensitive_args and spec.lang == ScriptLanguage.SHELL:
        return f"set -- {shlex.join(spec.args)}\n{spec.script}"
    return spec.script


def _script_in_memory(spec: TaskSpec, ext: str, fd_dir: str) -> _Script:
    # close-on-exec here; pass_fds makes it inheritable in this task's child only
    fd = os.memfd_create("script" + ext, os.MFD_CLOEXEC)
    try:
        _write_all(fd, staged_text(spec).encode())
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return _Script(f"{fd_dir}/{fd}", fd=fd)


def _script_file(spec: TaskSpec, account: _Account, ext: str, work_dir: Path) -> _Script:
    task_dir = tempfile.mkdtemp(prefix=_safe_name(spec.id) + ".", dir=work_dir)
    path = os.path.join(task_dir, "script" + ext)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
        try:
            _write_all(fd, staged_text(spec).encode())
            if account.owner is not None:
                os.fchown(fd, *account.owner)
        finally:
            os.close(fd)
        if account.owner is not None:
            os.chown(task_dir, *account.owner)
    except OSError:
        _remove_task_dir(task_dir, path)
        raise
    return _Script(path, task_dir=task_dir)


class _VarsFile:
    """A file the script may write variables to, readable by the account it runs as."""

    def __init__(self, path: str, task_dir: str) -> None:
        self.path = path
        self._task_dir = task_dir

    @classmethod
    def create(cls, spec: TaskSpec, account: _Account, work_dir: Path) -> _VarsFile:
        task_dir = tempfile.mkdtemp(prefix=_safe_name(spec.id) + ".vars.", dir=work_dir)
        path = os.path.join(task_dir, "vars")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                if account.owner is not None:
                    os.fchown(fd, *account.owner)
            finally:
                os.close(fd)
            if account.owner is not None:
                os.chown(task_dir, *account.owner)
        except OSError:
            shutil.rmtree(task_dir, ignore_errors=True)
            raise
        return cls(path, task_dir)

    def read(self) -> str:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return ""
        try:
            data = os.read(fd, MAX_VARS_BYTES)
        finally:
            os.close(fd)
        return data.decode(errors="replace")

    def discard(self) -> None:
        shutil.rmtree(self._task_dir, ignore_errors=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove_task_dir(task_dir: str, script: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(script)
    try:
        os.rmdir(task_dir)
    except FileNotFoundError:
        pass
    except OSError:
        # the script left files beside itself
        shutil.rmtree(task_dir, ignore_errors=True)


# --- executors ----------------------------------------------------------------------


class _TaskRun:
    """One execution of a task: its kill request, its output, and its supervision."""

    def __init__(self, spec: TaskSpec, output: _Output, on_output: OutputCallback) -> None:
        self.spec = spec
        self.output = output
        self.kill_reason: str | None = None
        self.pipe: _Pipe | None = None
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
        self, pipe: _Pipe, pgid: int, kill: Callable[[], None]
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


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_safe_name = _processes.safe_name


class _Watchdog:
    """The agent's one watchdog process (see :mod:`jobfleet.agent.watchdog`).

    Started with the first task; told of each task's start and end over a pipe.
    If it dies it is started again, and told what runs."""

    def __init__(self, containment: _processes.Containment) -> None:
        self._containment = containment
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._running: dict[str, int | None] = {}

    def started(self, task_id: str, pgid: int | None, *, may_start: bool = False) -> None:
        """``may_start``: the caller is about to spawn (the agent may fork now)."""
        self._running[task_id] = pgid
        self._send({"op": "+", "id": task_id, "pgid": pgid}, may_start)

    def ended(self, task_id: str) -> None:
        if task_id in self._running:
            del self._running[task_id]
            self._send({"op": "-", "id": task_id}, False)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=KILL_WAIT)
            self._proc = None

    def _send(self, event: dict[str, object], may_start: bool) -> None:
        if self._fd >= 0 and self._proc is not None and self._proc.poll() is None:
            try:
                _write_all(self._fd, json.dumps(event).encode() + b"\n")
                return
            except BlockingIOError:
                # a stopped watchdog; in a cgroup it still finds the task when it acts
                logger.warning("watchdog not reading task=%s", event.get("id"))
                return
            except OSError:
                pass
        # none yet, or it died: a new one, started at the next spawn, learns all that runs
        if may_start:
            self._start()

    def _start(self) -> bool:
        self.close()
        read, write = os.pipe()
        try:
            # not from inside a task's cgroup, where it would die with that task
            self._containment.home()
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jobfleet.agent.watchdog",
                    str(read),
                    *self._containment.describe(),
                ],
                stdin=subprocess.DEVNULL,
                pass_fds=(read,),
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(write)
            logger.warning("watchdog not started error=%s", exc)
            return False
        finally:
            os.close(read)
        os.set_blocking(write, False)
        self._fd = write
        lines = [
            json.dumps({"op": "+", "id": task_id, "pgid": pgid}).encode() + b"\n"
            for task_id, pgid in self._running.items()
        ]
        with contextlib.suppress(OSError):
            _write_all(write, b"".join(lines))
        logger.debug("watchdog started pid=%d", self._proc.pid)
        return True


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
        self._fd_dir = None if script_files else _fd_dir()
        self._chunk_interval = chunk_interval
        self._chunk_bytes = max(1, chunk_bytes)
        self._running: dict[str, _TaskRun] = {}
        self._accounts: dict[str, tuple[float, _Account]] = {}
        self._base_env = {"PATH": os.environ.get("PATH") or _DEFAULT_PATH}
        self._base_env.update({k: os.environ[k] for k in _PASSED_ENV if k in os.environ})
        self._prepare_work_dir()
        self._containment = _processes.choose(containment, self._work_dir)
        logger.info("task containment mode=%s", self._containment.mode)
        # an earlier agent on this work directory may have died with tasks running
        self._containment.sweep()
        self._watchdog = _Watchdog(self._containment)

    @property
    def containment(self) -> str:
        return self._containment.mode

    def close(self) -> None:
        """Let the watchdog go; tasks still running are killed by it."""
        self._watchdog.close()
        self._containment.close()

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
        start_ms = _now_ms()
        if spec.id in self._running:
            logger.warning("task already running task=%s", spec.id)
            return _failed(
                HostStatus.GSE_TASK_ERROR,
                NO_EXIT_CODE,
                start_ms,
                "jobfleet-agent: this task is already running",
            )
        output = _Output(spec.max_output, self._chunk_bytes, self._chunk_interval)
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
                _missing_interpreter_message(spec.lang),
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
        vars_file: _VarsFile | None = None
        try:
            if spec.collect_vars:
                vars_file = _VarsFile.create(spec, account, self._work_dir)
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

    def _stage(self, spec: TaskSpec, account: _Account) -> _Script:
        # An in-memory file costs no directory entry (on some disks a create is slower
        # than the spawn itself) and leaves nothing behind if the agent dies.
        language = _LANGUAGES[spec.lang]
        if self._fd_dir is not None and not language.needs_file:
            return _script_in_memory(spec, language.ext, self._fd_dir)
        return _script_file(spec, account, language.ext, self._work_dir)

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
        self, spec: TaskSpec, account: _Account, vars_file: _VarsFile | None = None
    ) -> dict[str, str]:
        env = dict(self._base_env)
        env.update(HOME=account.home, USER=account.name, LOGNAME=account.name, SHELL=account.shell)
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
        script: _Script,
        account: _Account,
        on_started: Callable[[int], None] | None,
        start_ms: int,
        vars_file: _VarsFile | None = None,
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
                    lambda: _Pipe(task.output, task.wake, high_water),
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
        end_ms = _now_ms()
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
    return TaskResult(status, exit_code, start_ms, _now_ms(), message)


class InstantExecutor:
    """Answers every task at once without running anything (for benchmarks)."""

    async def run(
        self,
        spec: TaskSpec,
        on_output: OutputCallback,
        on_started: Callable[[int], None] | None = None,
    ) -> TaskResult:
        now = _now_ms()
        return TaskResult(HostStatus.SUCCESS, 0, now, now)

    def kill(self, task_id: str, reason: str = "terminate") -> bool:
        return False
