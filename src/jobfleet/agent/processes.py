"""A task's processes: keeping them together, and killing every one of them.

Two ways, chosen when the executor starts (``JOBFLEET_AGENT_CONTAINMENT``: ``auto``,
the default, ``cgroup`` or ``proc``):

- ``cgroup``, where the host has cgroup v2 and the agent may make cgroups (root):
  each task runs in a cgroup of its own, ``<cgroup2 mount>/jobfleet/<agent key>/
  task-<n>`` (kept, once empty, for a later task). The agent steps into that cgroup
  for the instant of the fork, so the script is born inside it and nothing it starts
  can leave — not ``setsid``, not a double fork. Killing is one write to
  ``cgroup.kill`` (or, before Linux 5.14, freezing the cgroup and killing what it
  lists).
- ``proc`` elsewhere: the task's process group, its session, every descendant, and
  every process whose environment carries the task's tag (``JOBFLEET_TASK_TAG``, the
  agent key and the task id, set for every task and inherited by all it starts, which
  finds a daemon that forked, called ``setsid`` and forked again), frozen with SIGSTOP
  while walked and then SIGKILLed. A process that drops that environment and
  double-forks escapes it.

The agent key is derived from the agent's work directory, so an agent restarted on
the same state directory finds the cgroups its predecessor left and kills them. A
starting agent also removes the empty cgroups of other keys whose agent no longer
runs (:mod:`jobfleet.agent.liveness` tells which still do).

Nothing of this module imports more than the standard library: the watchdog
(:mod:`jobfleet.agent.watchdog`) runs it in a small process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from jobfleet.agent import liveness

logger = logging.getLogger(__name__)

# set in every task's environment; also how a later agent recognises a task's processes
TASK_ENV = "JOBFLEET_TASK_ID"
# How long to wait for a killed tree to be reaped before reporting anyway.
KILL_WAIT = 5.0
# which agent's which task a process belongs to: ``<agent key>/<task id>``
TAG_ENV = "JOBFLEET_TASK_TAG"
CONTAINMENT_ENV = "JOBFLEET_AGENT_CONTAINMENT"
CGROUP = "cgroup"
PROC = "proc"
AUTO = "auto"
MODES = (AUTO, CGROUP, PROC)

_MARKER_PREFIX = TASK_ENV.encode() + b"="
_FREEZE_ROUNDS = 16
_TOP = "jobfleet"
# processes a task deliberately left running when it ended (``nohup … &``) move here,
# out of the task's cgroup, so that killing the agent's tasks spares them
_LEFT = "left"
_TASK_PREFIX = "task-"
# empty task cgroups an agent keeps for its next tasks, at most
_IDLE_CGROUPS = 64
_EMPTY_WAIT = 5.0


class ContainmentError(Exception):
    """The containment asked for is not available on this host."""


def safe_name(task_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in task_id)[:64]


def cgroup_name(task_id: str) -> str:
    # distinct ids that clean up to the same name still get distinct cgroups
    digest = hashlib.sha256(task_id.encode()).hexdigest()[:8]
    return f"{_TASK_PREFIX}{safe_name(task_id)}-{digest}"


# --- choosing -----------------------------------------------------------------------


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` or, on a hybrid
    host, ``/sys/fs/cgroup/unified``), or None."""
    try:
        with open("/proc/self/mountinfo") as mounts:
            for line in mounts:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return Path(left.split(" ")[4])
    except OSError:
        return None
    return None


def own_cgroup(mount: Path) -> Path:
    """The cgroup v2 directory this process is in."""
    try:
        with open("/proc/self/cgroup") as groups:
            for line in groups:
                if line.startswith("0::"):
                    return mount / line[3:].strip().lstrip("/")
    except OSError:
        pass
    return mount


def agent_key(work_dir: Path) -> str:
    return "agent-" + hashlib.sha256(os.fsencode(os.path.realpath(work_dir))).hexdigest()[:16]


