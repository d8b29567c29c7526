"""What a host sends never loses or stalls results: binary output, hostile agents, caps, limits.

A hostile agent here enrolls for real and then speaks the protocol itself over a
WebSocket, so it can send what no honest agent would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.integration.harness import Running, eventually, run_server
from websockets.asyncio.client import ClientConnection, connect

from jobfleet.agent.client import CONNECT_PATH, AgentSettings, Credential, enroll
from jobfleet.domain import protocol
from jobfleet.gateway.refusals import AUDIT_ACTION

GOOD_IP = "127.0.0.2"
BAD_IP = "127.0.0.3"
FAST_AUDIT = {"refusal_audit_window": 0.5}


class RawAgent:
    """An enrolled agent whose every message the test writes by hand."""

    def __init__(self, ws: ClientConnection, cred: Credential) -> None:
        self.ws = ws
        self.cred = cred
        self.host_id = cred.bk_host_id
        self.runs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.acks: dict[str, int] = {}
        self.acked: set[tuple[str, int]] = set()
        # what each frame from the server carried
        self.frames: list[list[dict[str, Any]]] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            decoded = orjson.loads(frame)
            self.frames.append(decoded if isinstance(decoded, list) else [decoded])
            for message in decoded if isinstance(decoded, list) else [decoded]:
                if message["t"] == protocol.RUN:
                    self.runs.put_nowait(message)
                elif message["t"] == protocol.ACK:
                    for task, seq in message["acks"]:
                        self.acks[task] = max(self.acks.get(task, -1), seq)
                        self.acked.add((task, seq))

    async def send(self, frame: Any) -> None:
        # json, not orjson: some bad values are integers beyond 64 bits
        await self.ws.send(frame if isinstance(frame, bytes) else json.dumps(frame).encode())

    async def next_run(self) -> str:
        message = await asyncio.wait_for(self.runs.get(), 20)
        return str(message["id"])


@asynccontextmanager
async def raw_agent(running: Running, ip: str, cred: Credential | None = None,
                    **hello: Any) -> AsyncIterator[RawAgent]:
    settings = AgentSettings(server=running.url, state_dir=None, ip=ip,
                             enroll_token=running.boot["enroll_token"])
    channel, _ = await settings.channel()
    cred = cred or await enroll(settings, channel=channel)
    headers = {"Authorization": f"Agent {cred.agent_id}:{cred.agent_secret}"}
    async with connect(channel.ws_url + CONNECT_PATH, additional_headers=headers,
                       max_size=None, ssl=channel.tls) as ws:
        await ws.send(orjson.dumps({"t": "hello", "version": "0", "hostname": "raw", "os": "Linux",
                                    "known": [], **hello}))
        agent = RawAgent(ws, cred)
        try:
            yield agent
        finally:
            agent.reader.cancel()


def done(task: str, seq: int, data: str = "", **over: Any) -> dict[str, Any]:
    return {"t": "done", "id": task, "seq": seq, "status": 9, "exit": 0,
            "start": int(time.time() * 1000), "end": int(time.time() * 1000), "data": data,
            **over}


def out(task: str, seq: int, data: Any) -> dict[str, Any]:
    return {"t": "out", "id": task, "seq": seq, "data": data}


def refused(running: Running) -> dict[str, int]:
    return dict(running.server.refusals.counts)


async def audit_entries(running: Running) -> list[dict[str, Any]]:
    return [e for e in await running.server.services.audit.recent(500)
            if e["action"] == AUDIT_ACTION]


async def host_log(running: Running, job: dict[str, Any], ip: str) -> str:
    answer = await running.wire.v3("get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": job["job_instance_id"],
        "step_instance_id": job["step_instance_id"], "bk_cloud_id": 0, "ip": ip}, method="GET")
    assert answer["result"], answer
    return str(answer["data"]["log_content"])


def host_status(status: dict[str, Any], ip: str) -> int:
    for host in status["step_instance_list"][0]["step_ip_result_list"]:
        if host["ip"] == ip:
            return int(host["status"])
    raise AssertionError(f"{ip} not in the result")


# --- output that is not text ------------------------------------------------------------

BINARY_SCRIPT = r"""
printf 'a\0b\n'
printf 'bad \377\376 bytes\n'
printf 'caf\303\251 split \342\202\254\n'
mkdir -p "$TMPDIR/p" && touch "$TMPDIR/p/one" "$TMPDIR/p/two"
cd "$TMPDIR/p" && find . -print0 | sort -z
cat /bin/true
"""


def expected_text(raw: bytes) -> str:
    # the documented mapping: not UTF-8 -> U+FFFD, NUL -> U+2400
    return raw.decode("utf-8", errors="replace").replace("\0", "\u2400")


async def test_nul_invalid_utf8_and_binary_output_round_trip(running: Running,
                                                               tmp_path: Path) -> None:
    await running.start_agents([GOOD_IP])
    local = tmp_path / "local"
    local.mkdir()
    raw = subprocess.run(["bash", "-c", BINARY_SCRIPT], check=True, capture_output=True,
                         env={"TMPDIR": str(local), "PATH": "/usr/bin:/bin"}).stdout
    script = f"export TMPDIR=$(mktemp -d)\n{BINARY_SCRIPT}"
    job = await running.wire.run_script(script, [GOOD_IP])
    status = await running.wire.wait(job["job_instance_id"], timeout=30)
    assert host_status(status, GOOD_IP) == 9
    want = expected_text(raw)
    assert "a\u2400b\n" in want and "caf\u00e9 split \u20ac" in want
    assert await host_log(running, job, GOOD_IP) == want
    assert (await running.wire.logs(job["job_instance_id"], job["step_instance_id"],
                                    [GOOD_IP]))[GOOD_IP] == want


async def test_a_hostile_agent_cannot_make_the_database_refuse_text(running: Running) -> None:
    """Strings an agent sends are mapped the same way as the agent's own decoding."""
    await running.start_agents([GOOD_IP])
    async with raw_agent(running, BAD_IP) as bad:
        job = await running.wire.run_script("echo fine", [GOOD_IP, BAD_IP])
        task = await bad.next_run()
        await bad.send([out(task, 1, "nul\u0000here\n"),
                        done(task, 2, "tag\u0000\n", tag="t\u0000g")])
        status = await running.wire.wait(job["job_instance_id"], timeout=15)
        assert host_status(status, BAD_IP) == 9 and host_status(status, GOOD_IP) == 9
        assert await host_log(running, job, BAD_IP) == "nul\u2400here\ntag\u2400\n"
        await eventually(lambda: _true(bad.acks.get(task) == 2))


