"""The agent's record of task results the server has not acknowledged yet.

The agent writes a message here before sending it and forgets a task only when the
server has acknowledged its ``done`` message, so no result is lost when either side
crashes. On disk this is one append-only JSON-lines journal: a task's life costs
appends to an open file rather than creating and deleting files, which on some disks
costs more than running the script. The journal is rewritten with only the live
records at start and whenever it has grown well past them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from jobfleet.agent import jsonwire
from jobfleet.domain import protocol

logger = logging.getLogger(__name__)

JOURNAL = "spool.jsonl"
# rewrite the journal once it is this large and twice the size it had after the last rewrite
COMPACT_MIN_BYTES = 1 << 20

# Journal records: the protocol's "out" and "done" messages as sent, plus these kinds.
_ACCEPT = "accept"
_PGID = "pgid"
_ACK = "ack"
_FORGET = "forget"


# what the spool keeps and sends again: a task's output and its end
Spooled = protocol.Output | protocol.Done


@dataclass
class _Task:
    accepted_at: float
    pgid: int | None = None
    acked: int = 0
    done_seq: int | None = None
    # unacknowledged messages, in the order they were written
    messages: deque[Spooled] = field(default_factory=deque)


class Spool:
    """Accepted tasks and their unacknowledged messages, in memory and on disk."""

    def __init__(self, directory: Path | None, *, fsync: bool = False) -> None:
        """``directory=None`` keeps everything in memory only; ``fsync`` makes each
        ``finish`` durable against power loss, not just against a crash."""
        self._dir = Path(directory) if directory is not None else None
        self._fsync = fsync
        self._tasks: dict[str, _Task] = {}
        self._reloaded_unfinished: list[str] = []
        self._fd: int | None = None
        self._size = 0
        self._compact_at = COMPACT_MIN_BYTES
        # the journal's last write failed (a full disk): logged once, not per message
        self._failing = False
        # a failed write left part of a record that could not be cut off: the next
        # record starts on a line of its own
        self._torn = False
        if self._dir is not None:
            self._load(self._dir)

    # --- the agent's calls ------------------------------------------------------------

    def accept(self, task_id: str) -> None:
        """Record a run message; call before the script starts."""
        if task_id in self._tasks:
            return
        task = _Task(accepted_at=time.time())
        self._tasks[task_id] = task
        self._append({"k": _ACCEPT, "id": task_id, "at": task.accepted_at})

    def set_pgid(self, task_id: str, pgid: int) -> None:
        self._task(task_id).pgid = pgid
        self._append({"k": _PGID, "id": task_id, "pgid": pgid})

    def add_output(
        self, task_id: str, seq: int, data: str, files: list[protocol.FileItem] | None = None
    ) -> None:
        message = protocol.output(task_id, seq, data, files)
        self._task(task_id).messages.append(message)
        self._append(message)

    def finish(self, task_id: str, done: protocol.Done) -> None:
        """Record the task's final ``done`` message."""
        task = self._task(task_id)
        message: protocol.Done = {**done, "t": "done", "id": task_id}
        task.done_seq = int(message["seq"])
        task.messages.append(message)
        self._append(message, sync=self._fsync)

    def ack(self, task_id: str, seq: int) -> None:
        """The server stored everything of ``task_id`` up to ``seq``."""
        task = self._tasks.get(task_id)
        if task is None or seq <= task.acked:
            return
        task.acked = seq
        while task.messages and task.messages[0]["seq"] <= seq:
            task.messages.popleft()
        if task.done_seq is not None and seq >= task.done_seq:
            del self._tasks[task_id]
            self._append({"k": _FORGET, "id": task_id})
            self._maybe_compact()
        else:
            self._append({"k": _ACK, "id": task_id, "seq": seq})

    # --- questions ----------------------------------------------------------------------

    def known(self) -> list[str]:
        """Tasks accepted and not fully acknowledged."""
        return list(self._tasks)

    def holds(self, task_id: str) -> bool:
        """Whether ``task_id`` is accepted and not fully acknowledged."""
        return task_id in self._tasks

    def pending(self) -> list[Spooled]:
        """Every unacknowledged message, by task then seq, to send again after a reconnect."""
        out: list[Spooled] = []
        for task in self._tasks.values():
            unacked = (m for m in task.messages if m["seq"] > task.acked)
            out.extend(
                cast(Spooled, dict(m)) for m in sorted(unacked, key=lambda m: int(m["seq"]))
            )
        return out

    def interrupted(self) -> list[tuple[str, int | None]]:
        """Tasks a previous agent process accepted but never finished, with their pgid."""
        return [
            (task_id, task.pgid)
            for task_id in self._reloaded_unfinished
            if (task := self._tasks.get(task_id)) is not None and task.done_seq is None
        ]

    def is_finished(self, task_id: str) -> bool:
        """True while the task's ``done`` message is held, not yet acknowledged."""
        task = self._tasks.get(task_id)
        return task is not None and task.done_seq is not None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- disk ---------------------------------------------------------------------------

    def _task(self, task_id: str) -> _Task:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise KeyError(f"task {task_id} was never accepted by the spool") from None

    def _append(self, record: Mapping[str, Any], *, sync: bool = False) -> None:
        if self._fd is None:
            return
        line = jsonwire.dumps(record) + b"\n"
        if self._torn:
            line = b"\n" + line
        try:
            _write_all(self._fd, line)
            if sync:
                os.fdatasync(self._fd)
        except OSError as exc:
            # keep going from memory: the result still reaches the server unless the
            # agent also dies before that
            self._cut_torn()
            if not self._failing:
                self._failing = True
                logger.error(
                    "spool write failed path=%s error=%s: results are kept in memory "
                    "until the journal can be written again",
                    self._journal_path,
                    exc,
                )
            return
        if self._failing:
            self._failing = False
            logger.warning("spool write resumed path=%s", self._journal_path)
        self._torn = False
        self._size += len(line)
        if self._size >= self._compact_at:
            self._maybe_compact()

    def _cut_torn(self) -> None:
        """Drop what a failed write left of its record (a full disk takes part of it):
        the next record appended after it would otherwise share its line, and be
        skipped as damaged when the journal is read back."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            self._torn = True
        else:
            self._torn = False

    @property
    def _journal_path(self) -> Path:
        assert self._dir is not None
        return self._dir / JOURNAL

    def _load(self, directory: Path) -> None:
        # an operator may have moved the spool to another disk through a link
        private_dir(directory, allow_link=True)
        records = _read_journal(self._journal_path)
        for record in records:
            try:
                self._replay(record)
            except (KeyError, TypeError, ValueError):
                logger.warning("spool skipped a malformed record path=%s", self._journal_path)
        for task in self._tasks.values():
            task.messages = deque(m for m in task.messages if m["seq"] > task.acked)
        self._reloaded_unfinished = [
            task_id for task_id, task in self._tasks.items() if task.done_seq is None
        ]
        # rewriting also drops a torn last line, so later appends start on a clean line
        self._rewrite()
        logger.info(
            "spool loaded path=%s records=%d tasks=%d unfinished=%d",
            self._journal_path,
            len(records),
            len(self._tasks),
            len(self._reloaded_unfinished),
        )

    def _replay(self, record: dict[str, Any]) -> None:
        task_id = record.get("id")
        if not isinstance(task_id, str):
            return
        kind = record.get("k")
        if kind == _ACCEPT:
            self._tasks.setdefault(task_id, _Task(accepted_at=float(record.get("at", 0.0))))
            return
        task = self._tasks.get(task_id)
        if task is None:
            return
        if kind == _PGID:
            task.pgid = int(record["pgid"])
        elif kind == _ACK:
            task.acked = max(task.acked, int(record["seq"]))
        elif kind == _FORGET:
            del self._tasks[task_id]
        elif record.get("t") in (protocol.OUTPUT, protocol.DONE):
            seq = int(record["seq"])
            if record["t"] == protocol.DONE:
                task.done_seq = seq
            # the journal holds what this agent wrote: read back as the type it had
            task.messages.append(cast(Spooled, {**record, "seq": seq}))

    def _maybe_compact(self) -> None:
        if self._fd is None:
            return
        if not self._tasks:
            # the common idle state: everything acknowledged, nothing to keep
            self._truncate()
        elif self._size >= self._compact_at:
            self._rewrite()

    def _truncate(self) -> None:
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            logger.error("spool truncate failed path=%s error=%s", self._journal_path, exc)
            return
        self._size = 0
        self._compact_at = COMPACT_MIN_BYTES

    def _rewrite(self) -> None:
        """Replace the journal with the live records only (atomically, by rename)."""
        path = self._journal_path
        data = b"".join(jsonwire.dumps(r) + b"\n" for r in self._live_records())
        try:
            write_private(path, data, fsync=self._fsync)
            if self._fsync:
                _fsync_dir(path.parent)
        except OSError as exc:
            logger.error("spool rewrite failed path=%s error=%s", path, exc)
            if self._fd is not None:
                # keep appending to the old journal; try again once it has doubled
                self._compact_at = 2 * self._size
                return
        self._reopen(path)

    def _reopen(self, path: Path) -> None:
        self.close()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # a torn record that could not be rewritten away: end its line so the
            # next record stays whole
            size += os.write(fd, b"\n")
        self._fd = fd
        self._size = size
        self._compact_at = max(COMPACT_MIN_BYTES, 2 * size)

    def _live_records(self) -> list[Mapping[str, Any]]:
        records: list[Mapping[str, Any]] = []
        for task_id, task in self._tasks.items():
            records.append({"k": _ACCEPT, "id": task_id, "at": task.accepted_at})
            if task.pgid is not None:
                records.append({"k": _PGID, "id": task_id, "pgid": task.pgid})
            if task.acked:
                records.append({"k": _ACK, "id": task_id, "seq": task.acked})
            records.extend(m for m in task.messages if m["seq"] > task.acked)
        return records


def _read_journal(path: Path) -> list[dict[str, Any]]:
    """Every whole record; a torn last line (the agent died mid-write) is ignored."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    lines = raw.split(b"\n")
    # whatever follows the last newline was never completely written
    for number, line in enumerate(lines[:-1], 1):
        if not line:
            continue
        try:
            record = jsonwire.loads(line)
        except jsonwire.JSONDecodeError:
            logger.warning("spool skipped a damaged record path=%s line=%d", path, number)
            continue
        if isinstance(record, dict):
            records.append(record)
    if lines[-1]:
        logger.warning("spool ignored a torn last record path=%s", path)
    return records


def private_dir(directory: Path, *, allow_link: bool = False) -> None:
    """Make ``directory`` (and its parents) if missing, for the agent's user alone.

    A link there is refused unless ``allow_link``: what the agent writes inside would
    go wherever whoever planted it chose."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        fd = os.open(directory, flags if allow_link else flags | os.O_NOFOLLOW)
    except OSError as exc:
        raise OSError(exc.errno, f"{directory} is not a directory of the agent's own") from exc
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes, partial: str = "", *, fsync: bool = False) -> None:
    """Replace ``path`` with ``data``, readable by the agent's user alone, by way of a
    partial file (``partial``, in the same folder) renamed over it. The partial is
    made anew, never opened through a link or a file someone left there.

    ``fsync`` waits for the disk: only for what the agent cannot do without after a
    power loss (its credential, its pinned CA), as the caller runs on the event loop."""
    tmp = path.with_name(partial or path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a stale one, or a link: removed itself, not what it names
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        try:
            _write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
