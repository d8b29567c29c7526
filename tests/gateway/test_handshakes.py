"""The agent port's handshake gate: TLS on a bounded number of connections at once, cut
at its timeout, fair between source addresses. Real sockets on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

from jobfleet.gateway.handshakes import HandshakeGate, HandshakeLimits
from jobfleet.gateway.tls import ensure_agent_tls

HELLO = b"past the handshake\n"


class Greeter(asyncio.Protocol):
    """What the listener's HTTP protocol stands for here: it speaks once TLS is up."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is not an asyncio.WriteTransport, but writes as one
        cast(asyncio.WriteTransport, transport).write(HELLO)


class Listener:
    def __init__(self, gate: HandshakeGate, port: int, client_tls: ssl.SSLContext) -> None:
        self.gate, self.port, self.client_tls = gate, port, client_tls
        self.writers: list[asyncio.StreamWriter] = []

    async def stalled(self, source: str = "127.0.0.1") -> asyncio.StreamReader:
        """A connection that never begins its handshake."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(source, 0)
        )
        self.writers.append(writer)
        return reader

    async def greeted(self, source: str) -> bytes:
        """A TLS client from ``source``: what it reads once its handshake is done."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.client_tls, local_addr=(source, 0)
        )
        self.writers.append(writer)
        return await reader.readline()


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    files = ensure_agent_tls(tmp_path, ["127.0.0.1"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.cert_file, files.key_file)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_verify_locations(cadata=files.ca_pem)
    return server, client


Listen = Callable[[HandshakeLimits], Awaitable[Listener]]


@contextlib.asynccontextmanager
async def listening(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> AsyncIterator[Listen]:
    listeners: list[Listener] = []

    async def start(limits: HandshakeLimits) -> Listener:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        gate = HandshakeGate(sock, tls[0], Greeter, limits)
        gate.start(128)
        listener = Listener(gate, sock.getsockname()[1], tls[1])
        listeners.append(listener)
        return listener

    try:
        yield start
    finally:
        for listener in listeners:
            for writer in listener.writers:
                writer.close()
            listener.gate.close()
            await listener.gate.wait_closed()


@pytest.fixture
async def listen(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> AsyncIterator[Listen]:
    async with listening(tls) as start:
        yield start


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Waits for ``check`` (a guard against a hang, not a time asserted)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_no_more_handshakes_than_slots_are_under_way(
    listen: Listen,
) -> None:
    listener = await listen(HandshakeLimits(slots=3, per_source=3, timeout=30))
    readers = [await listener.stalled() for _ in range(6)]
    gate = listener.gate
    await until(lambda: gate.in_flight == 3 and gate.queued == 3)
    # a client that leaves frees its slot for the next one waiting
    listener.writers[0].close()
    await until(lambda: gate.failed == 1 and gate.queued == 2)
    assert gate.in_flight == 3
    assert len(readers) == 6


async def test_handshakes_past_a_turns_share_start_in_the_next_turns(listen: Listen) -> None:
    listener = await listen(HandshakeLimits(slots=5, per_source=5, per_turn=1, timeout=30))
    for _ in range(5):
        await listener.stalled()
    await until(lambda: listener.gate.in_flight == 5 and listener.gate.queued == 0)


async def test_a_stalled_handshake_is_cut_at_its_timeout_and_the_next_goes_on(
    listen: Listen,
) -> None:
    listener = await listen(HandshakeLimits(slots=1, per_source=1, timeout=0.5))
    stalled = await listener.stalled()
    await until(lambda: listener.gate.in_flight == 1)
    # the one slot is the stalled client's: this one waits for its timeout, then goes on
    greeting = await asyncio.wait_for(listener.greeted("127.0.0.2"), 10)
    assert greeting == HELLO
    assert await asyncio.wait_for(stalled.read(), 10) == b""  # cut by the server
    assert listener.gate.failed == 1


async def test_one_host_cannot_take_every_slot(
    listen: Listen,
) -> None:
    listener = await listen(HandshakeLimits(slots=4, per_source=3, timeout=30))
    gate = listener.gate
    for _ in range(10):
        await listener.stalled("127.0.0.1")
    await until(lambda: gate.in_flight_from("127.0.0.1") == 3 and gate.queued == 7)
    # the first host's handshakes stall for 30 s; another host's goes through meanwhile
    greeting = await asyncio.wait_for(listener.greeted("127.0.0.2"), 10)
    assert greeting == HELLO
    assert gate.failed == 0
    assert gate.in_flight_from("127.0.0.1") == 3


async def test_waiting_hosts_take_free_slots_in_turn(
    listen: Listen,
) -> None:
    """Ten connections queued from one host do not delay another host's first one by ten
    handshakes: the next free slot goes to the next address in turn."""
    listener = await listen(HandshakeLimits(slots=1, per_source=1, timeout=0.3))
    gate = listener.gate
    for _ in range(10):
        await listener.stalled("127.0.0.1")
    await until(lambda: gate.in_flight == 1 and gate.queued == 9)
    greeting = await asyncio.wait_for(listener.greeted("127.0.0.2"), 10)
    assert greeting == HELLO
    # only the stalled handshake that held the slot was cut before it
    assert gate.failed == 1


@pytest.mark.parametrize("scenario", [
    test_no_more_handshakes_than_slots_are_under_way,
    test_handshakes_past_a_turns_share_start_in_the_next_turns,
    test_a_stalled_handshake_is_cut_at_its_timeout_and_the_next_goes_on,
    test_one_host_cannot_take_every_slot,
    test_waiting_hosts_take_free_slots_in_turn,
])
def test_on_uvloop(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], scenario: Callable[[Listen], Awaitable[None]]
) -> None:
    """The server runs on uvloop, whose accept and TLS transports are its own."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        async with listening(tls) as start:
            await scenario(start)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def test_the_machine_sizes_the_slots() -> None:
    limits = HandshakeLimits.for_machine(2)
    assert limits.slots == 64 and limits.per_turn == 32
    assert 0 < limits.per_source < limits.slots
    assert HandshakeLimits.for_machine(0).slots >= 1
