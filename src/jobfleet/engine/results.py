"""Where a host result is written: what of a batch of agent messages is stored, and how.

Messages reach this module validated (``protocol.read_frame``); here they are checked
against what the server knows. Output is stored only for a task the server sent to
the agent's own host and whose result is not final, and only up to
``max_output_bytes`` per host task: past that the log ends with one truncation line
and the host's final result is still stored. The check costs nothing for tasks
this node dispatched (it knows their state in memory) and one query per batch for
the others (results an agent sends again after a restart).

A batch the database refuses is split in halves until the message it refuses is
alone; that one is set aside and everything else is written. A database that is
down is not a bad message: the batch is written again once it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobfleet.domain import protocol
from jobfleet.domain.protocol import clean_text
from jobfleet.domain.states import normalize_host_status
from jobfleet.domain.status import GseErrorCode, HostStatus
from jobfleet.engine import variables
from jobfleet.engine.ports import AgentLink, LiveEvents, MessageRefusals, NoLiveEvents
from jobfleet.store import outage
from jobfleet.store.filelogs import DOWNLOAD, update_row
from jobfleet.store.jobs import HostResult, JobStore
from jobfleet.store.secrets import Cipher

log = logging.getLogger(__name__)

TaskKey = tuple[int, int, int]
# the truncation line sorts after everything else of a host's log
TRUNCATED_SEQ = protocol.INT32_MAX
FILE_LOG_CHARS = 4000


class DatabaseDown(Exception):
    """The database refused even a trivial query: retry the batch, drop nothing.

    ``disk``: why the disk took no write (``ENOSPC``, ``EROFS``, …) when that is the
    cause; the message then names it, with the database's file, itself."""

    def __init__(self, message: str, disk: str | None = None) -> None:
        super().__init__(message)
        self.disk = disk


# statuses bk-job sets without a GSE answer: the host's error_code keeps its initial 0
_NO_GSE_ANSWER = frozenset(
    {
        HostStatus.WAITING,
        HostStatus.AGENT_ERROR,
        HostStatus.HOST_NOT_EXIST,
        HostStatus.AGENT_NOT_INSTALLED,
        HostStatus.GSE_AGENT_ERROR,
    }
)


def gse_error_code(status: int) -> int:
    """The GSE error code bk-job reports beside a host status: 115 only once the task
    runs on the host (a waiting host, or one whose agent never took it, shows 0)."""
    if status in _NO_GSE_ANSWER or status in (
        HostStatus.SUCCESS,
        HostStatus.SCRIPT_NOT_ZERO_EXIT_CODE,
        HostStatus.LAST_SUCCESS,
    ):
        return int(GseErrorCode.DONE)
    if status == HostStatus.RUNNING:
        return int(GseErrorCode.RUNNING)
    if status == HostStatus.GSE_TASK_TERMINATE_SUCCESS:
        return int(GseErrorCode.TERMINATED)
    return int(GseErrorCode.OTHER)


# per status number an agent may report: the status it stands for, whether it is a
# final one, and its GSE error code (a table: working these out took ~1.5 µs a result)
_DONE: dict[int, tuple[HostStatus, bool, int]] = {
    int(s): (s, s.finished, gse_error_code(s)) for s in HostStatus
}


def done_status(value: int) -> tuple[HostStatus, bool, int]:
    """``normalize_host_status`` of a reported number, with ``finished`` and
    ``gse_error_code`` of the status."""
    found = _DONE.get(value)
    if found is None:
        found = _DONE[int(normalize_host_status(value))]
    return found


