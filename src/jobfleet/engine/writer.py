"""The one writer of host results: agent messages and the engine's own notes are
queued here and stored in batches (``results`` decides what of a batch is stored).

A batch is acknowledged to the agents only once it is stored, and a stored final
result wakes the step attempt that waits for it (``tracking``). While many results
are still expected the writer lingers a little so that they share a transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from jobfleet.domain import protocol
from jobfleet.domain.status import HostStatus
from jobfleet.engine.ports import AgentLink
from jobfleet.engine.results import DatabaseDown, Results, TaskKey
from jobfleet.engine.signals import Signals
from jobfleet.engine.tracking import StepRun, Tracker
from jobfleet.logs import Spell
from jobfleet.store.database import now_ms
from jobfleet.store.outage import reason

log = logging.getLogger(__name__)

# a note the engine adds to a host's log sorts after anything the agent sent
NOTE_SEQ = 1_000_000_000
# While results are still expected beyond those already waiting, the writer waits
# this long for more to share one transaction (a commit per result costs ~1.5 ms of
# CPU, and the last results of a job arrive one or two milliseconds apart); once every
# expected result has arrived, or the queue is long already, it writes at once.
WRITE_LINGER = 0.02
LINGER_UNDER = 256
MAX_BATCH = 20_000
# Past this many messages waiting to be stored, an agent that sends one more is not
# read until the writer is down to half: a flood (or a slow or absent database) waits
# in the agents' sockets and spools, not in this process's memory.
QUEUE_HOLD = 50_000
# Past this many of its own messages waiting, an agent is not read until they are
# stored: the queue is first come, first served, and one agent's flood would otherwise
# stand ahead of every other host's results (seconds of them at this size).
AGENT_HOLD = 1_000

Item = tuple[AgentLink | None, dict[str, Any]]


class ResultWriter:
    def __init__(self, results: Results, tracker: Tracker, signals: Signals | None = None) -> None:
        self.results = results
        self.tracker = tracker
        # tells the node that drives a job of results stored here (a cluster)
        self.signals = signals
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        # the agents not read while the queue is over ``QUEUE_HOLD``
        self._held: set[AgentLink] = set()
        # each agent's messages in the queue
        self._waiting: dict[AgentLink, int] = {}
        # while the writer lingers: what ends the wait, and the queue's length at which
        # every result still expected is waiting
        self._lingering: tuple[asyncio.Future[None], int] | None = None
        # a line when results start to wait for the database (or its disk), one a
        # minute while they do, one when they are written again: not one per retry
        self._waiting_spell = Spell(
            log, "result_write_waiting_for_database", back="result_write_resumed"
        )

    def put(self, conn: AgentLink, message: dict[str, Any]) -> None:
        """An agent's ``out``, ``done`` or ``file_log`` message, to be stored."""
        self._queue.put_nowait((conn, message))
        if self._lingering is not None:
            self._all_arrived()
        waiting = self._waiting[conn] = self._waiting.get(conn, 0) + 1
        if (waiting >= AGENT_HOLD or self._queue.qsize() >= QUEUE_HOLD) and conn not in self._held:
            self._held.add(conn)
            conn.hold_reading(True)

    def _all_arrived(self) -> None:
        assert self._lingering is not None
        wait, expected = self._lingering
        if self._queue.qsize() >= expected and not wait.done():
            wait.set_result(None)

    def agent_gone(self, conn: AgentLink) -> None:
        """A connection that closed: no reference kept, never told to read again."""
        self._held.discard(conn)

    def _taken(self, batch: list[Item]) -> None:
        """``batch`` left the queue: its agents have that many fewer messages waiting."""
        waiting = self._waiting
        for conn, _message in batch:
            if conn is not None:
                left = waiting.get(conn, 1) - 1
                if left > 0:
                    waiting[conn] = left
                else:
                    waiting.pop(conn, None)

    def _release(self) -> None:
        if self._held and self._queue.qsize() <= QUEUE_HOLD // 2:
            waiting = self._waiting
            released = {c for c in self._held if waiting.get(c, 0) < AGENT_HOLD // 2}
            self._held -= released
            for conn in released:
                conn.hold_reading(False)

    def conclude(self, run: StepRun, hosts: Iterable[int], status: HostStatus, note: str) -> None:
        """End hosts on the engine's own authority, through the same path as agent results."""
        end = now_ms()
        for host in hosts:
            self._queue.put_nowait(
                (
                    None,
                    dict(
                        protocol.done(
                            run.task_id(host),
                            NOTE_SEQ,
                            status=int(status),
                            exit=None,
                            start=None,
                            end=end,
                            data=note,
                        )
                    ),
                )
            )
        if self._lingering is not None:
            self._all_arrived()

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._queue.qsize() < LINGER_UNDER and self._more_expected(batch):
                await self._linger(len(batch))
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self._queue.get_nowait())
            self._taken(batch)
            attempt = 0
            while True:
                try:
                    await self._write(batch)
                    self._waiting_spell.ok()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # the database is down or its disk full (a bad message is set aside
                    # by ``results`` itself): nothing was acknowledged, so agents still
                    # hold these results; keep trying, nothing is dropped
                    attempt += 1
                    if isinstance(exc, DatabaseDown):
                        # a full disk's refusal names its reason and path itself
                        why = str(exc) if exc.disk is not None else reason(exc)
                        self._waiting_spell.failed("size=%d error=%s", len(batch), why)
                    else:
                        log.exception("result_write_failed attempt=%d size=%d", attempt, len(batch))
                        if attempt >= 3:
                            await self._write_each(batch)
                            break
                    await asyncio.sleep(min(5.0, 0.2 * attempt))
            self._release()

    def _more_expected(self, batch: list[Item]) -> bool:
        """Are results still to come beyond the ones waiting (``batch`` and the queue)?
        The final result of a job is then never held back, and neither is a lone
        result of a step that waits for nothing else."""
        waiting = len(batch) + self._queue.qsize()
        return self.tracker.pending() > waiting

    async def _linger(self, taken: int) -> None:
        """Wait up to ``WRITE_LINGER`` for more messages, less once every result still
        expected is waiting (``taken`` of them are out of the queue already)."""
        loop = asyncio.get_running_loop()
        wait: asyncio.Future[None] = loop.create_future()
        self._lingering = (wait, self.tracker.pending() - taken)
        timer = loop.call_later(WRITE_LINGER, _wake, wait)
        try:
            await wait
        finally:
            timer.cancel()
            self._lingering = None

    async def _write_each(self, batch: list[Item]) -> None:
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

    async def _write(self, batch: list[Item]) -> None:
        plan = await self.results.plan(batch)
        refused = await self.results.store_entries(plan.entries)
        set_aside = {id(e) for e in refused}
        elsewhere: list[TaskKey] = []
        for key, tally in plan.tallies.items():
            if key in self.results.tallies or self.tracker.is_live(key):
                self.results.tallies[key] = tally
        for entry in plan.entries:
            result = entry.final
            if result is None:
                continue
            run_key = (result.step_instance_id, result.execute_count)
            if id(entry) in set_aside:
                run = self.tracker.get(run_key)
                if entry.conn is not None and run is not None and result.bk_host_id in run.pending:
                    self.conclude(
                        run,
                        [result.bk_host_id],
                        HostStatus.GSE_TASK_ERROR,
                        "jobfleet: the agent's result for this host could not be stored\n",
                    )
                continue
            self.results.forget(entry.key)
            if self.tracker.get(run_key) is None:
                elsewhere.append(entry.key)
            self.tracker.finish(run_key, result.bk_host_id)
        # after the step attempts woke: a job's end waits for its results to be
        # stored, not for thousands of acknowledgements to be on their way
        for conn, items in plan.acks.items():
            # what the database refused is acknowledged too: the agent would send it
            # again after every reconnect, and it would be refused again
            conn.send(protocol.ack(items))
        if elsewhere and self.signals is not None:
            try:
                await self.signals.results_stored(elsewhere)
            except Exception:
                # the driving node reads the store on its own within its reconcile interval
                log.exception("result_signal_failed results=%d", len(elsewhere))


def _wake(wait: asyncio.Future[None]) -> None:
    if not wait.done():
        wait.set_result(None)
