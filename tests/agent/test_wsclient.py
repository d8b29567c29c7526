"""The agent's WebSocket client against a real websockets server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.http11 import Request, Response
from websockets.utils import accept_key

from jobfleet.agent.channel import pinned_context
from jobfleet.agent.fetch import server_name
from jobfleet.agent.wsclient import connect
from jobfleet.gateway.tls import ensure_agent_tls

Handler = Callable[[ServerConnection], Awaitable[None]]


async def serving(handler: Handler, **kwargs: Any) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, **kwargs) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        scheme = "wss" if kwargs.get("ssl") else "ws"
        yield f"{scheme}://127.0.0.1:{port}/connect"


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    async def handle(ws: ServerConnection) -> None:
        assert ws.request is not None
        await ws.send("auth " + ws.request.headers.get("Authorization", ""))
        async for message in ws:
            if message == "fragments":
                await ws.send(iter(["one ", "two ", "three"]))
            elif message == "bye":
                await ws.close()
            else:
                await ws.send(message)

    async for url in serving(handle):
        yield url


async def test_messages_go_both_ways_and_end_with_a_normal_close(echo: str) -> None:
    async with await connect(echo, additional_headers={"Authorization": "Agent 1:s"}) as ws:
        assert await ws.recv() == "auth Agent 1:s"
        await ws.send(b"\x00binary")
        assert await ws.recv() == b"\x00binary"
        await ws.send("text")
        assert await ws.recv() == "text"
        await ws.send("fragments")
        assert await ws.recv() == "one two three"
        await ws.send("bye")
        # the server's close ends the iteration without an error
        assert [m async for m in ws] == []


async def test_a_refused_handshake_raises_invalid_status() -> None:
    def refuse(_ws: ServerConnection, _request: Request) -> Response:
        return Response(403, "Forbidden", Headers(), b"no")

    async def never(_ws: ServerConnection) -> None:
        raise AssertionError("refused connections are not handled")

    async for url in serving(never, process_request=refuse):
        with pytest.raises(InvalidStatus) as caught:
            await connect(url)
        assert caught.value.response.status_code == 403


async def test_a_peer_that_stops_answering_pings_ends_the_connection() -> None:
    async def silent(ws: ServerConnection) -> None:
        # reads nothing more: pings stay unanswered, as with a dead host
        ws.transport.pause_reading()
        await asyncio.sleep(1)

    async for url in serving(silent, close_timeout=0.5):
        ws = await connect(url, ping_interval=0.1, ping_timeout=0.1, close_timeout=0.5)
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), 20)
        await ws.close()


async def test_keepalive_pings_only_a_server_silent_for_a_whole_interval() -> None:
    quiet = asyncio.Event()

    async def chatty_then_silent(ws: ServerConnection) -> None:
        # a message every 20 ms for 1.2 s (tasks and acknowledgements flowing), then
        # nothing but the answers to pings
        for _ in range(60):
            await ws.send("tick")
            await asyncio.sleep(0.02)
        quiet.set()
        await asyncio.sleep(1.2)
        await ws.close()

    pings: list[bool] = []

    def counted(send_ping: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def send(data: bytes) -> None:
            pings.append(quiet.is_set())
            send_ping(data)

        return send

    async for url in serving(chatty_then_silent, ping_interval=None):
        ws = await connect(url, ping_interval=0.3, ping_timeout=1, close_timeout=0.5)
        ws.protocol.send_ping = counted(ws.protocol.send_ping)  # type: ignore[method-assign]
        ticks = 0
        async for message in ws:
            ticks += message == "tick"
        await ws.close()
        assert ticks == 60
        # none while the server talked; one per silent interval afterwards
        assert False not in pings
        assert len(pings) >= 2


async def test_a_message_over_max_size_closes_with_an_error() -> None:
    async def big(ws: ServerConnection) -> None:
        await ws.send(b"x" * 2048)
        await ws.wait_closed()

    async for url in serving(big):
        async with await connect(url, max_size=1024, close_timeout=1) as ws:
            with pytest.raises(ConnectionClosedError) as caught:
                await asyncio.wait_for(ws.recv(), 20)
            assert caught.value.rcvd is None or caught.value.sent is not None


async def test_connecting_to_nothing_is_an_os_error() -> None:
    urls = [url async for url in serving(lambda ws: ws.wait_closed())]
    # the server is gone: its port refuses
    with pytest.raises(OSError):
        await connect(urls[0], open_timeout=5)


async def test_tls_trusts_the_pinned_ca_only(tmp_path: Path) -> None:
    tls = ensure_agent_tls(tmp_path, ["127.0.0.1"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tls.cert_file, tls.key_file)

    async def hello(ws: ServerConnection) -> None:
        await ws.send("over tls")
        await ws.wait_closed()

    async for url in serving(hello, ssl=server_ctx):
        async with await connect(url, ssl=pinned_context(tls.ca_pem)) as ws:
            assert await ws.recv() == "over tls"
        # the system's CAs do not know the server's own CA
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(url, open_timeout=10)


def test_an_ip_address_is_not_sent_as_a_tls_name() -> None:
    pinned = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    pinned.check_hostname = False
    assert server_name("127.0.0.1", pinned) == ""
    assert server_name("[::1]", pinned) == ""
    assert server_name("agents.example", pinned) == "agents.example"
    assert server_name("127.0.0.1", ssl.create_default_context()) == "127.0.0.1"
    assert server_name("127.0.0.1", None) is None


async def raw_server(after_handshake: bytes) -> tuple[asyncio.Server, str]:
    """A server that accepts the handshake, writes ``after_handshake`` with the 101 and
    then keeps the connection open without another byte (a hostile or stuck server)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
            + accept_key(key).encode()
            + b"\r\n\r\n"
            + after_handshake
        )
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while await reader.read(65536):
                pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}/connect"


