"""The agent never sends a message or a frame the server would refuse for its size."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from jobfleet.agent.client import Agent, AgentSettings
from jobfleet.agent.connection import _Sender, pack_frames
from jobfleet.agent.output import split_text
from jobfleet.agent.spool import Spool
from jobfleet.agent.task import OutputCallback, TaskResult, TaskSpec
from jobfleet.domain import protocol
from jobfleet.gateway.validation import read_frame


def test_split_text() -> None:
    assert split_text("") == [""]
    assert split_text("abc", 2) == ["ab", "c"]
    big = "x" * (protocol.AGENT_CHUNK_CHARS * 2 + 5)
    pieces = split_text(big)
    assert "".join(pieces) == big and max(map(len, pieces)) == protocol.AGENT_CHUNK_CHARS


def test_frames_stay_under_the_limit_and_parse_back() -> None:
    messages = [{"t": "out", "id": "1:0:1", "seq": i, "data": "\x01" * 50_000} for i in range(60)]
    frames = pack_frames([orjson.dumps(m) for m in messages])
    assert len(frames) > 1
    assert all(len(f) <= protocol.AGENT_FRAME_BYTES for f in frames)
    back = [m for f in frames for m in read_frame(f)[0]]
    assert back == messages


class _Loud:
    """An executor whose task prints a lot at once, then ends with a long message."""

    def __init__(self, text: str, message: str = "") -> None:
        self.text = text
        self.message = message

    async def run(self, spec: TaskSpec, on_output: OutputCallback,
                  on_started: Any = None) -> TaskResult:
        await on_output(self.text)
        await asyncio.sleep(0.2)
        await on_output(self.text)
        return TaskResult(9, 0, 1, 2, message=self.message)

    def kill(self, task_id: str, reason: str = "terminate") -> bool:
        return False


class _Queue:
    """Stands in for the agent's sender: keeps what it is given."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def put(self, message: dict[str, Any]) -> None:
        self.queue.put_nowait(message)


async def test_big_output_goes_in_messages_the_server_takes() -> None:
    text = "\u20ac" * (protocol.AGENT_CHUNK_CHARS * 3 + 17)
    agent = Agent(AgentSettings(server="http://127.0.0.1:9", state_dir=None, ip="127.0.0.1"),
                  executor=_Loud(text), spool=Spool(None))
    sent = _Queue()
    agent._sender = sent  # type: ignore[assignment]
    agent._start({"t": "run", "id": "1:0:1", "lang": 1, "script": "", "account": "root"})
    await asyncio.wait_for(asyncio.gather(*agent._tasks.values()), 10)
    messages = []
    while not sent.queue.empty():
        messages.append(sent.queue.get_nowait())
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    assert messages[-1]["t"] == "done"
    assert "".join(m["data"] for m in messages) == text * 2
    good, refused = read_frame(orjson.dumps(messages))
    assert refused == [] and len(good) == len(messages)
    for message in messages:
        assert len(orjson.dumps(message)) <= protocol.AGENT_FRAME_BYTES


async def test_file_statuses_of_a_large_download_are_spread_over_messages() -> None:
    agent = Agent(AgentSettings(server="http://127.0.0.1:9", state_dir=None, ip="127.0.0.1"),
                  executor=_Loud(""), spool=Spool(None))
    sent = _Queue()
    agent._sender = sent  # type: ignore[assignment]
    items = [{"n": n, "status": 4, "size": 10, "speed": 1.5, "progress": 100,
              "log": "x" * 3000} for n in range(protocol.AGENT_FILE_ITEMS * 2 + 3)]

    async def work(on_output: OutputCallback) -> tuple[TaskResult, list[dict[str, Any]]]:
        await on_output("copied\n")
        return TaskResult(9, 0, 1, 2), items

    agent.spool.accept("1:0:1")
    await agent._execute("1:0:1", work)
    messages = []
    while not sent.queue.empty():
        messages.append(sent.queue.get_nowait())
    assert [m["t"] for m in messages] == ["out", "out", "done"]
    assert messages[-1]["data"] == "copied\n"
    assert [f for m in messages for f in m.get("files", [])] == items
    good, refused = read_frame(orjson.dumps(messages))
    assert refused == [] and len(good) == 3
    assert all(len(orjson.dumps(m)) <= protocol.AGENT_FRAME_BYTES for m in messages)


def test_a_frame_the_agent_cannot_read_is_refused_alone() -> None:
    agent = Agent(AgentSettings(server="http://127.0.0.1:9", state_dir=None, ip="127.0.0.1"),
                  spool=Spool(None))
    welcomed: list[object] = []
    agent.on_welcome = welcomed.append
    for frame in (b"not json", b"[" * 100_000, b'"a string"', b"17", b"null", b"{}"):
        agent._frame(frame)
    # bad messages beside a good one: each is refused on its own, the good one is read
    agent._frame(orjson.dumps([
        1, None, [], {"t": 5}, {"no": "type"},
        {"t": "ack", "acks": [["1:0:1", "not a number"]]},
        {"t": "ack", "acks": 7},
        {"t": "kill"},
        {"t": "welcome"},
    ]))
    assert welcomed == [{"t": "welcome"}]


