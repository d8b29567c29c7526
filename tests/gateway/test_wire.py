"""The agent listener's WebSocket protocol against a real uvicorn server on loopback.

Honest peers are websockets' own client; hostile ones write bytes by hand on a raw
TCP connection, so they can send what no client library would.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from starlette.websockets import WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from jobfleet.gateway import wire
from jobfleet.gateway.endpoint import AgentSocket
from jobfleet.gateway.wire import WireProtocol, WireSocket, wire_protocol

PATH = "/agents/connect"
MAX_SIZE = 64 * 1024

Handler = Callable[[WireSocket], Awaitable[None]]


class Listener:
    """A uvicorn server whose upgrades on ``PATH`` go to ``handler``."""

    def __init__(self, heartbeat: float) -> None:
        self.heartbeat = heartbeat
        self.sockets: asyncio.Queue[WireSocket] = asyncio.Queue()
        self.handler: Handler = self._accept_and_hold
        self.results: asyncio.Queue[Any] = asyncio.Queue()
        self.port = 0
        self.server: uvicorn.Server | None = None

    async def serve(self, ws: WireSocket) -> None:
        self.sockets.put_nowait(ws)
        try:
            await self.handler(ws)
        except Exception as exc:
            self.results.put_nowait(exc)
            raise

    async def _accept_and_hold(self, ws: WireSocket) -> None:
        await ws.accept()
        self.results.put_nowait(await ws.receive())

    def protocols(self) -> list[WireProtocol]:
        assert self.server is not None
        return [c for c in self.server.server_state.connections if isinstance(c, WireProtocol)]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The app behind the fallback: echoes one message on /echo, refuses other paths."""
    if scope["type"] == "websocket":
        await receive()
        if scope["path"] != "/echo":
            await send({"type": "websocket.close", "code": 1000})
            return
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "bytes": b"app:" + (message.get("bytes") or b"")})
        await send({"type": "websocket.close", "code": 1000})
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})


@asynccontextmanager
async def listening(heartbeat: float = 30.0) -> AsyncIterator[Listener]:
    listener = Listener(heartbeat)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    listener.port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        ws=wire_protocol(
            listener.serve,
            path=PATH,
            heartbeat=heartbeat,
            max_size=MAX_SIZE,
            fallback=WebSocketsSansIOProtocol,
        ),
        ws_max_size=MAX_SIZE,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    listener.server = server
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), task
        await asyncio.sleep(0.01)
    try:
        yield listener
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def client(listener: Listener, **kwargs: Any) -> ClientConnection:
    return await connect(
        listener.url + PATH, additional_headers={"Authorization": "Agent a:s"}, **kwargs
    )


# --- a raw peer --------------------------------------------------------------------------


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([bit | length])
    elif length < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return head[0] & 0x0F, await reader.readexactly(length)


async def close_code(reader: asyncio.StreamReader) -> int:
    while True:
        opcode, payload = await asyncio.wait_for(read_frame(reader), 10)
        if opcode == 0x8:
            return int(struct.unpack("!H", payload[:2])[0]) if payload else 1005