async def test_sending_after_the_server_closed_raises_connection_closed() -> None:
    # a close frame (1001, going away) right behind the handshake's answer
    server, url = await raw_server(b"\x88\x02\x03\xe9")
    async with server:
        ws = await connect(url, close_timeout=0.5)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.send("hello"), 5)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 20)
        await ws.close()


async def test_a_text_frame_that_is_not_utf8_fails_the_connection() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        server, url = await raw_server(b"\x81\x02\xff\xfe")
        async with server:
            ws = await connect(url, close_timeout=0.5)
            with pytest.raises(ConnectionClosedError) as caught:
                await asyncio.wait_for(ws.recv(), 20)
            await ws.close()
        # closed as the protocol says (1007), not by a crash in the transport's callback
        assert caught.value.sent is not None and caught.value.sent.code == 1007
        assert errors == []
    finally:
        loop.set_exception_handler(None)


async def test_messages_ahead_of_the_close_frame_in_one_segment_are_kept() -> None:
    # two messages and the close frame (1000) behind the handshake, in one write
    server, url = await raw_server(b"\x81\x03one\x81\x03two\x88\x02\x03\xe8")
    async with server:
        ws = await connect(url, close_timeout=0.5)
        assert await asyncio.wait_for(ws.recv(), 5) == "one"
        assert await asyncio.wait_for(ws.recv(), 5) == "two"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 20)
        await ws.close()


async def test_deliver_hands_each_message_in_order_until_a_normal_close(echo: str) -> None:
    async with await connect(echo, additional_headers={"Authorization": "Agent 1:s"}) as ws:
        await ws.send("queued")
        got: list[str | bytes] = []
        await asyncio.sleep(0.2)  # "auth …" and "queued" wait in the queue, read ahead

        def receive(message: str | bytes) -> None:
            got.append(message)
            if message == "queued":
                ws.protocol.send_text(b"fragments")
            elif message == "one two three":
                ws.protocol.send_text(b"bye")
            ws._flush()

        await asyncio.wait_for(ws.deliver(receive), 20)
        assert got == ["auth Agent 1:s", "queued", "one two three"]


async def test_deliver_keeps_messages_ahead_of_the_close_frame_in_one_segment() -> None:
    server, url = await raw_server(b"\x81\x03one\x81\x03two\x88\x02\x03\xe8")
    async with server:
        ws = await connect(url, close_timeout=0.5)
        got: list[str | bytes] = []
        await asyncio.wait_for(ws.deliver(got.append), 20)
        assert got == ["one", "two"]
        await ws.close()


@pytest.mark.parametrize("read_ahead", [False, True], ids=["as-read", "read-ahead"])
async def test_a_receiver_that_raises_cuts_the_connection_and_deliver_raises_it(
    echo: str, read_ahead: bool
) -> None:
    """Whether the message is handed over as it is read or waited in the queue, read
    ahead of ``deliver``."""
    async with await connect(echo, close_timeout=0.5) as ws:
        assert await ws.recv() == "auth "
        taken: list[str | bytes] = []

        def receive(message: str | bytes) -> None:
            taken.append(message)
            raise ValueError(f"cannot take {message!r}")

        await ws.send("boom")
        if read_ahead:
            await ws.send("behind")
            await asyncio.sleep(0.3)  # both echoes wait in the queue
        with pytest.raises(ValueError, match="boom"):
            await asyncio.wait_for(ws.deliver(receive), 20)
        await asyncio.wait_for(ws.lost, 20)
        # nothing behind the message that failed is handed over
        assert taken == ["boom"]


@pytest.mark.parametrize("error", [OSError, ssl.SSLError, RuntimeError])
async def test_a_write_the_transport_refuses_ends_the_connection(
    echo: str, error: type[Exception]
) -> None:
    """A transport that raises on a write (its socket failed, or it is closing) has
    lost bytes of the stream: the connection is over, said as a broken connection to
    the writer and to the reader alike."""
    async with await connect(echo, close_timeout=0.5) as ws:
        assert await ws.recv() == "auth "
        transport = ws.transport
        assert transport is not None

        def refuse(data: bytes) -> None:
            raise error("the transport is closing")

        transport.write = refuse  # type: ignore[method-assign]
        with pytest.raises(ConnectionClosedError):
            await ws.send("lost")
        with pytest.raises(ConnectionClosedError):
            ws.write("after")
        await asyncio.wait_for(ws.lost, 20)
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(ws.deliver(lambda _m: None), 20)


def test_tls_on_uvloop(tmp_path: Path) -> None:
    """The swarm runs its simulated hosts on uvloop, whose TLS transport is not a
    subclass of asyncio's."""
    uvloop = pytest.importorskip("uvloop")
    tls = ensure_agent_tls(tmp_path, ["127.0.0.1"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tls.cert_file, tls.key_file)

    async def hello(ws: ServerConnection) -> None:
        await ws.send("over tls on uvloop")
        async for message in ws:
            await ws.send(message)

    async def main() -> list[str | bytes]:
        async for url in serving(hello, ssl=server_ctx):
            async with await connect(url, ssl=pinned_context(tls.ca_pem)) as ws:
                first = await ws.recv()
                await ws.send("echo")
                return [first, await ws.recv()]
        raise AssertionError("not served")

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(asyncio.wait_for(main(), 30)) == ["over tls on uvloop", "echo"]
