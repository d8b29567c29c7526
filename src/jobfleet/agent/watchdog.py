"""The agent's watchdog: kills the agent's running tasks when the agent dies.

One small process per agent (not per task), started by the executor with the read
end of a pipe whose write end only the agent holds. When the pipe reaches end of
file — the agent exited, crashed or was SIGKILLed — the watchdog kills every task
still running, then exits. With a cgroup per task it finds them all under the
agent's cgroup; with process tracking the agent writes it a line when a task starts
and when it ends.
It ignores the signals a terminal or a service manager sends to the agent's group,
so that stopping the agent does not stop it first.

Run as ``python -m jobfleet.agent.watchdog FD cgroup BASE`` or ``… FD proc``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from jobfleet import logs
from jobfleet.agent.processes import (
    CGROUP,
    KILL_WAIT,
    CgroupContainment,
    Containment,
    ProcContainment,
)
from jobfleet.agent.staging import write_all

logger = logging.getLogger("jobfleet.agent.watchdog")


class Watchdog:
    """The agent's one watchdog process (see :mod:`jobfleet.agent.watchdog`).

    Started with the first task. If it dies it is started again. With process
    tracking it is told of each task's start and end over the pipe, and a new one is
    told what runs; a cgroup per task needs no news: at the agent's death every task
    cgroup of the agent is killed (three pipe writes per task, each waking the
    watchdog, cost more of the agent's time than the move into the cgroup)."""

    def __init__(self, containment: Containment) -> None:
        self._containment = containment
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._running: dict[str, int | None] = {}
        self._told = containment.mode != CGROUP

    def started(self, task_id: str, pgid: int | None, *, may_start: bool = False) -> None:
        """``may_start``: the caller is about to spawn (the agent may fork now)."""
        if not self._told:
            if may_start and not self._alive():
                self._start()
            return
        self._running[task_id] = pgid
        self._send({"op": "+", "id": task_id, "pgid": pgid}, may_start)

    def ended(self, task_id: str) -> None:
        if task_id in self._running:
            del self._running[task_id]
            self._send({"op": "-", "id": task_id}, False)

    def close(self, then: Callable[[], None] | None = None) -> threading.Thread | None:
        """Let the watchdog go: at the end of its pipe it kills what still runs and
        exits. ``then`` runs once it has (or after ``KILL_WAIT``).

        It is waited for on a thread of its own, returned (None when nothing is left to
        wait for): killing many tasks takes it a while, and a wait on the agent's loop
        would hold up every task's output meanwhile."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            if then is not None:
                then()
            return None
        # not a daemon: an agent that exits waits (up to KILL_WAIT) for its tasks' end
        reaper = threading.Thread(
            target=_reap, args=(proc, then), name="watchdog-reaper", daemon=False
        )
        reaper.start()
        return reaper

    def _alive(self) -> bool:
        return self._fd >= 0 and self._proc is not None and self._proc.poll() is None

    def _send(self, event: dict[str, object], may_start: bool) -> None:
        if self._alive():
            try:
                write_all(self._fd, json.dumps(event).encode() + b"\n")
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
            write_all(write, b"".join(lines))
        logger.debug("watchdog started pid=%d", self._proc.pid)
        return True


def _reap(proc: subprocess.Popen[bytes], then: Callable[[], None] | None) -> None:
    try:
        proc.wait(timeout=KILL_WAIT)
    except subprocess.TimeoutExpired:
        # reaped whenever it ends, without holding up an agent that exits
        threading.Thread(target=proc.wait, name="watchdog-reaper", daemon=True).start()
    if then is not None:
        then()


def _containment(args: list[str]) -> Containment:
    if args and args[0] == CGROUP:
        base = Path(args[1])
        # the watchdog never moves itself, so its own cgroup serves as "home"
        return CgroupContainment(base, base)
    return ProcContainment(args[1])


def watch(fd: int, containment: Containment) -> int:
    """Follow the agent's task lines on ``fd`` until EOF; kill what still runs."""
    running: dict[str, int | None] = {}
    pending = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:
            break
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        for line in lines:
            try:
                event = json.loads(line)
                if event["op"] == "+":
                    running[str(event["id"])] = event.get("pgid")
                else:
                    running.pop(str(event["id"]), None)
            except (ValueError, KeyError, TypeError):
                logger.warning("watchdog ignored a bad line")
    for task_id, pgid in running.items():
        containment.kill(task_id, pgid)
    # in a cgroup, every task is there (also one that was being started when the
    # agent died): the agent tells of none
    containment.sweep()
    containment.close()
    if running:
        logger.warning("agent gone: killed its running tasks count=%d", len(running))
    return 0


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    # its lines go to the agent's stderr, among the agent's own: written the same way
    logs.setup("warning")
    return watch(int(argv[0]), _containment(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
