"""The result writer: only what the database refuses is set aside, and a cap holds per host."""

from __future__ import annotations

import asyncio
import errno
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from jobfleet.domain.status import HostStatus
from jobfleet.engine import writer as writer_module
from jobfleet.engine.dispatch import AgentEvents
from jobfleet.engine.results import (
    TRUNCATED_SEQ,
    DatabaseDown,
    Entry,
    Results,
    TaskKey,
    gse_error_code,
    size_label,
)
from jobfleet.engine.tracking import SENT, StepRun, Tracker
from jobfleet.engine.writer import ResultWriter
from jobfleet.store.jobs import HostResult


@dataclass
class Link:
    bk_host_id: int
    agent_id: str = "a1"
    peer: str = "127.0.0.1"
    known: set[str] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def __hash__(self) -> int:
        return id(self)


class Store:
    """Stands in for JobStore: refuses any batch that holds a chunk saying POISON."""

    def __init__(self, open_: dict[TaskKey, tuple[int, int]] | None = None) -> None:
        self.open = open_ or {}
        self.chunks: list[dict[str, Any]] = []
        self.finals: list[HostResult] = []
        self.calls = 0
        self.queries = 0
        self.down = False
        self.flaky = 0

    async def ingest(self, chunks: list[dict[str, Any]], finals: list[HostResult],
                     file_updates: list[dict[str, Any]] | None = None) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("database is down")
        if self.flaky:
            self.flaky -= 1
            raise RuntimeError("database is locked")
        if any("POISON" in c["content"] for c in chunks):
            raise ValueError("invalid byte sequence")
        self.chunks.extend(chunks)
        self.finals.extend(finals)

    async def ping(self) -> None:
        if self.down:
            raise ConnectionError("database is down")

    async def open_tasks(self, keys: list[TaskKey]) -> dict[TaskKey, tuple[int, int]]:
        self.queries += 1
        return {k: self.open[k] for k in keys if k in self.open}


class Refusals:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def refuse(self, conn: Any, reason: str, detail: str, *, audit: bool = True) -> None:
        self.reasons.append(reason)


def entry(n: int, text: str = "ok") -> Entry:
    key = (1, 0, n)
    return Entry(None, key, f"1:0:{n}", 1, "out",
                 chunks=[{"step_instance_id": 1, "execute_count": 0, "bk_host_id": n,
                          "seq": 1, "content": text}])


def results(store: Store, live: set[TaskKey] | None = None, cap: int = 1 << 20) -> Results:
    return Results(store, cap, Refusals(), lambda key: key in (live or set()))  # type: ignore[arg-type]


@pytest.mark.parametrize("poison_at", [0, 7, 499, 999])
async def test_one_refused_message_is_set_aside_and_the_rest_written(poison_at: int) -> None:
    store = Store()
    writer = results(store)
    batch = [entry(i, "POISON" if i == poison_at else f"line {i}") for i in range(1000)]
    refused = await writer.store_entries(batch)
    assert [e.key[2] for e in refused] == [poison_at]
    assert sorted(c["bk_host_id"] for c in store.chunks) == [i for i in range(1000)
                                                              if i != poison_at]
    # halving: a few dozen transactions, not one per message
    assert store.calls < 2 * 10 + 5


async def test_several_bad_messages_in_one_batch() -> None:
    store = Store()
    batch = [entry(i, "POISON" if i % 100 == 3 else "fine") for i in range(1000)]
    refused = await results(store).store_entries(batch)
    assert len(refused) == 10 and len(store.chunks) == 990


async def test_a_database_that_is_down_drops_nothing() -> None:
    store = Store()
    store.down = True
    with pytest.raises(DatabaseDown):
        await results(store).store_entries([entry(i) for i in range(10)])
    assert store.chunks == []


async def test_a_passing_failure_is_not_taken_for_a_bad_message() -> None:
    store = Store()
    store.flaky = 1
    refused = await results(store).store_entries([entry(0)])
    assert refused == [] and len(store.chunks) == 1


def out(task: str, seq: int, data: str) -> dict[str, Any]:
    return {"t": "out", "id": task, "seq": seq, "data": data}