async def test_a_hello_full_of_nul_does_not_stop_presence_for_everyone(running: Running) -> None:
    async with raw_agent(running, BAD_IP, hostname="h\u0000st", os="Li\u0000nux",
                         version="1\u0000", os_name="x\u0000y", labels={"role": "a\u0000b"},
                         known="not a list"):
        # the hostile hello's facts are written with everyone else's: both must land
        await running.start_agents([GOOD_IP])

        async def both_alive() -> dict[str, Any]:
            hosts = {h.ip: h for h in await running.server.inventory.list()}
            return hosts if hosts[GOOD_IP].alive and hosts[BAD_IP].alive else {}
        hosts = await eventually(both_alive, timeout=10)
        assert hosts[BAD_IP].hostname == "hst"  # no control character in a name


# --- hostile messages -----------------------------------------------------------------------

def bad_family(task: str) -> list[tuple[str, Any]]:
    """(reason, message): each stands for a family of bad input."""
    return [
        ("bad_status", done(task, 50, status="abc")),
        ("bad_status", done(task, 51, status=2**40)),
        ("bad_status", done(task, 52, status=7)),
        ("bad_status", done(task, 53, status=None)),
        ("bad_seq", done(task, -1)),
        ("bad_seq", done(task, 2**40)),
        ("bad_seq", out(task, "3", "x")),
        ("bad_exit", done(task, 54, exit="0")),
        ("bad_exit", done(task, 55, exit=2**31)),
        ("bad_start", done(task, 56, start="garbage")),
        ("bad_end", done(task, 57, end=-5)),
        ("bad_end", done(task, 58, end=1.5)),
        ("bad_data", done(task, 59, data=5)),
        ("bad_data", out(task, 60, ["x"])),
        ("bad_vars", done(task, 61, vars={"a": "b"})),
        ("bad_files", done(task, 62, files="junk")),
        ("bad_files", done(task, 63, files=[{"n": "x"}])),
        ("bad_files", done(task, 64, files=[{"n": 1, "progress": 1000}])),
        ("bad_files", done(task, 65, files=[{"n": 1, "size": 2**70}])),
        ("bad_files", {"t": "file_log", "id": task, "files": [None]}),
        ("bad_tag", done(task, 66, tag="x" * 300)),
        ("bad_id", done("not:a:task", 67)),
        ("bad_id", done("1:99999999999:2", 68)),
        ("bad_id", {"t": "out", "seq": 1, "data": "x"}),
        ("bad_type", {"t": "nope", "id": task}),
        ("bad_type", {"no": "type"}),
        ("bad_type", 5),
        ("bad_type", "text"),
        ("bad_id", {"t": "reply", "id": 5}),
    ]