def choose(mode: str | None, work_dir: Path) -> Containment:
    """The containment for an agent working in ``work_dir``; ``mode`` None reads the
    environment. ``cgroup`` where it cannot be had raises :class:`ContainmentError`."""
    wanted = (mode or os.environ.get(CONTAINMENT_ENV) or AUTO).strip().lower()
    if wanted not in MODES:
        raise ContainmentError(f"{CONTAINMENT_ENV} must be one of {', '.join(MODES)}")
    key = agent_key(work_dir)
    if wanted == PROC:
        return ProcContainment(key)
    try:
        return CgroupContainment.create(key)
    except (ContainmentError, OSError) as exc:
        if wanted == CGROUP:
            raise ContainmentError(f"cgroup v2 containment is not available: {exc}") from None
        logger.info("cgroup containment unavailable, using process tracking error=%s", exc)
        return ProcContainment(key)


# --- containments -------------------------------------------------------------------


class Containment:
    """How one agent keeps each task's processes together and kills them."""

    mode = PROC

    def __init__(self, key: str) -> None:
        self.key = key

    def tag(self, task_id: str) -> str:
        """The value of ``JOBFLEET_TASK_TAG`` in the task's environment."""
        return f"{self.key}/{task_id}"

    def enter(self, task_id: str) -> None:
        """Before the fork of a task's first process (which inherits where the agent
        is); :meth:`home` right after it."""

    def kill(self, task_id: str, pgid: int | None, *, stale: bool = False) -> None:
        """SIGKILL every process of the task. Blocking."""
        raise NotImplementedError

    def release(self, task_id: str) -> None:
        """The task has ended: what it left running on purpose is no longer its."""

    def home(self) -> None:
        """Put the agent back where it started (before forking anything not a task)."""

    def sweep(self) -> None:
        """Kill what an earlier agent with the same key left running. Blocking."""

    def describe(self) -> list[str]:
        """Arguments that make the watchdog build the same containment."""
        return [PROC, self.key]

    def close(self) -> None:
        """Nothing of the agent runs any more: remove what it made."""


class ProcContainment(Containment):
    mode = PROC

    def kill(self, task_id: str, pgid: int | None, *, stale: bool = False) -> None:
        kill_tree(pgid or 0, stale=stale, tag=self.tag(task_id))


class CgroupContainment(Containment):
    """A cgroup per running task, under the agent's own.

    A task's cgroup is taken from a pool of empty ones the agent made before and
    goes back to it once the task has ended and nothing is left in it: making and
    removing a cgroup for every task cost more than its script's spawn."""

    mode = CGROUP

    def __init__(self, base: Path, home_dir: Path, alive: int | None = None) -> None:
        super().__init__(base.name)
        self.base = base
        self._home = home_dir
        # the agent's hold on its key's lock (none in the watchdog): while held, no
        # other agent takes the empty cgroups here for a dead agent's
        self._alive = alive
        self._left = base.parent / _LEFT
        self._tasks: dict[str, Path] = {}
        self._idle: list[Path] = []
        self._made = 0

    @classmethod
    def create(cls, key: str) -> CgroupContainment:
        if os.geteuid() != 0:
            raise ContainmentError("only a root agent makes cgroups")
        mount = cgroup2_mount()
        if mount is None:
            raise ContainmentError("no cgroup v2 hierarchy is mounted")
        base = mount / _TOP / key
        try:
            alive = liveness.hold(key)
        except OSError as exc:
            raise ContainmentError(f"cannot mark this agent alive: {exc}") from None
        try:
            _remove_idle_agents(mount / _TOP)
            base.mkdir(parents=True, exist_ok=True)
            (mount / _TOP / _LEFT).mkdir(exist_ok=True)
            if not (base / "cgroup.procs").exists():
                raise ContainmentError(f"{base} is not a cgroup")
            return cls(base, own_cgroup(mount), alive)
        except BaseException:
            os.close(alive)
            raise

    def path(self, task_id: str) -> Path:
        """The task's cgroup: the one it was given, else (a task of an earlier agent,
        as the watchdog knows it) one named for it."""
        return self._tasks.get(task_id) or self.base / cgroup_name(task_id)

    def enter(self, task_id: str) -> None:
        path = self._tasks.get(task_id)
        if path is None:
            path = self._tasks[task_id] = self._idle.pop() if self._idle else self._make()
        try:
            _move(os.getpid(), path)
        except OSError as exc:
            # another agent, starting, removed it (and perhaps ours) as idle: before the
            # open (ENOENT), or between the open and the write (ENODEV)
            if exc.errno not in (errno.ENOENT, errno.ENODEV):
                raise
            path.mkdir(parents=True, exist_ok=True)
            _move(os.getpid(), path)

    def _make(self) -> Path:
        while True:
            path = self.base / f"{_TASK_PREFIX}{self._made}"
            self._made += 1
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:
                continue  # left by an earlier agent: not to be shared

    def home(self) -> None:
        _move(os.getpid(), self._home)

    def kill(self, task_id: str, pgid: int | None, *, stale: bool = False) -> None:
        path = self.path(task_id)
        self._step_out_of(path)
        kill_cgroup(path)
        if task_id not in self._tasks:
            remove_cgroup(path)  # the task's own: no other task will use it

    def _step_out_of(self, path: Path) -> None:
        # the agent is in a task's cgroup while that task is being started (from the
        # move in until its spawn returns): it must not kill itself with it
        if os.getpid() in cgroup_pids(path):
            self.home()

    def release(self, task_id: str) -> None:
        given = self._tasks.pop(task_id, None)
        path = given or self.path(task_id)
        pids: list[int] = []
        for _ in range(_FREEZE_ROUNDS):
            pids = cgroup_pids(path)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    _move(pid, self._left)
        if given is not None and not pids and len(self._idle) < _IDLE_CGROUPS:
            self._idle.append(path)  # empty: the next task's
            return
        with contextlib.suppress(OSError):
            path.rmdir()

    def sweep(self) -> None:
        try:
            names = [p for p in self.base.iterdir() if p.name.startswith(_TASK_PREFIX)]
        except OSError:
            return
        for path in names:
            if cgroup_pids(path):
                logger.warning("killing processes an earlier agent left cgroup=%s", path)
            self._step_out_of(path)
            kill_cgroup(path)
            remove_cgroup(path)

    def describe(self) -> list[str]:
        return [CGROUP, str(self.base)]

    def close(self) -> None:
        made = [*self._idle, *self._tasks.values()]
        self._idle = []
        for path in made:
            with contextlib.suppress(OSError):
                path.rmdir()  # the kernel refuses while a process is in it
        with contextlib.suppress(OSError):
            self.base.rmdir()
        if self._alive is not None:
            os.close(self._alive)
            self._alive = None
            if not self.base.exists():
                seized = liveness.seize(self.key)
                if seized is not None:
                    liveness.let_go(seized, self.key, forget=True)