def done(task: str, seq: int, data: str = "") -> dict[str, Any]:
    return {"t": "done", "id": task, "seq": seq, "status": 9, "exit": 0, "start": 1, "end": 2,
            "data": data}


async def test_live_tasks_cost_no_query_and_others_one_per_batch() -> None:
    # host 8 runs, host 9 has its result, host 10 waits for its turn
    store = Store({(1, 0, 8): (7, 0), (1, 0, 9): (9, 0), (1, 0, 10): (5, 0)})
    writer = results(store, live={(1, 0, 7)})
    writer.sent((1, 0, 7))
    conn, other = Link(7), Link(8)
    plan = await writer.plan([(conn, out("1:0:7", 1, "a")), (conn, done("1:0:7", 2))])
    assert store.queries == 0 and len(plan.entries) == 2
    plan = await writer.plan([(other, out("1:0:8", 1, "b")), (Link(9), out("1:0:9", 1, "c")),
                              (Link(9), out("5:0:9", 1, "d")), (conn, out("1:0:8", 1, "e")),
                              (Link(10), done("1:0:10", 1))])
    assert store.queries == 1
    assert [e.key for e in plan.entries] == [(1, 0, 8)]
    reasons = writer.refusals.reasons  # type: ignore[union-attr]
    assert reasons == ["foreign_task", "after_final", "unknown_task", "unknown_task"]


async def test_nothing_after_the_final_result_in_the_same_batch() -> None:
    store = Store()
    writer = results(store, live={(1, 0, 7)})
    writer.sent((1, 0, 7))
    conn = Link(7)
    plan = await writer.plan([(conn, done("1:0:7", 2, "end\n")), (conn, out("1:0:7", 3, "late")),
                              (conn, done("1:0:7", 4))])
    assert [e.seq for e in plan.entries] == [2]
    # all acknowledged: the agent stops sending them
    assert plan.acks[conn] == [["1:0:7", 2], ["1:0:7", 3], ["1:0:7", 4]]


async def test_output_is_cut_at_the_cap_and_the_final_result_still_stored() -> None:
    store = Store()
    writer = results(store, live={(1, 0, 7)}, cap=1024)
    writer.sent((1, 0, 7))
    conn = Link(7)
    plan = await writer.plan([(conn, out("1:0:7", 1, "a" * 1000)),
                              (conn, out("1:0:7", 2, "\u20ac" * 20)),
                              (conn, out("1:0:7", 3, "b" * 500)),
                              (conn, done("1:0:7", 4, "tail\n"))])
    chunks = [c for e in plan.entries for c in e.chunks]
    stored = "".join(c["content"] for c in chunks if c["seq"] != TRUNCATED_SEQ)
    # a character is never split: 8 euro signs fit in the 24 bytes left
    assert stored == "a" * 1000 + "\u20ac" * 8
    notice = chunks[-1]
    assert notice["seq"] == TRUNCATED_SEQ
    dropped = 12 * 3 + 500 + 5
    want = f"\n[jobfleet: output truncated at 1 KiB; {dropped} bytes dropped]\n"
    assert notice["content"] == want
    assert plan.entries[-1].final is not None


async def test_text_from_an_agent_is_made_storable() -> None:
    store = Store()
    writer = results(store, live={(1, 0, 7)})
    writer.sent((1, 0, 7))
    plan = await writer.plan([(Link(7), done("1:0:7", 2, "a\0b\ud800"))])
    assert plan.entries[0].chunks[0]["content"] == "a\u2400b\ufffd"


def test_size_label() -> None:
    assert size_label(16 << 20) == "16 MiB"
    assert size_label(64 << 10) == "64 KiB"
    assert size_label(1000) == "1000 bytes"


def test_error_code_as_bk_job_reports_it() -> None:
    """GSE's code: 115 only while the task runs on the host; 0 before the agent took it."""
    assert gse_error_code(HostStatus.WAITING) == 0
    assert gse_error_code(HostStatus.RUNNING) == 115
    assert gse_error_code(HostStatus.SUCCESS) == 0
    assert gse_error_code(HostStatus.SCRIPT_NOT_ZERO_EXIT_CODE) == 0
    assert gse_error_code(HostStatus.GSE_AGENT_ERROR) == 0
    assert gse_error_code(HostStatus.AGENT_NOT_INSTALLED) == 0
    assert gse_error_code(HostStatus.GSE_TASK_TERMINATE_SUCCESS) == 126
    assert gse_error_code(HostStatus.SCRIPT_TIMEOUT) == -1


