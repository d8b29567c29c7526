"""The agent port's TLS over the loop's plain transport: records both ways, flow
control, both ends' closes, broken peers, and what an idle connection holds. Real
sockets on loopback, on the standard loop and on uvloop (the server's)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

from jobfleet.gateway.tls import ensure_agent_tls
from jobfleet.gateway.tlslayer import TLSLayer, start_tls

BIG = bytes(range(256)) * 400  # 100 KiB: several records


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    files = ensure_agent_tls(tmp_path, ["127.0.0.1"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.cert_file, files.key_file)
    server.num_tickets = 0
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_verify_locations(cadata=files.ca_pem)
    return server, client


class App(asyncio.Protocol):
    """The application's side: what it was told, and in which order; ``on_made`` acts at
    the start, ``pause_on_data`` pauses reading at each delivery."""

    def __init__(
        self, on_made: Callable[[App], None] | None = None, *, pause_on_data: bool = False
    ) -> None:
        self.on_made = on_made
        self.pause_on_data = pause_on_data
        self.received = bytearray()
        self.eof = False
        self.eof_after: int | None = None  # bytes received when the EOF came
        self.paused_writing = 0
        self.resumed_writing = 0
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        assert not self.lost.done(), "data after connection_lost"
        self.received += data
        if self.pause_on_data and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self.eof = True
        self.eof_after = len(self.received)
        return None

    def pause_writing(self) -> None:
        self.paused_writing += 1

    def resume_writing(self) -> None:
        self.resumed_writing += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class Server:
    """One listening socket; each accepted connection served by ``start_tls``."""

    def __init__(self, context: ssl.SSLContext, timeout: float = 10.0) -> None:
        self.context, self.timeout = context, timeout
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.apps: list[App] = []

    async def serve_one(
        self, on_made: Callable[[App], None] | None = None, *, pause_on_data: bool = False
    ) -> TLSLayer:
        conn, _ = await asyncio.get_running_loop().sock_accept(self.sock)

        def factory() -> asyncio.Protocol:
            app = App(on_made, pause_on_data=pause_on_data)
            self.apps.append(app)
            return app

        return await start_tls(conn, self.context, factory, self.timeout)


def blocking_client(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    # an EOF without close_notify raises here instead of reading as b""
    return context.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False)


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Waits for ``check`` (a guard against a hang, not a time asserted)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def send_big(app: App) -> None:
    assert app.transport is not None
    app.transport.write(BIG)


def say_bye(app: App) -> None:
    assert app.transport is not None
    app.transport.write(b"bye")
    app.transport.close()


def pause(app: App) -> None:
    assert app.transport is not None
    app.transport.pause_reading()


Scenario = Callable[[tuple[ssl.SSLContext, ssl.SSLContext]], Awaitable[None]]


async def records_go_both_ways(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server = Server(tls[0])
    serving = asyncio.ensure_future(server.serve_one(send_big))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=tls[1])
    layer = await serving
    assert await reader.readexactly(len(BIG)) == BIG
    writer.write(BIG)
    app = server.apps[0]
    await until(lambda: len(app.received) == len(BIG))
    assert bytes(app.received) == BIG
    assert layer.get_extra_info("sslcontext") is tls[0]
    assert layer.get_extra_info("ssl_object").version() == "TLSv1.3"
    assert layer.get_extra_info("peername")[0] == "127.0.0.1"
    writer.close()
    await asyncio.wait_for(app.lost, 10)


async def a_close_sends_close_notify(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server = Server(tls[0])
    serving = asyncio.ensure_future(server.serve_one(say_bye))
    client = await asyncio.to_thread(blocking_client, server.port, tls[1])
    await serving
    # a TCP end without close_notify would raise SSLEOFError (ragged EOFs not suppressed)
    assert await asyncio.to_thread(client.recv, 10) == b"bye"
    assert await asyncio.to_thread(client.recv, 10) == b""
    await asyncio.wait_for(server.apps[0].lost, 10)
    client.close()


async def the_peers_close_notify_ends_it(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server = Server(tls[0])
    serving = asyncio.ensure_future(server.serve_one())
    client = await asyncio.to_thread(blocking_client, server.port, tls[1])
    await serving
    await asyncio.to_thread(client.sendall, b"last words")
    client.setblocking(False)
    with pytest.raises(ssl.SSLWantReadError):
        client.unwrap()  # sends close_notify; ours has not come yet
    app = server.apps[0]
    assert await asyncio.wait_for(app.lost, 10) is None
    assert app.eof and bytes(app.received) == b"last words"
    client.close()


async def paused_reading_holds_records_until_resumed(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server = Server(tls[0])
    serving = asyncio.ensure_future(server.serve_one(pause))
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=tls[1])
    # the client's first records may ride in with its last handshake flight
    writer.write(b"held")
    layer = await serving
    app = server.apps[0]
    await asyncio.sleep(0.2)
    assert app.received == b"" and not layer.is_reading()
    # what was read before the pause is delivered with no more bytes on the socket
    layer.resume_reading()
    await until(lambda: app.received == b"held")
    writer.close()
    await asyncio.wait_for(app.lost, 10)


async def a_client_speaking_no_tls_fails_its_handshake(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server = Server(tls[0])
    serving = asyncio.ensure_future(server.serve_one())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ssl.SSLError):
        await asyncio.wait_for(serving, 10)
    # cut, after at most an alert; no application was made
    await asyncio.wait_for(reader.read(), 10)
    assert server.apps == []
    writer.close()


async def a_stalled_handshake_is_cut_at_its_timeout(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server = Server(tls[0], timeout=0.3)
    serving = asyncio.ensure_future(server.serve_one())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(serving, 10)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert server.apps == []
    writer.close()


async def a_forged_record_cuts_the_connection(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server = Server(tls[0])
    errors: list[object] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    serving = asyncio.ensure_future(server.serve_one())
    client = await asyncio.to_thread(blocking_client, server.port, tls[1])
    await serving
    # an application-data record whose tag cannot verify, on the TLS socket's own TCP stream
    raw = socket.socket(fileno=client.detach())
    raw.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
    app = server.apps[0]
    await asyncio.wait_for(app.lost, 10)
    assert app.received == b""
    assert errors == []
    raw.close()


async def a_close_with_megabytes_pending_sends_them_all_first(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A close while a slow reader has not taken what was written yet: every byte goes
    out, then close_notify, then the connection ends on the server's side as well."""
    big = BIG * 40  # 4 MB

    def write_and_close(app: App) -> None:
        assert app.transport is not None
        app.transport.write(big)
        app.transport.close()

    server = Server(tls[0])
    serving = asyncio.ensure_future(server.serve_one(write_and_close))
    client = await asyncio.to_thread(blocking_client, server.port, tls[1])
    await serving

    def read_slowly() -> bytes:
        got = bytearray()
        while chunk := client.recv(65536):
            got += chunk
            if len(got) < len(big) // 2:
                time.sleep(0.002)
        return bytes(got)

    assert await asyncio.to_thread(read_slowly) == big
    assert await asyncio.wait_for(server.apps[0].lost, 30) is None
    client.close()