async def test_bad_messages_are_refused_alone_and_good_ones_land_at_once(
        tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path, database_url, engine=FAST_AUDIT) as running:
        await running.start_agents([GOOD_IP])
        async with raw_agent(running, BAD_IP) as bad:
            job = await running.wire.run_script("echo fine", [GOOD_IP, BAD_IP])
            task = await bad.next_run()
            family = bad_family(task)
            half = len(family) // 2
            started = time.monotonic()
            # bad and good in one frame, bad ones before and after the good ones
            await bad.send([m for _, m in family[:half]] + [out(task, 1, "first\n")]
                           + [m for _, m in family[half:]])
            # and across frames: a frame that is not JSON, then the rest
            await bad.send(b"{not json")
            await bad.send(b"\xff\xfe")
            await bad.send([done(task, 2, "last\n")])
            status = await running.wire.wait(job["job_instance_id"], timeout=15)
            assert time.monotonic() - started < 10
            assert host_status(status, BAD_IP) == 9 and host_status(status, GOOD_IP) == 9
            assert await host_log(running, job, BAD_IP) == "first\nlast\n"
            assert await host_log(running, job, GOOD_IP) == "fine\n"
            counts = refused(running)
            for reason in {r for r, _ in family}:
                want = sum(1 for r, _ in family if r == reason)
                assert counts.get(reason, 0) == want, (reason, counts)
            assert counts.get("bad_json") == 2
            # refused messages that name a task are acknowledged: never sent again
            await eventually(lambda: _true((task, 2) in bad.acked))
            assert {(task, 1), (task, 50), (task, 52), (task, 66)} <= bad.acked

            async def audited() -> list[dict[str, Any]]:
                entries = await audit_entries(running)
                return entries if {e["detail"]["reason"] for e in entries} >= {
                    "bad_status", "bad_seq", "bad_json", "bad_type"} else []
            entries = await eventually(audited, timeout=10)
            statuses = [e for e in entries if e["detail"]["reason"] == "bad_status"]
            # one entry per agent, reason and window, with the count
            assert len(statuses) == 1 and statuses[0]["detail"]["count"] == 4
            assert statuses[0]["source_ip"] == "127.0.0.1"
            assert statuses[0]["detail"]["bk_host_id"] == bad.host_id
            assert statuses[0]["resource_type"] == "agent"


async def _true(value: bool) -> bool:
    return value