def size_label(limit: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= factor and limit % factor == 0:
            return f"{limit // factor} {unit}"
    return f"{limit} bytes"


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


@dataclass(slots=True)
class Tally:
    """A host task's output so far: bytes stored, bytes dropped past the cap."""

    stored: int = 0
    dropped: int = 0
    ends_line: bool = True


@dataclass(slots=True)
class Entry:
    """One message of a batch, as the store will see it."""

    conn: AgentLink | None
    key: TaskKey
    task: str
    seq: int
    kind: str
    chunks: list[dict[str, Any]] = field(default_factory=list)
    final: HostResult | None = None
    files: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Plan:
    entries: list[Entry]
    # [task, seq] to acknowledge, per connection: stored or never to be stored
    acks: dict[AgentLink, list[list[Any]]]
    tallies: dict[TaskKey, Tally]


def file_updates(key: TaskKey, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    step, count, host = key
    return [
        update_row(
            step,
            count,
            host,
            DOWNLOAD,
            item["n"],
            status=int(item.get("status") or 0),
            size=item.get("size"),
            speed=item.get("speed"),
            progress=int(item.get("progress") or 0),
            log=clean_text(str(item.get("log") or "")[:FILE_LOG_CHARS]),
        )
        for item in items
    ]


class Results:
    def __init__(
        self,
        store: JobStore,
        max_output_bytes: int,
        refusals: MessageRefusals | None,
        is_live: Callable[[TaskKey], bool],
        events: LiveEvents | None = None,
        *,
        cipher: Cipher | None = None,
    ) -> None:
        self.store = store
        # seals the variable values hosts report (any may be a password)
        self.cipher = cipher
        # live viewers of a step hear that its hosts have new output or results
        self.events: LiveEvents = events or NoLiveEvents()
        self.max_output_bytes = max_output_bytes
        self.refusals = refusals
        # is this task sent by this node and not finished yet?
        self.is_live = is_live
        self.tallies: dict[TaskKey, Tally] = {}

    # what the engine tells us -------------------------------------------------
    def sent(self, key: TaskKey) -> None:
        """A task went to its agent for the first time: it has no output yet."""
        self.tallies[key] = Tally()

    def forget(self, key: TaskKey) -> None:
        self.tallies.pop(key, None)

    def _refuse(self, conn: AgentLink, reason: str, detail: str, *, audit: bool = True) -> None:
        if self.refusals is not None:
            self.refusals.refuse(conn, reason, detail, audit=audit)

    # planning -------------------------------------------------------------------
    async def plan(self, batch: list[tuple[AgentLink | None, dict[str, Any]]]) -> Plan:
        # (connection, message, task, whether this node knows the task is live)
        parsed: list[tuple[AgentLink | None, dict[str, Any], TaskKey, bool]] = []
        acks: dict[AgentLink, list[list[Any]]] = {}
        unknown: set[TaskKey] = set()
        known_tallies, is_live = self.tallies, self.is_live
        for conn, msg in batch:
            task = msg["id"]
            key = protocol.parse_task_id(task)
            live = False
            if conn is not None:
                if key[2] != conn.bk_host_id:
                    self._refuse(conn, "foreign_task", f"task {task} is another host's")
                    self._ack(acks, conn, msg)
                    continue
                live = key in known_tallies and is_live(key)
                if not live:
                    unknown.add(key)
            parsed.append((conn, msg, key, live))
        found = await self._open_tasks(list(unknown)) if unknown else {}
        tallies: dict[TaskKey, Tally] = {}
        closed: set[TaskKey] = set()
        entries: list[Entry] = []
        for conn, msg, key, live in parsed:
            kind = msg["t"]
            tally = tallies.get(key)
            if tally is None:
                known = known_tallies.get(key)
                if known is not None and (conn is None or live):
                    tally = Tally(known.stored, known.dropped, known.ends_line)
                elif key in found and found[key][0] == HostStatus.RUNNING:
                    tally = Tally(found[key][1])
                elif conn is None:
                    tally = Tally()
            if conn is not None and (tally is None or key in closed):
                self._not_open(conn, msg, key, found, closed)
                if kind != protocol.FILE_LOG:
                    self._ack(acks, conn, msg)
                continue
            if tally is None or key in closed:
                continue  # the engine's own note on a host that just finished
            tallies[key] = tally
            entry = self._entry(conn, msg, key, kind, tally)
            if conn is not None and kind != protocol.FILE_LOG:
                self._ack(acks, conn, msg)
            if entry is None:
                continue
            if entry.final is not None:
                closed.add(key)
            entries.append(entry)
        return Plan(entries, acks, tallies)

    async def _open_tasks(self, keys: list[TaskKey]) -> dict[TaskKey, tuple[int, int]]:
        # a read that fails says nothing of the messages: with the database away, the
        # batch waits for it like a write would, and no message of it is dropped
        try:
            return await self.store.open_tasks(keys)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._check_database(exc)
            raise

    def _not_open(
        self,
        conn: AgentLink,
        msg: dict[str, Any],
        key: TaskKey,
        found: dict[TaskKey, tuple[int, int]],
        closed: set[TaskKey],
    ) -> None:
        task = str(msg["id"])
        if key in closed or (key in found and found[key][0] != HostStatus.WAITING):
            # also what an honest agent sends when an acknowledgement was lost
            self._refuse(conn, "after_final", f"task {task} already has its result", audit=False)
        else:
            self._refuse(conn, "unknown_task", f"task {task} was not sent to this agent")

    @staticmethod
    def _ack(acks: dict[AgentLink, list[list[Any]]], conn: AgentLink, msg: dict[str, Any]) -> None:
        acks.setdefault(conn, []).append([str(msg["id"]), int(msg.get("seq") or 0)])

    def _entry(
        self,
        conn: AgentLink | None,
        msg: dict[str, Any],
        key: TaskKey,
        kind: str,
        tally: Tally,
    ) -> Entry | None:
        step, count, host = key
        seq = int(msg.get("seq") or 0)
        entry = Entry(conn, key, msg["id"], seq, kind)
        if kind == protocol.DONE:
            status, finished, error_code = done_status(int(msg.get("status") or 0))
            if not finished and conn is not None:
                self._refuse(conn, "bad_status", f"a done message with status {int(status)}")
                return None
            entry.final = HostResult(
                step,
                count,
                host,
                int(status),
                exit_code=msg.get("exit"),
                start_time=msg.get("start"),
                end_time=msg.get("end"),
                tag=clean_text(tag) if (tag := msg.get("tag")) else "",
                error_code=error_code,
                variables=variables.reported(msg.get("vars"), self.cipher),
            )
        items = msg.get("files")
        if items:
            entry.files = file_updates(key, items)
        data = msg.get("data")
        if isinstance(data, str) and data:
            self._add_output(entry, clean_text(data) if conn is not None else data, tally)
        if entry.final is not None and tally.dropped:
            notice = (
                f"[jobfleet: output truncated at {size_label(self.max_output_bytes)}; "
                f"{tally.dropped} bytes dropped]\n"
            )
            entry.chunks.append(
                self._chunk(key, TRUNCATED_SEQ, ("" if tally.ends_line else "\n") + notice)
            )
        return entry

    def _add_output(self, entry: Entry, data: str, tally: Tally) -> None:
        if entry.conn is None:
            # the engine's own notes are short and always kept
            entry.chunks.append(self._chunk(entry.key, entry.seq, data))
            return
        size = utf8_len(data)
        room = self.max_output_bytes - tally.stored
        if size > room:
            kept = data.encode()[: max(room, 0)].decode(errors="ignore")
            tally.dropped += size - utf8_len(kept)
            data = kept
            size = utf8_len(kept)
        if data:
            tally.stored += size
            tally.ends_line = data.endswith("\n")
            entry.chunks.append(self._chunk(entry.key, entry.seq, data))

    @staticmethod
    def _chunk(key: TaskKey, seq: int, content: str) -> dict[str, Any]:
        return {
            "step_instance_id": key[0],
            "execute_count": key[1],
            "bk_host_id": key[2],
            "seq": seq,
            "content": content,
        }

    # storing ----------------------------------------------------------------------
    async def store_entries(self, entries: list[Entry]) -> list[Entry]:
        """Write ``entries``; those the database refused on their own are returned."""
        if not entries:
            return []
        try:
            await self._ingest(entries)
            return []
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._check_database(exc)
            if len(entries) > 1:
                half = len(entries) // 2
                return await self.store_entries(entries[:half]) + await self.store_entries(
                    entries[half:]
                )
            error = exc
        # one message left: a lock or a lost connection may pass, a bad value does not
        try:
            await self._ingest(entries)
            return []
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._check_database(exc)
            error = exc
        entry = entries[0]
        log.error(
            "result_refused_by_database task=%s seq=%s kind=%s error=%s",
            entry.task,
            entry.seq,
            entry.kind,
            type(error).__name__,
        )
        if entry.conn is not None:
            self._refuse(entry.conn, "database_refused", type(error).__name__)
        return entries

    async def _ingest(self, entries: list[Entry]) -> None:
        await self.store.ingest(
            [c for e in entries for c in e.chunks],
            [e.final for e in entries if e.final is not None],
            [f for e in entries for f in e.files],
        )
        self._announce(entries)

    def _announce(self, entries: list[Entry]) -> None:
        """One hint per step of the batch, whatever its number of hosts."""
        steps: dict[int, bool] = {}
        for e in entries:
            steps[e.key[0]] = steps.get(e.key[0], False) or e.final is not None
        for step, finals in steps.items():
            self.events.publish(f"step:{step}", {"type": "hosts", "final": finals})

    async def _check_database(self, exc: Exception) -> None:
        # a full or read-only disk refuses every write while reads still work: the batch
        # waits for space as for a database away, its agents not acknowledged, rather
        # than each message being refused (and so lost) on its own
        if outage.disk_refused(exc) is not None:
            where = self.store.db.file
            why = outage.disk_reason(exc, where)
            # PostgreSQL's files are not this server's to name
            place = f" path={where}" if where is not None else ""
            raise DatabaseDown(
                f"disk_refused reason={why}{place} error={outage.reason(exc)}", disk=why
            ) from exc
        try:
            await self.store.ping()
        except asyncio.CancelledError:
            raise
        except Exception:
            raise DatabaseDown(str(exc)) from exc