# --- cgroups ------------------------------------------------------------------------


def _remove_idle_agents(top: Path) -> None:
    """Remove the cgroups of agents no longer running that hold nothing, with the empty
    task cgroups they kept: the kernel refuses to remove a cgroup with processes or
    cgroups in it. A running agent's (this one's too) are its pool, though empty: its
    own processes live elsewhere."""
    try:
        names = {e.name for e in top.iterdir() if e.name.startswith("agent-") and e.is_dir()}
    except OSError:
        return
    # with the lock files of agents whose cgroup is gone (the watchdog of one that died
    # removes it)
    for key in names | liveness.keys("agent-"):
        seized = liveness.seize(key)
        if seized is None:
            continue
        try:
            with contextlib.suppress(OSError):
                for task in (top / key).iterdir():
                    if task.name.startswith(_TASK_PREFIX):
                        with contextlib.suppress(OSError):
                            task.rmdir()
                (top / key).rmdir()
        finally:
            liveness.let_go(seized, key, forget=not (top / key).exists())


def _procs(cgroup: Path) -> str:
    # three of these per task: a Path's string is kept, a Path joined is parsed anew
    return f"{cgroup}/cgroup.procs"


def _move(pid: int, cgroup: Path) -> None:
    fd = os.open(_procs(cgroup), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"%d" % pid)
    finally:
        os.close(fd)


