"""Processes the agent manages for the server (GSE process management).

A process is known by ``namespace:name`` and described by a ``ProcSpec``: where it
lives (setup path), which pid file names it, the account it runs as, and the
commands that start, stop, restart and reload it. A *delegated* process is kept
alive: when it dies, the agent starts it again within ``check_interval`` seconds
and counts the restart. What is managed is kept in ``procs.json`` in the state
directory, so a restarted agent keeps watching what it watched.

Messages for local plugins (``dispatch``) are written, one file each, under
``messages/<slot_id>/`` in the state directory, where the plugin of that slot
picks them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import re
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from jobfleet.agent.accounts import (
    AccountError,
    account_environment,
    base_environment,
    lookup_account,
)
from jobfleet.agent.processes import hand_over
from jobfleet.agent.spool import private_dir, write_private
from jobfleet.agent.task import ERROR_CHARS, UNREADABLE
from jobfleet.domain import protocol

log = logging.getLogger(__name__)

# GSE's error codes for process operations
OK = 0
PROC_RUNNING = 828
PROC_NOT_RUNNING = 829
UNKNOWN_OP = 832
POST_CHECK_ERROR = 836
OP_FAILED = 65535

UNREGISTERED = 0
RUNNING = 1
STOPPED = 2

COMMAND_TIMEOUT = 60.0
STOP_WAIT = 5.0
# how long a started executable takes to write its pid file, at most
PID_FILE_WAIT = 2.0
# what of a pid file is read: a pid and then some
PID_FILE_HEAD = 64
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def now_ms() -> int:
    return int(time.time() * 1000)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # the state follows the command name in parentheses
    return fields.rpartition(")")[2].split()[:1] != ["Z"]


def read_pid(path: str) -> int:
    """The number a pid file starts with, or -1. The path is the caller's: only a regular
    file is read, never past its first bytes, and a FIFO cannot hold the agent up."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return -1
            head = os.read(fd, PID_FILE_HEAD)
        finally:
            os.close(fd)
        return int(head.split()[0])
    except (OSError, ValueError, IndexError):
        return -1


_SPEC_TEXT = (
    "namespace", "name", "proc_name", "setup_path", "pid_file", "account",
    "start_cmd", "stop_cmd", "restart_cmd", "reload_cmd", "kill_cmd",
)


def read_spec(raw: object) -> protocol.ProcSpec:
    """A process spec with every field of its type, checked before it is kept: the keeper
    reads it later in a task of its own, where a missing or mistyped field would end the
    keeping unseen (and no request is there to answer with the error)."""
    if not isinstance(raw, dict):
        raise TypeError("the spec is not an object")
    for key in _SPEC_TEXT:
        if not isinstance(raw.get(key), str):
            raise TypeError(f"the spec's {key!r} is missing or not a string")
    secs = raw.get("start_check_secs")
    if isinstance(secs, bool) or not isinstance(secs, int):
        raise TypeError("the spec's 'start_check_secs' is missing or not a number")
    return cast(protocol.ProcSpec, raw)


@dataclass
class Managed:
    spec: protocol.ProcSpec
    delegated: bool = False
    restarts: int = 0
    start_time: int = 0
    # an operation is under way: the keeper leaves the process alone
    busy: bool = False

    @property
    def pid(self) -> int:
        pid = read_pid(self.spec["pid_file"]) if self.spec["pid_file"] else -1
        return pid if pid_alive(pid) else -1

    def state(self, code: int = OK, message: str = "success") -> protocol.ProcState:
        pid = self.pid
        return protocol.proc_state(
            code,
            message[:4000],
            status=RUNNING if pid > 0 else STOPPED,
            pid=pid,
            delegated=self.delegated,
            restarts=self.restarts,
            start_time=self.start_time,
        )