@dataclass(eq=False)
class HeldLink(Link):
    holds: list[bool] = field(default_factory=list)

    def hold_reading(self, held: bool) -> None:
        self.holds.append(held)


def _writer_of_two_agents(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Store, ResultWriter, tuple[HeldLink, HeldLink]]:
    """A writer held past 100 waiting messages, over a database that is down, with a
    task in flight from each of two agents (hosts 7 and 8)."""
    monkeypatch.setattr(writer_module, "QUEUE_HOLD", 100, raising=False)
    store = Store()
    store.down = True
    stored = results(store, live={(1, 0, 7), (1, 0, 8)})
    stored.sent((1, 0, 7))
    stored.sent((1, 0, 8))
    return store, ResultWriter(stored, Tracker()), (HeldLink(7), HeldLink(8))


async def test_an_agent_that_floods_a_database_that_is_down_is_held_not_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, writer, (flood, quiet) = _writer_of_two_agents(monkeypatch)
    running = asyncio.create_task(writer.run())
    try:
        writer.put(quiet, out("1:0:8", 1, "one line"))
        for seq in range(1, 200):
            writer.put(flood, out("1:0:7", seq, f"line {seq}"))
        # past the bound the flooding agent is no longer read; the quiet one never was held
        assert flood.holds == [True]
        assert quiet.holds == []
        await asyncio.sleep(0.5)
        assert flood.holds == [True]  # nothing stored yet: still held
        store.down = False
        deadline = asyncio.get_running_loop().time() + 10
        while flood.holds != [True, False]:
            assert asyncio.get_running_loop().time() < deadline, flood.holds
            await asyncio.sleep(0.05)
        assert len(store.chunks) == 200
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_an_agent_held_that_disconnects_is_dropped_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, writer, (gone, stays) = _writer_of_two_agents(monkeypatch)
    events = AgentEvents(None, writer, None)  # type: ignore[arg-type]
    running = asyncio.create_task(writer.run())
    try:
        for seq in range(1, 101):
            writer.put(gone, out("1:0:7", seq, f"line {seq}"))
        writer.put(stays, out("1:0:8", 1, "one line"))
        assert gone.holds == [True] and stays.holds == [True]
        # a connection that closes (the agent's last one, or one a newer one replaced)
        events.connection_closed(gone)
        # the writer keeps no reference to a connection that is gone
        assert gone not in writer._held
        store.down = False
        deadline = asyncio.get_running_loop().time() + 10
        while stays.holds != [True, False]:
            assert asyncio.get_running_loop().time() < deadline, stays.holds
            await asyncio.sleep(0.05)
        # and never asks its dead transport to read again
        assert gone.holds == [True]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


def _writer_of_one_step(hosts: int, linger: float, monkeypatch: pytest.MonkeyPatch) -> tuple[
    Store, ResultWriter, StepRun
]:
    """A writer for one step attempt (step 1, attempt 0) sent to ``hosts`` hosts."""
    monkeypatch.setattr(writer_module, "WRITE_LINGER", linger)
    store = Store()
    tracker = Tracker()
    run = StepRun(1, 1, 0, {}, pending=dict.fromkeys(range(hosts), SENT))
    tracker.track(run)
    stored = Results(store, 1 << 20, Refusals(), tracker.is_live)  # type: ignore[arg-type]
    for host in range(hosts):
        stored.sent((1, 0, host))
    return store, ResultWriter(stored, tracker), run


async def _until_done(run: StepRun) -> None:
    # far longer than a healthy writer needs, far shorter than the linger under test
    await asyncio.wait_for(run.done.wait(), 10)