async def test_a_flood_of_bad_messages_costs_one_audit_entry_per_window(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with (run_server(tmp_path, database_url, engine=FAST_AUDIT) as running,
                raw_agent(running, BAD_IP) as bad):
        for _ in range(20):
            await bad.send([{"t": "done", "status": "abc"}] * 500)
        await eventually(lambda: _true(refused(running).get("bad_id") == 10_000))
        await asyncio.sleep(1.5)
        entries = await audit_entries(running)
        assert 1 <= len(entries) <= 3
        assert sum(e["detail"]["count"] for e in entries) == 10_000
        lines = [r for r in caplog.records if r.getMessage().startswith("agent_message_refused")]
        assert 1 <= len(lines) <= 3


async def test_output_only_for_tasks_sent_to_that_host_and_not_after_final(
        running: Running) -> None:
    await running.start_agents([GOOD_IP])
    async with raw_agent(running, BAD_IP) as bad:
        job = await running.wire.run_script("sleep 2; echo fine", [GOOD_IP, BAD_IP])
        task = await bad.next_run()
        step, count, _host = protocol.parse_task_id(task)
        good_host = (await running.server.inventory.list())
        good_id = next(h.bk_host_id for h in good_host if h.ip == GOOD_IP)
        other = protocol.task_id(step, count, good_id)
        never = protocol.task_id(step + 1000, 0, bad.host_id)
        older = protocol.task_id(step, count + 1, bad.host_id)
        await bad.send([out(other, 1, "into the other host\n"),
                        done(other, 2, "", status=11),
                        out(never, 1, "never sent\n"),
                        out(older, 1, "no such attempt\n"),
                        out(task, 1, "mine\n"),
                        done(task, 2, "")])
        await eventually(lambda: _true(bad.acks.get(task) == 2))
        # after the final result: acknowledged, not stored, status unchanged
        await bad.send([out(task, 3, "late\n"), done(task, 4, "again\n", status=11, exit=1)])
        await eventually(lambda: _true(bad.acks.get(task) == 4))
        status = await running.wire.wait(job["job_instance_id"], timeout=20)
        assert host_status(status, GOOD_IP) == 9 and host_status(status, BAD_IP) == 9
        assert await host_log(running, job, GOOD_IP) == "fine\n"
        assert await host_log(running, job, BAD_IP) == "mine\n"
        counts = refused(running)
        assert counts["foreign_task"] == 2 and counts["unknown_task"] == 2
        assert counts["after_final"] == 2


async def test_an_acknowledgement_rides_with_the_hosts_next_task(
        tmp_path: Path, database_url: str) -> None:
    """A stored result is acknowledged in the frame of the host's next task, not in one of
    its own; with no next task, on its own within half a heartbeat (4 s here: the next task
    must come within it on a loaded machine)."""
    async with run_server(tmp_path, database_url, server={"heartbeat": 8.0}) as running, \
            raw_agent(running, BAD_IP) as agent:
        first = await running.wire.run_script("true", [BAD_IP])
        task = await agent.next_run()
        await agent.send(done(task, 1, "one\n"))
        await running.wire.wait(first["job_instance_id"], timeout=20)
        second = await running.wire.run_script("true", [BAD_IP])
        later = await agent.next_run()
        carried = next(f for f in agent.frames if any(m.get("id") == later for m in f))
        assert [m["t"] for m in carried] == ["ack", "run"]
        assert carried[0]["acks"] == [[task, 1]]
        assert not any(m["t"] == "ack" for f in agent.frames if f is not carried for m in f)
        await agent.send(done(later, 1, "two\n"))
        await running.wire.wait(second["job_instance_id"], timeout=20)
        await eventually(lambda: _true(agent.acks.get(later) == 1), timeout=10)
        assert agent.frames[-1] == [{"t": "ack", "acks": [[later, 1]]}]


async def test_a_task_not_sent_yet_cannot_be_finished_in_advance(running: Running) -> None:
    """A rolling step's later batch waits: its host may not report before it is asked."""
    await running.start_agents([GOOD_IP])
    async with raw_agent(running, BAD_IP) as bad:
        job = await running.wire.run_script("sleep 2; echo fine", [GOOD_IP, BAD_IP],
                                            rolling_config={"expression": "1"})
        ahead = protocol.task_id(job["step_instance_id"], 0, bad.host_id)
        await bad.send([out(ahead, 1, "before my turn\n"), done(ahead, 2, "", status=9)])
        await eventually(lambda: _true(refused(running).get("unknown_task") == 2))
        task = await bad.next_run()
        assert task == ahead
        await bad.send([out(task, 3, "my turn\n"), done(task, 4, "", status=11, exit=1)])
        status = await running.wire.wait(job["job_instance_id"], timeout=20)
        assert host_status(status, GOOD_IP) == 9
        assert host_status(status, BAD_IP) == 11
        assert await host_log(running, job, BAD_IP) == "my turn\n"


async def test_output_past_the_cap_ends_with_one_truncation_line(
        tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path, database_url,
                          engine={"max_output_bytes": 64 * 1024}) as running:
        await running.start_agents([GOOD_IP])
        job = await running.wire.run_script(
            "head -c 200000 /dev/zero | tr '\\0' x; echo; echo tail-line", [GOOD_IP])
        status = await running.wire.wait(job["job_instance_id"], timeout=30)
        assert host_status(status, GOOD_IP) == 9
        text = await host_log(running, job, GOOD_IP)
        kept, _, notice = text.rpartition("\n[jobfleet:")
        assert kept == "x" * 65536
        dropped = 200000 + len("\ntail-line\n") - 65536
        assert notice == f" output truncated at 64 KiB; {dropped} bytes dropped]\n"

        # a hostile agent is held to the same cap, chunk after chunk
        async with raw_agent(running, BAD_IP) as bad:
            job = await running.wire.run_script("true", [BAD_IP])
            task = await bad.next_run()
            for seq in range(1, 6):
                await bad.send(out(task, seq, "y" * 30000))
            await bad.send(done(task, 6, "z\n"))
            status = await running.wire.wait(job["job_instance_id"], timeout=15)
            assert host_status(status, BAD_IP) == 9
            text = await host_log(running, job, BAD_IP)
            assert text == "y" * 65536 + "\n[jobfleet: output truncated at 64 KiB; " \
                f"{150000 + 2 - 65536} bytes dropped]\n"


async def test_oversize_frame_and_chunk_are_refused_not_stored(running: Running) -> None:
    # an agent of this release: it announces that it bounds its frames and messages
    caps = list(protocol.AGENT_CAPS)
    async with raw_agent(running, BAD_IP, caps=caps) as bad:
        job = await running.wire.run_script("true", [BAD_IP])
        task = await bad.next_run()
        await bad.send(out(task, 1, "c" * (protocol.MAX_CHUNK_CHARS + 1)))
        await bad.send(out(task, 2, "small\n"))
        await eventually(lambda: _true(bad.acks.get(task) == 2))
        assert refused(running)["bad_data"] == 1
        # a frame over the limit closes the connection
        await bad.send(orjson.dumps([out(task, 3, "f" * 1000)] * (protocol.MAX_FRAME_BYTES // 900)))
        await asyncio.wait({bad.reader}, timeout=10)
        assert bad.reader.done()
        cred = bad.cred
    await eventually(lambda: _true(refused(running).get("frame_too_large") == 1))
    # the host's agent comes back and finishes; nothing of the big frame was stored
    async with raw_agent(running, BAD_IP, cred, caps=caps) as again:
        await again.send(done(task, 4, "end\n"))
        status = await running.wire.wait(job["job_instance_id"], timeout=15)
    assert host_status(status, BAD_IP) == 9
    assert await host_log(running, job, BAD_IP) == "small\nend\n"


async def _slowest_echo(running: Running) -> float:
    """The slowest of three one-line jobs on the honest host, submit to finished."""
    slowest = 0.0
    for _ in range(3):
        started = time.monotonic()
        job = await running.wire.run_script("echo hi", [GOOD_IP])
        status = await running.wire.wait(job["job_instance_id"], timeout=90)
        slowest = max(slowest, time.monotonic() - started)
        assert host_status(status, GOOD_IP) == 9
    return slowest


@pytest.mark.one_backend
async def test_one_agents_flood_of_output_does_not_hold_back_other_hosts(
        running: Running) -> None:
    """A hostile agent sends output for its own task as fast as it can: past its share of
    the results waiting to be stored it is not read, so another host's jobs end while the
    flood goes on, not behind the whole queue (50 s here, against 0.3 s with no flood)."""
    await running.start_agents([GOOD_IP])

    quiet = await _slowest_echo(running)
    async with raw_agent(running, BAD_IP) as bad:
        await running.wire.run_script("true", [BAD_IP])
        task = await bad.next_run()

        async def flood() -> None:
            seq = 1
            while True:
                await bad.ws.send(orjson.dumps(out(task, seq, "x")))
                seq += 1

        flooding = asyncio.create_task(flood())
        try:
            await asyncio.sleep(2)
            flooded = await _slowest_echo(running)
        finally:
            flooding.cancel()
    assert flooded < 10 + 5 * quiet, (quiet, flooded)


@pytest.mark.one_backend
async def test_one_agents_flood_of_messages_to_refuse_does_not_stall_the_server(
        running: Running) -> None:
    """Frames of tens of thousands of messages to refuse, each ~20 µs of the server's loop:
    past its share of the loop the agent is not read for a while, so another host's jobs
    end while the flood goes on (they waited for its end: 20 to 30 s here)."""
    await running.start_agents([GOOD_IP])

    quiet = await _slowest_echo(running)
    async with raw_agent(running, BAD_IP) as bad:
        task = protocol.task_id(1, 0, bad.host_id)
        frame = orjson.dumps([out(task, seq, 5) for seq in range(1, 40_001)])

        async def flood() -> None:
            while True:
                await bad.ws.send(frame)

        flooding = asyncio.create_task(flood())
        try:
            # the flood under way, not a bound: two frames' worth of refusals take the
            # server a few seconds, and a loaded machine several times that
            await eventually(lambda: _true(refused(running).get("bad_data", 0) >= 80_000),
                             timeout=90)
            flooded = await _slowest_echo(running)
            assert not flooding.done()
        finally:
            flooding.cancel()
    assert flooded < 5 + 5 * quiet, (quiet, flooded)
