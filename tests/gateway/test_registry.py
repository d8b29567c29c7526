"""gateway/registry.py: one live connection per host, and sends that never block."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from jobfleet.gateway.registry import AgentConnection, HeldAcks, Registry, WriteTurn


class Wire:
    """The frames a connection wrote, as a socket would carry them."""

    def __init__(self) -> None:
        self.frames: list[object] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, frame: bytes) -> None:
        await self.gate.wait()
        self.frames.append(orjson.loads(frame))


async def test_a_second_connection_of_a_host_replaces_the_first() -> None:
    registry = Registry()
    first = AgentConnection("a1", 7, Wire().send)
    second = AgentConnection("a2", 7, Wire().send)
    assert registry.add(first) is None
    assert registry.add(second) is first
    assert registry.for_host(7) is second
    # the replaced connection going away does not take the new one with it
    assert registry.remove(first) is False
    assert registry.for_agent("a2") is second and registry.for_agent("a1") is None
    assert registry.remove(second) is True
    assert len(registry) == 0 and registry.host_ids() == []
    await first.close()
    await second.close()


async def test_messages_that_pile_up_go_out_in_one_frame() -> None:
    wire = Wire()
    wire.gate.clear()
    conn = AgentConnection("a1", 1, wire.send)
    conn.send({"t": "run", "n": 0})
    await asyncio.sleep(0)  # the writer takes the first and waits on the socket
    for n in (1, 2, 3):
        conn.send({"t": "run", "n": n})
    wire.gate.set()
    # closing sends what is queued, and does not wait out the writer's timeout
    started = time.monotonic()
    await conn.close()
    assert time.monotonic() - started < 1
    assert wire.frames == [
        {"t": "run", "n": 0},
        [{"t": "run", "n": 1}, {"t": "run", "n": 2}, {"t": "run", "n": 3}],
    ]


async def test_a_closed_connection_sends_nothing_and_a_failed_socket_closes_it() -> None:
    wire = Wire()
    conn = AgentConnection("a1", 1, wire.send)
    await conn.close()
    conn.send({"t": "kill"})
    await asyncio.sleep(0)
    assert wire.frames == []

    async def broken(frame: bytes) -> None:
        raise ConnectionResetError("gone")

    failing = AgentConnection("a2", 2, broken)
    failing.send({"t": "run"})
    for _ in range(10):
        await asyncio.sleep(0)
    assert failing.closed
    await failing.close()


async def test_a_message_that_does_not_encode_leaves_the_connection_open() -> None:
    """An integer past 64 bits (a file step's speed limit in bytes) cannot be sent: that
    message is dropped, and the agent still gets every other one."""
    wire = Wire()
    conn = AgentConnection("a1", 1, wire.send)
    conn.send({"t": "files", "speed_limit": 2**82})
    await asyncio.sleep(0)
    wire.gate.clear()
    conn.send({"t": "run", "n": 1})
    await asyncio.sleep(0)
    conn.send({"t": "files", "speed_limit": 2**82})
    conn.send({"t": "run", "n": 2})
    wire.gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert not conn.closed
    conn.send({"t": "run", "n": 3})
    await conn.close()
    assert wire.frames == [{"t": "run", "n": 1}, {"t": "run", "n": 2}, {"t": "run", "n": 3}]


async def test_hang_up_closes_the_socket_too() -> None:
    hung: list[tuple[int, str]] = []

    async def hangup(code: int, reason: str) -> None:
        hung.append((code, reason))

    conn = AgentConnection("a1", 1, Wire().send, hangup=hangup)
    await conn.hang_up(4403, "credential revoked")
    assert conn.closed and hung == [(4403, "credential revoked")]


class Writer(Wire):
    """A socket that writes at once while its peer reads (``reading``)."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True
        self.now: list[object] = []

    def send_now(self, frame: bytes) -> bool:
        if not self.reading:
            return False
        self.now.append(orjson.loads(frame))
        self.frames.append(self.now[-1])
        return True


async def test_with_send_now_a_loop_turn_is_one_frame_written_at_once_in_order() -> None:
    wire = Writer()
    conn = AgentConnection("a1", 1, wire.send, send_now=wire.send_now)
    conn.send({"t": "run", "n": 0})
    conn.send({"t": "run", "n": 1})
    assert wire.frames == []
    await asyncio.sleep(0)
    assert wire.now == [[{"t": "run", "n": 0}, {"t": "run", "n": 1}]]

    # the agent stops reading: the next frame waits on the socket, later ones behind it
    wire.reading = False
    wire.gate.clear()
    conn.send({"t": "run", "n": 2})
    await asyncio.sleep(0)
    conn.send({"t": "run", "n": 3})
    await asyncio.sleep(0)
    wire.gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert wire.frames[1:] == [{"t": "run", "n": 2}, {"t": "run", "n": 3}]

    # closing writes what this turn sent before it returns
    wire.reading = True
    conn.send({"t": "kill", "n": 4})
    await conn.close()
    assert wire.frames[-1] == {"t": "kill", "n": 4}
    conn.send({"t": "kill", "n": 5})
    await asyncio.sleep(0)
    assert wire.frames[-1] == {"t": "kill", "n": 4}


async def test_connections_sharing_a_turn_are_written_by_one_callback() -> None:
    loop = asyncio.get_running_loop()
    scheduled = 0
    call_soon = loop.call_soon

    def counting(*args: Any, **kwargs: Any) -> asyncio.Handle:
        nonlocal scheduled
        scheduled += 1
        return call_soon(*args, **kwargs)

    turn = WriteTurn()
    wires = [Writer() for _ in range(3)]

    def broken(frame: bytes) -> bool:
        raise RuntimeError("the socket broke")

    conns = [AgentConnection(f"a{n}", n, w.send, send_now=w.send_now, turn=turn)
             for n, w in enumerate(wires)]
    failing = AgentConnection("bad", 9, Wire().send, send_now=broken, turn=turn)
    loop.call_soon = counting  # type: ignore[method-assign]
    try:
        failing.send({"t": "run", "n": -1})
        for n, conn in enumerate(conns):
            conn.send({"t": "run", "n": n})
            conn.send({"t": "ack", "n": n})
    finally:
        loop.call_soon = call_soon  # type: ignore[method-assign]
    assert scheduled == 1
    await asyncio.sleep(0)
    assert [w.now for w in wires] == [
        [[{"t": "run", "n": n}, {"t": "ack", "n": n}]] for n in range(3)
    ]


async def test_holding_an_agent_stops_and_starts_its_socket_reading() -> None:
    holds: list[bool] = []
    conn = AgentConnection("a1", 1, Wire().send, hold=holds.append)
    conn.hold_reading(True)
    conn.hold_reading(False)
    assert holds == [True, False]
    # a socket that cannot stop reading is not asked to
    AgentConnection("a2", 2, Wire().send).hold_reading(True)


async def test_an_ack_rides_with_the_next_message_to_its_agent() -> None:
    wire = Writer()
    acks = HeldAcks(30.0)
    conn = AgentConnection("a1", 1, wire.send, send_now=wire.send_now, acks=acks)
    conn.send({"t": "ack", "acks": [["1:0:1", 1]]})
    conn.send({"t": "ack", "acks": [["2:0:1", 2]]})
    for _ in range(3):
        await asyncio.sleep(0)
    assert wire.now == []  # no frame of its own
    conn.send({"t": "run", "id": "3:0:1"})
    await asyncio.sleep(0)
    # one frame: the held acknowledgements (as one message), then the task
    assert wire.now == [[{"t": "ack", "acks": [["1:0:1", 1], ["2:0:1", 2]]},
                         {"t": "run", "id": "3:0:1"}]]
    # held again, and closing the connection still sends them
    conn.send({"t": "ack", "acks": [["3:0:1", 1]]})
    await conn.close()
    assert wire.now[-1] == {"t": "ack", "acks": [["3:0:1", 1]]}
    acks.stop()


async def test_an_ack_with_nothing_to_ride_with_goes_out_after_the_delay() -> None:
    wires = [Writer(), Writer()]
    acks = HeldAcks(0.5)
    first, second = (AgentConnection(f"a{n}", n, w.send, send_now=w.send_now, acks=acks)
                     for n, w in enumerate(wires))
    first.send({"t": "ack", "acks": [["1:0:0", 1]]})
    # sent with a task meanwhile, then held again: the second wait is its own
    first.send({"t": "run", "id": "2:0:0"})
    await asyncio.sleep(0.3)
    first.send({"t": "ack", "acks": [["2:0:0", 1]]})
    second.send({"t": "ack", "acks": [["1:0:1", 1]]})
    await asyncio.sleep(0.3)
    # the first wait is over; the connection's later acknowledgement still waits
    assert wires[0].now == [[{"t": "ack", "acks": [["1:0:0", 1]]}, {"t": "run", "id": "2:0:0"}]]
    assert wires[1].now == []
    await asyncio.sleep(0.5)
    assert wires[0].now[1:] == [{"t": "ack", "acks": [["2:0:0", 1]]}]
    assert wires[1].now == [{"t": "ack", "acks": [["1:0:1", 1]]}]
    # a connection without held acknowledgements sends them at once, as before
    plain = Writer()
    conn = AgentConnection("a3", 3, plain.send, send_now=plain.send_now)
    conn.send({"t": "ack", "acks": [["1:0:3", 1]]})
    await asyncio.sleep(0)
    assert plain.now == [{"t": "ack", "acks": [["1:0:3", 1]]}]