async def test_a_second_kill_of_a_download_does_not_cut_the_first_ones_cleanup() -> None:
    """A terminate, then the step's timeout (the agent's own timer or the server's): the
    download stopping (a swarm waiting for its peer threads before the file is closed)
    is not cancelled again half-way."""
    agent = Agent(AgentSettings(server="http://127.0.0.1:9", state_dir=None, ip="127.0.0.1"),
                  executor=_Loud(""), spool=Spool(None))
    cleaned = asyncio.Event()

    async def download() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.2)  # the peer threads ending, the file removed
            cleaned.set()

    running = asyncio.ensure_future(download())
    agent._downloads["1:0:1"] = running  # type: ignore[assignment]
    await asyncio.sleep(0.01)
    agent._handle({"t": "kill", "id": "1:0:1", "reason": "terminate"})
    await asyncio.sleep(0.05)
    agent._handle({"t": "kill", "id": "1:0:1", "reason": "timeout"})
    with pytest.raises(asyncio.CancelledError):
        await running
    assert cleaned.is_set()
    assert agent._killed["1:0:1"] == "terminate"


class _Socket:
    """Stands in for the agent's WebSocket: what is written, and whether the server
    reads (``writable``); ``send`` waits until it does again."""

    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.writable = True
        self.drained = asyncio.Event()

    def write(self, frame: bytes) -> None:
        assert self.writable, "written while the server did not read"
        self.frames.append(orjson.loads(frame))

    async def send(self, frame: bytes) -> None:
        self.frames.append(orjson.loads(frame))
        await self.drained.wait()


async def test_the_sender_packs_a_loop_turn_into_one_frame_and_waits_for_a_slow_server() -> None:
    ws = _Socket()
    sender = _Sender(ws)  # type: ignore[arg-type]
    first, second, third = ({"t": "stats", "n": n} for n in range(3))
    sender.put(first)  # type: ignore[arg-type]
    sender.put(second)  # type: ignore[arg-type]
    assert ws.frames == []  # written once the loop turns
    await asyncio.sleep(0)
    assert ws.frames == [[first, second]]

    ws.writable = False
    sender.put(third)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    sender.put(first)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    # the first waits for the server to read; what comes meanwhile waits behind it
    assert ws.frames == [[first, second], third]
    ws.writable = True
    ws.drained.set()
    await asyncio.sleep(0.01)
    assert ws.frames == [[first, second], third, first]
    sender.stop()
    sender.put(second)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert len(ws.frames) == 3


async def test_a_write_the_transport_refuses_stops_the_sender_and_ends_the_connection() -> None:
    """The messages are still in the spool: the agent reconnects and sends them again."""
    from websockets.asyncio.server import ServerConnection, serve

    from jobfleet.agent.wsclient import connect

    async def hold(ws: ServerConnection) -> None:
        async for _message in ws:
            pass

    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        async with serve(hold, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            async with await connect(f"ws://127.0.0.1:{port}/c", close_timeout=0.5) as ws:
                sender = _Sender(ws)

                def refuse(data: bytes) -> None:
                    raise RuntimeError("unable to perform operation: the handler is closed")

                ws.transport.write = refuse  # type: ignore[method-assign,union-attr]
                sender.put({"t": "stats", "n": 1})  # type: ignore[arg-type]
                await asyncio.sleep(0.05)
                sender.put({"t": "stats", "n": 2})  # type: ignore[arg-type]
                await asyncio.wait_for(ws.lost, 10)
                assert sender._stopped and sender._pending == []
        assert errors == []
    finally:
        loop.set_exception_handler(None)


async def test_a_run_of_a_kind_this_agent_does_not_know_ends_failed_at_once() -> None:
    """A newer server's kind of task: neither run as a script (its fields may well say
    one) nor held until the step's timeout, but ended failed with the reason."""
    spool = Spool(None)
    executor = _Loud("ran\n")
    agent = Agent(AgentSettings(server="http://127.0.0.1:9", state_dir=None, ip="127.0.0.1"),
                  executor=executor, spool=spool)
    sent: list[dict[str, Any]] = []
    agent._send = sent.append  # type: ignore[method-assign,assignment]
    agent._frame(orjson.dumps({**protocol.run("1:0:1", lang=1, script="echo ran", args=[],
                                              account="root", timeout=60, env={},
                                              max_output=1024), "kind": "teleport"}))
    for _ in range(100):
        if sent:
            break
        await asyncio.sleep(0.02)
    [done] = sent
    assert done["t"] == "done" and done["id"] == "1:0:1" and done["status"] == 399, done
    assert "does not know tasks of kind 'teleport'" in done["data"], done
    assert "ran" not in done["data"]
    # the result is spooled as any other, until the server stores it
    assert spool.known() == ["1:0:1"]