@asynccontextmanager
async def raw_peer(
    listener: Listener, path: str = PATH
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nAuthorization: Agent raw:s\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    try:
        yield reader, writer, head
    finally:
        writer.transport.abort()


async def next_result(listener: Listener) -> Any:
    return await asyncio.wait_for(listener.results.get(), 10)


# --- the handshake -----------------------------------------------------------------------


def test_the_wire_socket_is_what_the_gateway_takes() -> None:
    socket_type: type[AgentSocket] = WireSocket  # checked by mypy
    assert socket_type is WireSocket
    assert not hasattr(WireSocket(None, {}, None), "__dict__")  # type: ignore[arg-type]


async def test_an_accepted_agent_talks_both_ways() -> None:
    async with listening() as listener:

        async def echo(ws: WireSocket) -> None:
            assert ws.headers.get("authorization") == "Agent a:s"
            assert ws.client is not None and ws.client.host == "127.0.0.1"
            await ws.accept()
            # the credential was read before the accept: none is held for the connection's life
            assert "authorization" not in ws.headers
            for _ in range(3):
                message = await ws.receive()
                await ws.send_bytes(b"echo:" + message["bytes"])
            listener.results.put_nowait(await ws.receive())

        listener.handler = echo
        async with await client(listener) as ws:
            for n in range(3):
                await ws.send(f"m{n}".encode())
                assert await ws.recv() == f"echo:m{n}".encode()
        # a clean close: the reader hears the client's code
        assert await next_result(listener) == {"type": "websocket.disconnect", "code": 1000}
        assert ws.close_code == 1000
        assert not listener.protocols()


async def test_a_close_before_accepting_answers_403() -> None:
    async with listening() as listener:

        async def refuse(ws: WireSocket) -> None:
            await ws.close(4401)

        listener.handler = refuse
        with pytest.raises(InvalidStatus) as caught:
            await client(listener)
        assert caught.value.response.status_code == 403


async def test_other_paths_go_to_the_app_as_on_any_port() -> None:
    async with listening() as listener:
        with pytest.raises(InvalidStatus) as caught:
            await connect(listener.url + "/elsewhere")
        assert caught.value.response.status_code == 403
        async with await connect(listener.url + "/echo") as ws:
            await ws.send(b"x")
            assert await ws.recv() == b"app:x"
        assert listener.sockets.empty()
        # a path that only percent-encodes the connect path is the connect path
        async with await connect(listener.url + PATH.replace("c", "%63")):
            assert isinstance(await listener.sockets.get(), WireSocket)


async def test_a_request_that_is_not_a_websocket_handshake_is_refused() -> None:
    async with listening() as listener:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(
            f"GET {PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 400")
        assert listener.sockets.empty()
        writer.close()


async def test_close_after_accept_sends_the_code_and_reason() -> None:
    async with listening() as listener:

        async def hang_up(ws: WireSocket) -> None:
            await ws.accept()
            await ws.close(4403, "credential revoked")
            listener.results.put_nowait(await ws.receive())
            with pytest.raises(WebSocketDisconnect):
                await ws.send_bytes(b"late")
            await ws.close(1000)  # a second close is nothing

        listener.handler = hang_up
        async with await client(listener) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 4403 and ws.close_reason == "credential revoked"
        assert await next_result(listener) == {"type": "websocket.disconnect", "code": 4403}


# --- what a client sends -----------------------------------------------------------------


async def test_deliver_hands_each_payload_in_order_and_answers_the_close_code() -> None:
    async with listening() as listener:

        async def deliver(ws: WireSocket) -> None:
            await ws.accept()
            await asyncio.sleep(0.2)  # the first two wait in the inbox, read ahead
            got: list[bytes | str] = []

            def receive(payload: bytes | str) -> None:
                got.append(payload)
                data = payload.encode() if isinstance(payload, str) else payload
                assert ws.send_now(b"echo:" + data)

            code = await ws.deliver(receive)
            listener.results.put_nowait((got, code))

        listener.handler = deliver
        async with await client(listener) as ws:
            await ws.send(b"m0")
            await ws.send("m1")
            assert [await ws.recv() for _ in range(2)] == [b"echo:m0", b"echo:m1"]
            await ws.send(b"m2")
            assert await ws.recv() == b"echo:m2"
        assert await next_result(listener) == ([b"m0", "m1", b"m2"], 1000)


async def test_a_rest_asked_for_a_connection_already_gone_leaves_no_timer() -> None:
    """Frames read ahead reach the gateway after their connection is gone; one of them
    may ask for a rest, which must not keep the connection alive on the loop's timers."""
    async with listening() as listener:
        gone = asyncio.Event()

        async def deliver(ws: WireSocket) -> None:
            await ws.accept()
            await gone.wait()
            got: list[bytes | str] = []

            def receive(payload: bytes | str) -> None:
                got.append(payload)
                ws.rest(30.0)

            code = await ws.deliver(receive)
            listener.results.put_nowait((got, code, ws._wire._resting))

        listener.handler = deliver
        async with await client(listener) as ws:
            await ws.send(b"m0")
            await asyncio.sleep(0.2)
            ws.transport.abort()
        await asyncio.sleep(0.2)
        assert not listener.protocols()
        gone.set()
        assert await next_result(listener) == ([b"m0"], 1006, None)


@pytest.mark.parametrize("read_ahead", [False, True], ids=["as-read", "read-ahead"])
async def test_a_receiver_that_raises_fails_the_connection_with_1011(read_ahead: bool) -> None:
    """Whether the frame is handed over as it is read or waited in the inbox, read ahead
    of the reader."""
    async with listening() as listener:

        async def deliver(ws: WireSocket) -> None:
            await ws.accept()
            if read_ahead:
                await asyncio.sleep(0.3)

            def receive(payload: bytes | str) -> None:
                raise ValueError("cannot take it")

            await ws.deliver(receive)

        listener.handler = deliver
        async with await client(listener) as ws:
            await ws.send(b"m0")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1011
        assert isinstance(await next_result(listener), ValueError)


async def test_a_frame_over_the_size_closes_with_1009() -> None:
    async with listening() as listener, await client(listener, max_size=None) as ws:
        await ws.send(b"x" * (MAX_SIZE + 1))
        assert await next_result(listener) == {"type": "websocket.disconnect", "code": 1009}
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1009


async def test_fragments_text_and_bad_text() -> None:
    async with listening() as listener:

        async def read_all(ws: WireSocket) -> None:
            await ws.accept()
            while True:
                message = await ws.receive()
                listener.results.put_nowait(message)
                if message["type"] == "websocket.disconnect":
                    return

        listener.handler = read_all
        async with raw_peer(listener) as (reader, writer, head):
            assert head.startswith(b"HTTP/1.1 101")
            writer.write(frame(0x2, b"ab", fin=False) + frame(0x0, b"cd", fin=False))
            writer.write(frame(0x9, b"ping") + frame(0x0, b"ef"))
            writer.write(frame(0x1, "é".encode()))
            assert await next_result(listener) == {"type": "websocket.receive", "bytes": b"abcdef"}
            assert await next_result(listener) == {"type": "websocket.receive", "text": "é"}
            assert await read_frame(reader) == (0xA, b"ping")
            writer.write(frame(0x1, b"\xff\xfe"))
            assert await next_result(listener) == {"type": "websocket.disconnect", "code": 1007}
            assert await close_code(reader) == 1007
        # a fragmented message over the size, a few bytes at a time
        async with raw_peer(listener) as (reader, writer, _):
            for _ in range(MAX_SIZE // 1024 + 1):
                writer.write(frame(0x2 if _ == 0 else 0x0, b"y" * 1024, fin=False))
            assert await next_result(listener) == {"type": "websocket.disconnect", "code": 1009}
            assert await close_code(reader) == 1009


GARBAGE = {
    "unmasked": lambda: frame(0x2, b"no mask", mask=False),
    "zeros": lambda: b"\x00" * 64,  # a continuation with no message
    "http": lambda: b"GET / HTTP/1.1\r\n\r\n" * 4,  # reserved bits and opcodes
    "continuation": lambda: frame(0x0, b"x"),
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
async def test_garbage_costs_only_its_own_connection(kind: str) -> None:
    junk, code = GARBAGE[kind](), 1002
    async with listening() as listener, await client(listener) as honest:
        await listener.sockets.get()
        async with raw_peer(listener) as (reader, writer, _):
            await listener.sockets.get()
            writer.write(junk)
            assert await close_code(reader) == code
            assert await next_result(listener) == {"type": "websocket.disconnect", "code": code}
            assert await asyncio.wait_for(reader.read(), 10) == b""
        await honest.send(b"still here")
        assert await next_result(listener) == {"type": "websocket.receive", "bytes": b"still here"}


async def test_a_connection_lost_in_the_middle_of_a_frame() -> None:
    async with listening() as listener, raw_peer(listener) as (_, writer, _):
        writer.write(frame(0x2, b"z" * 1000)[:500])
        await asyncio.sleep(0.1)
        writer.transport.abort()
        assert await next_result(listener) == {"type": "websocket.disconnect", "code": 1006}
        await asyncio.sleep(0.1)
        assert not listener.protocols()


# --- flow control ------------------------------------------------------------------------


async def test_reading_stops_while_the_gateway_does_not_keep_up() -> None:
    async with listening() as listener:
        release = asyncio.Event()

        async def slow(ws: WireSocket) -> None:
            await ws.accept()
            await release.wait()
            got = [await ws.receive() for _ in range(1000)]
            listener.results.put_nowait([m["bytes"] for m in got])

        listener.handler = slow
        async with await client(listener) as ws:

            async def send_all() -> None:
                for n in range(1000):
                    await ws.send(str(n).encode().ljust(8192, b"."))

            sending = asyncio.create_task(send_all())
            await asyncio.sleep(0.5)
            (protocol,) = listener.protocols()
            assert protocol._read_paused
            assert protocol._inbox is not None
            # what one read brings beyond the limit, no more
            assert wire.INBOX_FRAMES <= len(protocol._inbox) < 1000
            release.set()
            got = await next_result(listener)
            assert got == [str(n).encode().ljust(8192, b".") for n in range(1000)]
            await sending
            assert not protocol._read_paused


async def test_a_held_peer_is_not_read_nor_cut_by_the_keepalive_and_then_read_in_order() -> None:
    async with listening(heartbeat=0.3) as listener:
        got: list[bytes | str] = []

        async def held(ws: WireSocket) -> None:
            await ws.accept()
            ws.hold(True)  # what it sends cannot be stored now
            code = await ws.deliver(got.append)
            listener.results.put_nowait(code)

        listener.handler = held
        async with await client(listener, ping_interval=None) as ws:

            async def send_all() -> None:
                for n in range(1000):
                    await ws.send(str(n).encode().ljust(8192, b"."))

            sending = asyncio.create_task(send_all())
            # several heartbeats: its silence is the server's doing, not the peer's
            await asyncio.sleep(1.5)
            (protocol,) = listener.protocols()
            assert protocol._read_paused
            assert len(got) < 1000
            assert not sending.done()
            socket = await asyncio.wait_for(listener.sockets.get(), 10)
            socket.hold(False)
            await asyncio.wait_for(sending, 10)
            deadline = asyncio.get_running_loop().time() + 10
            while len(got) < 1000:
                assert asyncio.get_running_loop().time() < deadline, len(got)
                await asyncio.sleep(0.02)
            assert got == [str(n).encode().ljust(8192, b".") for n in range(1000)]
            assert not protocol._read_paused
        assert await next_result(listener) == 1000


async def test_a_send_waits_while_the_peer_does_not_read_and_keepalive_ends_it() -> None:
    async with listening(heartbeat=0.5) as listener:
        sent = 0

        async def flood(ws: WireSocket) -> None:
            nonlocal sent
            await ws.accept()
            try:
                while True:
                    await ws.send_bytes(b"r" * 16384)
                    sent += 1
            finally:
                listener.results.put_nowait(await ws.receive())

        listener.handler = flood
        async with raw_peer(listener):
            await asyncio.sleep(0.4)
            (protocol,) = listener.protocols()
            transport = protocol._transport
            assert transport is not None
            high = transport.get_write_buffer_limits()[1]
            # the socket buffers hold some; past them the sender waits
            assert transport.get_write_buffer_size() <= high + 16384 + 16
            stalled = sent
            await asyncio.sleep(0.3)
            assert sent == stalled
            # nor does a frame go at once: the caller is told to wait
            ws = await asyncio.wait_for(listener.sockets.get(), 10)
            assert ws.send_now(b"x") is False
            # no pong comes from a peer that does not read: cut after about two heartbeats
            assert await next_result(listener) == {"type": "websocket.disconnect", "code": 1011}
            assert isinstance(await next_result(listener), WebSocketDisconnect)
        await asyncio.sleep(0.1)
        assert not listener.protocols()


async def test_a_ping_flood_from_a_peer_that_does_not_read_is_not_buffered() -> None:
    async with listening() as listener, raw_peer(listener) as (_, writer, _):
        await listener.sockets.get()
        ping = frame(0x9, b"p" * 125)
        batch = ping * 512
        written = 0

        async def flood() -> None:
            nonlocal written
            while True:
                writer.write(batch)
                await writer.drain()
                written += len(batch)

        flooding = asyncio.create_task(flood())
        (protocol,) = listener.protocols()
        # the flood and the server share this loop: on a loaded machine the sockets'
        # buffers take more than the 2 s this test once gave them to fill
        deadline = asyncio.get_running_loop().time() + 30
        while not protocol._read_paused:
            assert asyncio.get_running_loop().time() < deadline, written
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        transport = protocol._transport
        assert transport is not None
        # the flood stopped at the sockets' buffers, not in the server's memory
        assert transport.get_write_buffer_size() < 1 << 20
        assert protocol._read_paused
        flooding.cancel()
        await asyncio.gather(flooding, return_exceptions=True)


async def test_a_peer_that_closes_and_never_reads_is_cut_after_the_close_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire, "CLOSE_TIMEOUT", 0.5)
    async with listening() as listener:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", listener.port))
        _reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(
            f"GET {PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .encode()
        )
        await listener.sockets.get()
        (protocol,) = listener.protocols()
        transport = protocol._transport
        assert transport is not None
        try:
            # pings whose pongs it never reads, until they wait in the server's buffer
            # (below the mark that stops reading), then a close
            for _ in range(10000):
                writer.write(frame(0x9, b"p" * 125) * 20)
                await writer.drain()
                await asyncio.sleep(0.005)
                if transport.get_write_buffer_size() > 0:
                    break
            assert transport.get_write_buffer_size() > 0
            writer.write(frame(0x8, struct.pack("!H", 1000)))
            await writer.drain()
            assert await next_result(listener) == {"type": "websocket.disconnect", "code": 1000}
            # the closing connection does not wait for ever for its pongs to be read
            for _ in range(50):
                if not listener.protocols():
                    break
                await asyncio.sleep(0.1)
            assert not listener.protocols()
        finally:
            writer.transport.abort()


async def test_keepalive_pings_keep_an_honest_peer() -> None:
    async with listening(heartbeat=0.2) as listener, await client(listener) as ws:
        await asyncio.sleep(1.0)
        await ws.send(b"alive")
        assert await next_result(listener) == {"type": "websocket.receive", "bytes": b"alive"}


async def test_a_peer_that_pings_every_heartbeat_is_not_pinged() -> None:
    # agents ping at the heartbeat themselves: pings of the server's own as well would
    # double the keepalive traffic of every idle agent
    async with listening(heartbeat=0.2) as listener, raw_peer(listener) as (reader, writer, _):
        await listener.sockets.get()
        opcodes: list[int] = []

        async def read() -> None:
            while True:
                opcodes.append((await read_frame(reader))[0])

        reading = asyncio.create_task(read())
        try:
            for _ in range(12):
                writer.write(frame(0x9, b"k"))
                await asyncio.sleep(0.1)
        finally:
            reading.cancel()
        assert opcodes and set(opcodes) == {0xA}, opcodes


# --- stopping ----------------------------------------------------------------------------


async def test_a_stopping_server_closes_its_agents_with_1012() -> None:
    async with listening() as listener:
        ws = await client(listener)
        async with raw_peer(listener):  # one that never reads: cut after the grace
            await listener.sockets.get()
            await listener.sockets.get()
            assert listener.server is not None
            listener.server.should_exit = True
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1012
            results = [await next_result(listener) for _ in range(2)]
            assert results == [{"type": "websocket.disconnect", "code": 1012}] * 2