async def test_the_last_results_of_a_step_share_a_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, writer, run = _writer_of_one_step(20, 30.0, monkeypatch)
    running = asyncio.create_task(writer.run())
    try:
        for host in range(20):
            writer.put(Link(host), done(f"1:0:{host}", 1, "hello\n"))
            await asyncio.sleep(0.002)  # results arrive a little apart, as a job's last do
        # the writer waits for the rest, and no longer than until the last is in
        await _until_done(run)
        assert store.calls == 1 and len(store.finals) == 20
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_results_with_nothing_more_expected_are_written_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, writer, run = _writer_of_one_step(1, 30.0, monkeypatch)
    running = asyncio.create_task(writer.run())
    try:
        link = Link(0)
        writer.put(link, out("1:0:0", 1, "partial"))
        # a lone host's output is not held back either
        deadline = asyncio.get_running_loop().time() + 10
        while not store.chunks:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        writer.put(link, done("1:0:0", 2, "end\n"))
        await _until_done(run)
        assert store.calls == 2 and len(store.finals) == 1
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_an_agent_past_its_share_of_the_queue_is_held_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The queue is far from full, but one agent has its share of it waiting: that agent is
    not read until its messages are stored, and the others are read all along."""
    store, writer, (flood, quiet) = _writer_of_two_agents(monkeypatch)
    monkeypatch.setattr(writer_module, "QUEUE_HOLD", 10_000)
    monkeypatch.setattr(writer_module, "AGENT_HOLD", 50, raising=False)
    running = asyncio.create_task(writer.run())
    try:
        for seq in range(1, 60):
            writer.put(flood, out("1:0:7", seq, f"line {seq}"))
        writer.put(quiet, out("1:0:8", 1, "one line"))
        assert flood.holds == [True] and quiet.holds == []
        store.down = False
        deadline = asyncio.get_running_loop().time() + 10
        while flood.holds != [True, False]:
            assert asyncio.get_running_loop().time() < deadline, flood.holds
            await asyncio.sleep(0.05)
        assert quiet.holds == [] and len(store.chunks) == 60
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_database_outage_is_one_line_for_the_writer_not_one_per_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The writer retries every few tenths of a second while the database is away: it
    says so once, at WARNING (the operator's to fix, not a fault of jobfleet), and once
    when the results are written again, with how many tries failed."""
    store = Store()
    store.down = True
    stored = results(store, live={(1, 0, 7)})
    stored.sent((1, 0, 7))
    writer = ResultWriter(stored, Tracker())
    running = asyncio.create_task(writer.run())
    try:
        with caplog.at_level(logging.INFO, logger="jobfleet.engine.writer"):
            writer.put(Link(7), out("1:0:7", 1, "one line"))
            deadline = asyncio.get_running_loop().time() + 10
            while store.calls < 4:
                assert asyncio.get_running_loop().time() < deadline, store.calls
                await asyncio.sleep(0.05)
            store.down = False
            while not store.chunks:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    waiting = [line for line in lines if "result_write_waiting_for_database" in line[1]]
    assert waiting == [
        (logging.WARNING, "result_write_waiting_for_database size=1 "
                          "error=ConnectionError: database is down")
    ], lines
    back = [line for line in lines if line[1].startswith("result_write_resumed after=")]
    assert len(back) == 1 and back[0][0] == logging.INFO, lines
    assert f"failures={store.calls - 1}" in back[0][1], (lines, store.calls)


class FullDisk(Store):
    """A store on a full disk: every write refused with ENOSPC, reads still answer."""

    # stands in for the store's Database: no file of this server to name
    class db:
        file = None

    async def ingest(self, chunks: list[dict[str, Any]], finals: list[HostResult],
                     file_updates: list[dict[str, Any]] | None = None) -> None:
        self.calls += 1
        if self.down:
            raise OSError(errno.ENOSPC, "No space left on device")
        await super().ingest(chunks, finals, file_updates)


async def test_a_full_disk_is_told_by_the_refusal_itself_not_by_its_text() -> None:
    store = FullDisk()
    store.down = True
    with pytest.raises(DatabaseDown) as refused:
        await results(store).store_entries([entry(0)])
    assert refused.value.disk == "ENOSPC"
    assert str(refused.value).startswith("disk_refused reason=ENOSPC error=OSError: ")
    # a database away is no disk refusal, whatever its driver's text says
    away = Store()
    away.down = True
    with pytest.raises(DatabaseDown) as down:
        await results(away).store_entries([entry(0)])
    assert down.value.disk is None