async def an_abort_with_megabytes_pending_ends_at_once(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    def write_and_abort(app: App) -> None:
        assert app.transport is not None
        app.transport.write(BIG * 40)
        app.transport.abort()

    server = Server(tls[0])
    serving = asyncio.ensure_future(server.serve_one(write_and_abort))
    client = await asyncio.to_thread(blocking_client, server.port, tls[1])
    await serving
    await asyncio.wait_for(server.apps[0].lost, 10)

    def read_to_the_end() -> None:
        with contextlib.suppress(OSError):  # reset, or a TCP end without close_notify
            while client.recv(65536):
                pass

    await asyncio.wait_for(asyncio.to_thread(read_to_the_end), 10)
    client.close()


SCENARIOS = [
    records_go_both_ways,
    a_close_sends_close_notify,
    the_peers_close_notify_ends_it,
    paused_reading_holds_records_until_resumed,
    a_client_speaking_no_tls_fails_its_handshake,
    a_stalled_handshake_is_cut_at_its_timeout,
    a_forged_record_cuts_the_connection,
    a_close_with_megabytes_pending_sends_them_all_first,
    an_abort_with_megabytes_pending_ends_at_once,
]


def run_on(loop_name: str, main: Callable[[], Awaitable[None]]) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop_name == "uvloop":
        factory = pytest.importorskip("uvloop").new_event_loop

    async def guarded() -> None:
        await asyncio.wait_for(main(), 60)

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(guarded())


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_tls_layer(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], scenario: Scenario, loop_name: str
) -> None:
    run_on(loop_name, lambda: scenario(tls))


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_in_use() -> int:
    """Bytes the C allocator has handed out (its heap and its own mappings)."""
    libc = ctypes.CDLL(None)
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is None:
        pytest.skip("no glibc mallinfo2")
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_an_idle_connection_holds_no_read_buffer_of_its_own(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], loop_name: str
) -> None:
    """The loops' TLS transports allocate a 256 KiB read buffer per connection, kept for
    its life; over the plain transport the loop's one read buffer serves them all. Both
    ends count here (the client's blocking sockets hold no buffer of that size)."""
    count = 100

    async def main() -> None:
        server = Server(tls[0])
        layers: list[TLSLayer] = []
        clients: list[ssl.SSLSocket] = []

        async def connect(n: int) -> None:
            for _ in range(n):
                serving = asyncio.ensure_future(server.serve_one())
                clients.append(await asyncio.to_thread(blocking_client, server.port, tls[1]))
                layers.append(await serving)

        await connect(10)  # what is made once (the loop's buffers, OpenSSL's caches)
        gc.collect()
        before = heap_in_use()
        await connect(count)
        gc.collect()
        per_connection = (heap_in_use() - before) / count
        for client in clients:
            client.close()
        for layer in layers:
            layer.abort()
        assert per_connection < 96 * 1024, f"{per_connection / 1024:.1f} KiB a connection"

    run_on(loop_name, main)


def test_a_connection_that_carried_megabytes_keeps_no_buffer_of_their_size(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A MemoryBIO keeps the largest buffer it held; fed whole reads and frames, each
    connection would keep the size of the largest either way for its life."""
    count, payload = 5, BIG * 10  # 1 MiB each way on each connection

    async def main() -> None:
        server = Server(tls[0])
        layers: list[TLSLayer] = []
        clients: list[ssl.SSLSocket] = []
        for _ in range(count):
            serving = asyncio.ensure_future(server.serve_one())
            clients.append(await asyncio.to_thread(blocking_client, server.port, tls[1]))
            layers.append(await serving)
        gc.collect()
        before = heap_in_use()

        def exchange(client: ssl.SSLSocket) -> None:
            client.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(client.recv(1 << 20))

        for layer, client, app in zip(layers, clients, server.apps, strict=True):
            layer.write(payload)
            await asyncio.to_thread(exchange, client)
            await until(lambda app=app: len(app.received) == len(payload))  # type: ignore[misc]
            app.received = bytearray()
        gc.collect()
        kept = (heap_in_use() - before) / count
        for client in clients:
            client.close()
        for layer in layers:
            layer.abort()
        assert kept < 64 * 1024, f"{kept / 1024:.1f} KiB a connection"

    run_on("uvloop", main)