def cgroup_pids(path: Path) -> list[int]:
    try:
        fd = os.open(_procs(path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return []
    finally:
        os.close(fd)
    return [int(pid) for pid in b"".join(chunks).split()]


def kill_cgroup(path: Path) -> None:
    """SIGKILL every process in the cgroup ``path`` and wait until it is empty."""
    try:
        with open(path / "cgroup.kill", "w") as kill:
            kill.write("1")
    except FileNotFoundError:
        if not path.exists():
            return
        _kill_frozen(path)  # Linux before 5.14 has no cgroup.kill
    except OSError as exc:
        logger.warning("cgroup.kill failed cgroup=%s error=%s", path, exc)
        _kill_frozen(path)
    deadline = time.monotonic() + _EMPTY_WAIT
    while cgroup_pids(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def _kill_frozen(path: Path) -> None:
    with contextlib.suppress(OSError), open(path / "cgroup.freeze", "w") as freeze:
        freeze.write("1")
    for _ in range(_FREEZE_ROUNDS):
        pids = cgroup_pids(path)
        if not pids:
            break
        for pid in pids:
            signal_pid(pid, signal.SIGKILL)
    with contextlib.suppress(OSError), open(path / "cgroup.freeze", "w") as freeze:
        freeze.write("0")


def remove_cgroup(path: Path) -> None:
    deadline = time.monotonic() + _EMPTY_WAIT
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            # the last killed processes are still being torn down
            if time.monotonic() >= deadline:
                logger.warning("cgroup not removed cgroup=%s", path)
                return
            time.sleep(0.01)


# --- process tracking ---------------------------------------------------------------


def kill_tree(pgid: int, *, stale: bool, tag: str | None = None) -> int:
    """SIGKILL a task's process group, its session, every descendant, and every
    process whose environment carries ``tag`` (see ``TAG_ENV``).

    Descendants are found through /proc because a child that called setsid leaves
    the group; the environment finds one that also left its parent. The tree is
    frozen with SIGSTOP first so nothing forks or gets reparented (which would hide
    it) while it is being walked. ``stale``: the pgid comes from an earlier agent and
    may have been recycled, so only processes carrying ``JOBFLEET_TASK_ID`` that do
    not descend from this process are touched. Returns how many processes it found.
    """
    if pgid in (os.getpid(), os.getpgrp()) or (pgid <= 1 and tag is None):
        return 0
    group = pgid if pgid > 1 else 0
    if group and not stale:
        signal_group(group, signal.SIGSTOP)
    marker = f"{TAG_ENV}={tag}".encode() if tag is not None else None
    frozen: set[int] = set()
    for _ in range(_FREEZE_ROUNDS):
        fresh = tree_members(group, stale=stale, marker=marker) - frozen
        if not fresh:
            break
        for pid in fresh:
            signal_pid(pid, signal.SIGSTOP)
        frozen |= fresh
    if group and not stale:
        signal_group(group, signal.SIGKILL)
    for pid in frozen:
        signal_pid(pid, signal.SIGKILL)
    logger.debug("killed process tree pgid=%d processes=%d", pgid, len(frozen))
    return len(frozen)


def tree_members(root: int, *, stale: bool, marker: bytes | None = None) -> set[int]:
    """Processes in ``root``'s group or session, those whose environment holds
    ``marker`` exactly, and all their descendants."""
    children: dict[int, list[int]] = {}
    members: set[int] = set()
    me = os.getpid()
    for pid, ppid, pgrp, session in proc_table():
        children.setdefault(ppid, []).append(pid)
        in_group = root and root in (pid, pgrp, session)
        if in_group or (marker is not None and pid != me and marker in environment(pid)):
            members.add(pid)
    members |= descendants(members, children)
    members -= {1, me}
    if stale:
        members -= descendants({me}, children)
        members = {pid for pid in members if _tagged(pid)}
    return members


def _tagged(pid: int) -> bool:
    return any(entry.startswith(_MARKER_PREFIX) for entry in environment(pid))


def descendants(roots: set[int], children: dict[int, list[int]]) -> set[int]:
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found and child not in roots:
                found.add(child)
                todo.append(child)
    return found


def environment(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return environ.read().split(b"\0")
    except OSError:
        return []


def proc_table() -> list[tuple[int, int, int, int]]:
    """(pid, ppid, pgrp, session) of every process; empty where /proc is missing."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    table = []
    for name in names:
        if not name.isdecimal():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: parse after the last ')'
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) >= 4:
            table.append((int(name), int(fields[1]), int(fields[2]), int(fields[3])))
    return table


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def reap_without_threads(loop: asyncio.AbstractEventLoop) -> None:
    """Reap children through pidfds instead of a waiting thread per child.

    Python 3.11 starts a thread for every subprocess to wait for it; at a thousand
    short scripts that is a third of an agent's CPU. Linux 5.3+ can notify the loop
    through a pidfd instead, which is what Python 3.12 does by itself.

    Installing it is process-wide and done once: every agent of a process (a swarm's,
    or agents embedded in a program that runs several loops one after another) calls
    this, and replacing a watcher would drop the children it still waits for.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    if isinstance(_child_watcher(), _LoopPidfdWatcher):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return  # the kernel has no pidfd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(_LoopPidfdWatcher())


def _child_watcher() -> asyncio.AbstractChildWatcher:
    """The process's child watcher (deprecated API on 3.12, still what 3.11 uses)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return asyncio.get_child_watcher()


class _LoopPidfdWatcher(asyncio.AbstractChildWatcher):
    """Python 3.12's pidfd watcher on 3.11, telling the loop of an exit without its
    self-pipe.

    As in 3.12, each child is watched on the loop that started it and the watcher keeps
    no state, so it serves every loop of the process, one after another or at once;
    3.11's own ``PidfdChildWatcher`` watches on the one loop it was last attached to,
    and a new loop's children then never end.

    The loop's exit callback is written for watchers on other threads: it schedules
    through ``call_soon_threadsafe``, a write to the loop's self-pipe and a wake-up
    per child. This watcher reaps on the loop's own thread, so plain ``call_soon``
    keeps the same order (the transport hears of the exit one turn later, after
    the output read in the same turn) without that system call."""

    def __init__(self) -> None:
        # the children each loop waits for, with their pidfds (``release``)
        self._watched: dict[int, tuple[asyncio.AbstractEventLoop, int]] = {}

    def is_active(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        pass

    def __enter__(self) -> _LoopPidfdWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def add_child_handler(  # type: ignore[override]
        self, pid: int, callback: Any, *args: Any
    ) -> None:
        loop = asyncio.get_running_loop()
        if args and callback == getattr(loop, "_child_watcher_callback", None) and hasattr(
            args[0], "_process_exited"
        ):
            callback = _exited_on_loop
            args = (loop, *args)
        pidfd = os.pidfd_open(pid)
        self._watched[pid] = (loop, pidfd)
        loop._add_reader(pidfd, self._reap, loop, pid, pidfd, callback, args)  # type: ignore[attr-defined]

    def release(self, pid: int) -> int | None:
        """Stop waiting for ``pid`` on its loop; its pidfd, None if not watched."""
        watched = self._watched.pop(pid, None)
        if watched is None:
            return None
        loop, pidfd = watched
        if not loop.is_closed():
            loop._remove_reader(pidfd)  # type: ignore[attr-defined]
        return pidfd

    def _reap(
        self,
        loop: asyncio.AbstractEventLoop,
        pid: int,
        pidfd: int,
        callback: Any,
        args: tuple[Any, ...],
    ) -> None:
        self._watched.pop(pid, None)
        loop._remove_reader(pidfd)  # type: ignore[attr-defined]
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            # reaped elsewhere: 3.12 answers the same
            returncode = 255
            logger.warning("child already reaped pid=%s", pid)
        else:
            returncode = os.waitstatus_to_exitcode(status)
        os.close(pidfd)
        callback(pid, returncode, *args)

    def remove_child_handler(self, pid: int) -> bool:
        # as 3.12's: the pidfd is read once the child ends, whoever asked
        return True


def hand_over(pid: int) -> None:
    """A child that outlives the loop that started it (a managed process, which runs on
    after the agent stops): reap it in a thread whenever it exits. The loop's pidfd
    reader goes with the loop, and the child would stay a zombie of this process for
    as long as it lives (a program that embeds agents). Only this module's watcher
    needs it: the threaded one waits in a thread already."""
    watcher = _child_watcher()
    if not isinstance(watcher, _LoopPidfdWatcher):
        return
    pidfd = watcher.release(pid)
    if pidfd is not None:
        threading.Thread(target=_reap_blocking, args=(pid, pidfd), daemon=True).start()


def _reap_blocking(pid: int, pidfd: int) -> None:
    try:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    finally:
        os.close(pidfd)


def _exited_on_loop(
    pid: int, returncode: int, loop: asyncio.AbstractEventLoop, transport: Any
) -> None:
    loop.call_soon(loop.call_soon, transport._process_exited, returncode)


def kill_process_tree(pgid: int) -> int:
    """SIGKILL what is left of a task that an earlier agent process started.

    The pgid comes from the spool and may have been recycled since (after a reboot,
    say), so only processes that carry ``JOBFLEET_TASK_ID`` in their environment and
    do not descend from this agent process are touched. Returns how many it killed.
    """
    return kill_tree(pgid, stale=True)