class ProcessManager:
    def __init__(self, state_dir: Path | None, check_interval: float = 1.0) -> None:
        self.state_dir = state_dir
        self.check_interval = check_interval
        self._procs: dict[str, Managed] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._keeping = False
        # the processes this agent started that may still run: they outlive its stop
        self._children: list[asyncio.subprocess.Process] = []
        self._load()

    # the keeper ------------------------------------------------------------------------

    def start(self) -> None:
        """Keep delegated processes alive from now on; the keeper runs only while there
        are some (an agent that manages none does no periodic work)."""
        self._keeping = True
        self._ensure_keeper()

    def _ensure_keeper(self) -> None:
        if (
            self._keeping
            and self._keeper is None
            and any(p.delegated for p in self._procs.values())
        ):
            self._keeper = asyncio.get_running_loop().create_task(self._keep_alive())

    async def stop(self) -> None:
        task, self._keeper = self._keeper, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # managed processes run on after the agent stops (a restarted agent watches
        # them again): reaped when they end, whether or not this loop is still there
        children, self._children = self._children, []
        for child in children:
            if child.returncode is None:
                hand_over(child.pid)

    def _child(self, child: asyncio.subprocess.Process) -> None:
        self._children = [c for c in self._children if c.returncode is None]
        self._children.append(child)

    async def _keep_alive(self) -> None:
        while any(p.delegated for p in self._procs.values()):
            await asyncio.sleep(self.check_interval)
            for key, proc in list(self._procs.items()):
                if not proc.delegated or proc.busy or proc.pid > 0:
                    continue
                # counted as it begins: a status asked while the new process starts
                # (its pid file already names it) sees the restart
                proc.restarts += 1
                # and kept as it begins: the pid file is written while it starts
                self._save()
                proc.busy = True
                try:
                    code, message = await self._start(proc)
                except (OSError, AccountError) as exc:
                    code, message = OP_FAILED, str(exc)
                finally:
                    proc.busy = False
                self._save()
                log.warning("proc_restarted proc=%s code=%s restarts=%d", key, code, proc.restarts)
                if code not in (OK, PROC_RUNNING):
                    log.warning("proc_restart_failed proc=%s message=%s", key, message)
        self._keeper = None

    # operations ------------------------------------------------------------------------

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        """The answer to a ``proc`` request: ``{"proc": ProcState}``."""
        spec = read_spec(message["spec"])
        op = message["op"]
        if isinstance(op, bool) or not isinstance(op, int):
            raise TypeError(f"the op is not a number: {str(op)[:ERROR_CHARS]}")
        key = f"{spec['namespace']}:{spec['name']}"
        proc = self._procs.get(key)
        if op == protocol.PROC_STATUS:
            if proc is None:
                return {"proc": protocol.proc_state(OK, "not registered", status=UNREGISTERED)}
            return {"proc": proc.state()}
        if op not in protocol.PROC_OPS:
            return {"proc": protocol.proc_state(UNKNOWN_OP, f"unknown op {op}", status=0)}
        if proc is None:
            proc = self._procs[key] = Managed(spec)
        else:
            proc.spec = spec
        proc.busy = True
        try:
            code, text = await self._operate(proc, op)
        except (OSError, AccountError) as exc:
            code, text = OP_FAILED, str(exc)
        finally:
            proc.busy = False
        self._save()
        self._ensure_keeper()
        log.info("proc_operated proc=%s op=%s code=%s", key, op, code)
        return {"proc": proc.state(code, text)}

    async def _operate(self, proc: Managed, op: int) -> tuple[int, str]:
        spec = proc.spec
        if op == protocol.PROC_DELEGATE:
            proc.delegated = True
            return OK, "success"
        if op == protocol.PROC_UNDELEGATE:
            proc.delegated = False
            return OK, "success"
        if op == protocol.PROC_START:
            code, text = await self._start(proc)
            if code in (OK, PROC_RUNNING):
                proc.delegated = True
            return code, text
        if op in (protocol.PROC_STOP, protocol.PROC_KILL):
            proc.delegated = False
            forced = op == protocol.PROC_KILL
            return await self._stop(proc, spec["kill_cmd"] if forced else spec["stop_cmd"], forced)
        if op == protocol.PROC_RESTART:
            if spec["restart_cmd"]:
                code, text = await self._command(proc, spec["restart_cmd"])
                return (code, text) if code else await self._started(proc)
            await self._stop(proc, spec["stop_cmd"], False)
            return await self._start(proc)
        # reload
        pid = proc.pid
        if pid <= 0:
            return PROC_NOT_RUNNING, "the process is not running"
        if spec["reload_cmd"]:
            return await self._command(proc, spec["reload_cmd"])
        await self._signal(proc, pid, signal.SIGHUP)
        return OK, "success"

    async def _start(self, proc: Managed) -> tuple[int, str]:
        if proc.pid > 0:
            return PROC_RUNNING, "the process is already running"
        spec = proc.spec
        if spec["start_cmd"]:
            code, text = await self._command(proc, spec["start_cmd"])
            if code:
                return code, text
        else:
            await self._spawn(proc)
        return await self._started(proc)

    async def _started(self, proc: Managed) -> tuple[int, str]:
        deadline = time.monotonic() + max(1, proc.spec["start_check_secs"])
        while time.monotonic() < deadline:
            if proc.pid > 0:
                proc.start_time = now_ms()
                return OK, "success"
            await asyncio.sleep(0.1)
        return POST_CHECK_ERROR, "the process is not running after start (post check)"

    async def _stop(self, proc: Managed, command: str, forced: bool) -> tuple[int, str]:
        pid = proc.pid
        if pid <= 0:
            return PROC_NOT_RUNNING, "the process is not running"
        if command:
            code, text = await self._command(proc, command)
            if code:
                return code, text
        else:
            await self._signal(proc, pid, signal.SIGKILL if forced else signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return OK, "success"
            await asyncio.sleep(0.1)
        await self._signal(proc, pid, signal.SIGKILL)
        return OK, "success (killed after the stop wait)"

    def _popen_args(self, proc: Managed) -> dict[str, Any]:
        """Run as the spec's account (the server allows only the business's execution
        accounts), with its login variables and none of the agent's own environment; no
        account (an older server): as the agent's own user."""
        spec = proc.spec
        account = lookup_account(spec["account"] or pwd.getpwuid(os.geteuid()).pw_name)
        return {
            "cwd": spec["setup_path"] or account.cwd,
            "env": {**base_environment(), **account_environment(account)},
            "stdin": asyncio.subprocess.DEVNULL,
            "stdout": asyncio.subprocess.DEVNULL,
            "stderr": asyncio.subprocess.DEVNULL,
            "start_new_session": True,
            **account.switch,
        }

    async def _command(self, proc: Managed, command: str) -> tuple[int, str]:
        """Run a control command; what it leaves in the background keeps running."""
        child = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, **self._popen_args(proc)
        )
        try:
            code = await asyncio.wait_for(child.wait(), COMMAND_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            self._child(child)  # killed, not yet reaped
            return OP_FAILED, f"the command did not finish in {COMMAND_TIMEOUT:g}s"
        return (OK, "success") if code == 0 else (OP_FAILED, f"the command exited with {code}")

    async def _spawn(self, proc: Managed) -> None:
        """No start command: run the executable itself, its pid file written by the
        account (a shell that writes its own pid, then becomes the executable), never
        by the agent's own user, who may be root."""
        spec = proc.spec
        path = os.path.join(spec["setup_path"], spec["proc_name"])
        args = self._popen_args(proc)
        if not spec["pid_file"]:
            self._child(await asyncio.create_subprocess_exec(path, **args))
            return
        child = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", 'echo "$$" > "$1" && exec "$0"', path, spec["pid_file"], **args
        )
        self._child(child)
        # the pid file names the process once this returns, as when the agent wrote it
        deadline = time.monotonic() + PID_FILE_WAIT
        while read_pid(spec["pid_file"]) != child.pid and child.returncode is None:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)

    async def _signal(self, proc: Managed, pid: int, sig: signal.Signals) -> None:
        """Send ``sig`` to ``pid`` as the spec's account: a pid file naming a process of
        another user does not make the agent (perhaps root) signal it."""
        args = self._popen_args(proc)
        if "user" not in args:  # the agent is that account
            os.kill(pid, sig)
            return
        child = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", 'kill -s "$0" "$1"', sig.name.removeprefix("SIG"), str(pid), **args
        )
        if await child.wait():
            raise PermissionError(
                f"process {pid} (from the pid file) may not be signalled as {proc.spec['account']}"
            )

    # messages for local plugins --------------------------------------------------------

    def deliver(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.state_dir is None:
            return {"status": OP_FAILED, "error": "the agent has no state directory"}
        slot = message["slot_id"]
        if isinstance(slot, bool) or not isinstance(slot, int):
            raise TypeError(f"the slot id is not a number: {str(slot)[:ERROR_CHARS]}")
        messages = self.state_dir / "messages"
        private_dir(messages)
        folder = messages / str(slot)
        private_dir(folder)
        name = _SAFE.sub("_", str(message["message_id"]))[:64] or "message"
        target = folder / f"{name}.json"
        write_private(
            target,
            json.dumps(
                {"message_id": message["message_id"], "content": message["content"]}
            ).encode(),
            f".{name}.part",
        )
        return {"delivered": str(target)}

    # persistence -----------------------------------------------------------------------

    def _file(self) -> Path | None:
        return self.state_dir / "procs.json" if self.state_dir is not None else None

    def _load(self) -> None:
        path = self._file()
        if path is None or not path.exists():
            return
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("procs_state_unreadable path=%s error=%s", path, exc)
            return
        if not isinstance(saved, dict):
            log.warning("procs_state_unreadable path=%s error=not an object", path)
            return
        for key, item in saved.items():
            # checked as a request's spec is: the keeper would end at a bad one unseen,
            # and one bad entry costs only itself
            try:
                self._procs[key] = Managed(
                    read_spec(item["spec"]),
                    bool(item["delegated"]),
                    int(item["restarts"]),
                    int(item["start_time"]),
                )
            except UNREADABLE as exc:
                log.warning(
                    "proc_state_unreadable proc=%s error=%s: %s",
                    key[:ERROR_CHARS], type(exc).__name__, str(exc)[:ERROR_CHARS],
                )

    def _save(self) -> None:
        path = self._file()
        if path is None:
            return
        data = {
            key: {
                "spec": p.spec,
                "delegated": p.delegated,
                "restarts": p.restarts,
                "start_time": p.start_time,
            }
            for key, p in self._procs.items()
        }
        write_private(path, json.dumps(data).encode(), path.with_suffix(".part").name)
