"""The agent port's TLS layer against peers that split, stall, truncate and forge:
real sockets on loopback and real TLS, on the standard loop and on uvloop (the
server's). Every scenario also checks that nothing reached the loop's exception
handler: a broken peer costs its own connection and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import uvicorn
from tests.gateway.test_tlslayer import App, Server
from uvicorn.server import ServerState

from jobfleet.api.connections import ConnectionLimits, GuardedHttpProtocol, protocol_class
from jobfleet.gateway import tlslayer
from jobfleet.gateway.handshakes import HandshakeGate, HandshakeLimits
from jobfleet.gateway.tls import ensure_agent_tls
from jobfleet.gateway.tlslayer import SLICE, TLSLayer, start_tls

LOOPS = ["asyncio", "uvloop"]
Contexts = tuple[ssl.SSLContext, ssl.SSLContext]


@pytest.fixture
def tls(tmp_path: Path) -> Contexts:
    files = ensure_agent_tls(tmp_path, ["127.0.0.1"])
    # as the agent listener sets it up (server.py)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.cert_file, files.key_file)
    server.num_tickets = 0
    server.options |= ssl.OP_NO_RENEGOTIATION
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_verify_locations(cadata=files.ca_pem)
    return server, client


class RawClient:
    """A blocking TLS client whose records the test sees and sends itself."""

    def __init__(
        self, port: int, context: ssl.SSLContext, *, receive_buffer: int | None = None
    ) -> None:
        self.sock = socket.socket()
        if receive_buffer is not None:
            # before connecting: the window the peer may fill is set then
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")

    def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the handshake") from None
                self.incoming.write(data)
                continue
            self.sock.sendall(self.outgoing.read())
            return

    def records(self, *pieces: bytes) -> bytes:
        """One record (or more, past 16 KiB) per piece, encrypted, not sent."""
        for piece in pieces:
            self.tls.write(piece)
        return self.outgoing.read()

    def read_all(self, size: int) -> bytes:
        got = bytearray()
        while len(got) < size:
            try:
                got += self.tls.read(65536)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.incoming.write(data)
        return bytes(got)


def run_on(loop_name: str, main: Callable[[], Awaitable[None]]) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop_name == "uvloop":
        factory = pytest.importorskip("uvloop").new_event_loop
    errors: list[dict[str, object]] = []

    async def guarded() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
        await asyncio.wait_for(main(), 90)
        await asyncio.sleep(0.1)  # callbacks the last close scheduled

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(guarded())
    assert errors == [], errors


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Waits for ``check`` (a guard against a hang, not a time asserted)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def connected(
    server: Server, client_context: ssl.SSLContext, **kw: bool
) -> tuple[TLSLayer, App, RawClient]:
    serving = asyncio.ensure_future(server.serve_one(**kw))
    client = RawClient(server.port, client_context)
    await asyncio.to_thread(client.handshake)
    layer = await serving
    return layer, server.apps[-1], client


# records in any shape --------------------------------------------------------------------


@pytest.mark.parametrize("loop_name", LOOPS)
def test_records_split_at_every_byte_or_many_in_one_read(tls: Contexts, loop_name: str) -> None:
    async def main() -> None:
        server = Server(tls[0])
        layer, app, client = await connected(server, tls[1])
        pieces = [b"a", bytes(range(256)) * 64, b"b" * 5000, *(b"%d" % n for n in range(40))]
        stream = client.records(*pieces)
        # every byte boundary is a boundary between two reads
        for i in range(len(stream)):
            layer.data_received(stream[i : i + 1])
        expected = b"".join(pieces)
        assert bytes(app.received) == expected
        # 500 records in one read, then the same over the socket in one send
        many = [b"%05d" % n for n in range(500)]
        layer.data_received(client.records(*many))
        expected += b"".join(many)
        assert bytes(app.received) == expected
        await asyncio.to_thread(client.sock.sendall, client.records(*many))
        expected += b"".join(many)
        await until(lambda: len(app.received) == len(expected))
        assert bytes(app.received) == expected
        assert not app.lost.done()
        layer.close()
        await asyncio.wait_for(app.lost, 20)
        client.sock.close()

    run_on(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_megabytes_both_ways_with_a_slow_reader(tls: Contexts, loop_name: str) -> None:
    """The application is told to pause writing while the peer does not read, and to
    resume once it has; nothing is lost or reordered either way."""
    size = 8 << 20
    payload = os.urandom(size)

    async def main() -> None:
        server = Server(tls[0])
        layer, app, client = await connected(server, tls[1])
        layer.write(payload)
        await until(lambda: app.paused_writing > 0)
        assert layer.get_write_buffer_size() > 0
        got = await asyncio.to_thread(client.read_all, size)
        assert got == payload
        await until(lambda: app.resumed_writing == app.paused_writing)
        await asyncio.to_thread(client.sock.sendall, client.records(payload))
        await until(lambda: len(app.received) == size)
        assert bytes(app.received) == payload
        layer.close()
        await asyncio.wait_for(app.lost, 20)
        client.sock.close()

    run_on(loop_name, main)


# pauses and ends ---------------------------------------------------------------------------


@pytest.mark.parametrize("loop_name", LOOPS)
def test_records_read_before_a_pause_come_before_those_read_after_it(
    tls: Contexts, loop_name: str
) -> None:
    """What was read before the application paused waits in the layer; the socket,
    resumed, may have more at once. The older records go first: fed after the newer,
    they would fail to decrypt and cut the connection."""

    async def main() -> None:
        server = Server(tls[0])
        layer, app, client = await connected(server, tls[1], pause_on_data=True)
        first, second = os.urandom(60000), os.urandom(60000)
        # one read of the socket's, as the transport hands it over: the application
        # pauses at its first record, and the layer holds the rest
        layer.data_received(client.records(first))
        assert 0 < len(app.received) < len(first)
        await asyncio.to_thread(client.sock.sendall, client.records(second))
        await asyncio.sleep(0.3)  # on the server's socket, unread
        app.pause_on_data = False
        layer.resume_reading()
        await until(lambda: len(app.received) == len(first + second) or app.lost.done())
        assert bytes(app.received) == first + second
        assert not app.lost.done()
        layer.close()
        await asyncio.wait_for(app.lost, 20)
        client.sock.close()

    run_on(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_clean_close_read_while_paused_loses_no_data(tls: Contexts, loop_name: str) -> None:
    """The peer sends, closes with close_notify and ends its stream while the
    application is paused: on resuming it gets all of it, then the end."""

    async def main() -> None:
        server = Server(tls[0])
        layer, app, client = await connected(server, tls[1], pause_on_data=True)
        first, second = os.urandom(60000), os.urandom(60000)
        # one read of the socket's, as the transport hands it over: the application
        # pauses at its first record, and the layer holds the rest
        layer.data_received(client.records(first))
        assert 0 < len(app.received) < len(first)
        records = client.records(second)
        with pytest.raises(ssl.SSLWantReadError):
            client.tls.unwrap()  # close_notify, after the second records
        await asyncio.to_thread(client.sock.sendall, records + client.outgoing.read())
        client.sock.shutdown(socket.SHUT_WR)
        await asyncio.sleep(0.3)
        app.pause_on_data = False
        layer.resume_reading()
        exc = await asyncio.wait_for(app.lost, 20)
        assert bytes(app.received) == first + second
        assert app.eof_after == len(first + second)
        assert exc is None
        client.sock.close()

    run_on(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_an_eof_without_close_notify_is_not_a_clean_end(tls: Contexts, loop_name: str) -> None:
    """A TCP end with no close_notify may be an attacker's cut: the application gets
    what was whole, then an error, never the end of a stream it could take as
    complete."""

    async def main() -> None:
        server = Server(tls[0])
        _layer, app, client = await connected(server, tls[1])
        await asyncio.to_thread(client.sock.sendall, client.records(b"partial"))
        await until(lambda: app.received == b"partial")
        client.sock.shutdown(socket.SHUT_WR)
        exc = await asyncio.wait_for(app.lost, 20)
        assert app.eof_after is None
        assert isinstance(exc, OSError), exc
        client.sock.close()

    run_on(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_extra_info_the_gateway_and_websockets_read(tls: Contexts, loop_name: str) -> None:
    async def main() -> None:
        server = Server(tls[0])
        layer, app, client = await connected(server, tls[1])
        assert layer.get_extra_info("sslcontext") is tls[0]
        assert layer.get_extra_info("ssl_object").version() == "TLSv1.3"
        assert layer.get_extra_info("peername") == client.sock.getsockname()
        assert layer.get_extra_info("sockname") == client.sock.getpeername()
        assert layer.get_extra_info("socket").getpeername() == client.sock.getsockname()
        assert layer.get_extra_info("cipher") == client.tls.cipher()
        assert not layer.get_extra_info("peercert")  # agents show no certificate
        assert layer.get_extra_info("nonesuch", 7) == 7
        assert layer.get_protocol() is app
        client.sock.close()
        await asyncio.wait_for(app.lost, 20)

    run_on(loop_name, main)


# hostile peers -----------------------------------------------------------------------------


def _record(content_type: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack("!BHH", content_type, 0x0303, len(body) if length is None else length) + body


async def _hostile(port: int, opening: bytes, context: ssl.SSLContext | None) -> bytes:
    """Connects (through the handshake if ``context``), sends ``opening`` on the TCP
    stream, and returns what the server sent before it cut the connection."""

    def run() -> bytes:
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        if context is not None:
            client = RawClient.__new__(RawClient)
            client.sock = sock
            client.incoming, client.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            client.tls = context.wrap_bio(client.incoming, client.outgoing)
            client.handshake()
        sock.sendall(opening)
        got = bytearray()
        try:
            while data := sock.recv(65536):
                got += data
        except ConnectionResetError:
            pass
        sock.close()
        return bytes(got)

    return await asyncio.to_thread(run)


HOSTILE = {
    "garbage_hello": (b"\x00" * 3 + os.urandom(600), False),
    "http_instead": (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", False),
    "truncated_hello": (_record(22, b"\x01\x00\x10\x00" + b"\x03\x03"), False),
    "hello_of_64k": (_record(22, b"\x01\xff\xff\xff" + b"\x00" * 16000), False),
    "overlong_record": (_record(23, b"\x00" * 32, length=0xFFFF), True),
    "record_of_18k": (_record(23, os.urandom(18 * 1024)), True),
    "plaintext_alert": (_record(21, b"\x02\x28"), True),
    "plaintext_handshake": (_record(22, b"\x00\x00\x00\x00"), True),
    "unknown_type": (_record(99, b"x" * 20), True),
    "forged_appdata": (_record(23, os.urandom(64)), True),
    "empty_records": (_record(23, b"") * 1000, True),
}


def _gate(context: ssl.SSLContext, timeout: float) -> tuple[HandshakeGate, int, list[App]]:
    """The agent port's gate on a free loopback port, each connection it hands over
    served by an ``App`` of the list; its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    apps: list[App] = []

    def factory() -> asyncio.Protocol:
        apps.append(App())
        return apps[-1]

    gate = HandshakeGate(sock, context, factory, HandshakeLimits(timeout=timeout))
    gate.start(128)
    return gate, sock.getsockname()[1], apps


@pytest.mark.parametrize("loop_name", LOOPS)
def test_hostile_peers_cost_only_their_own_connection(tls: Contexts, loop_name: str) -> None:
    """Each hostile peer, through the port's gate, is cut; an agent connected
    alongside keeps exchanging records, and nothing reaches the loop's handler."""

    async def main() -> None:
        gate, port, apps = _gate(tls[0], timeout=2.0)
        agent = RawClient(port, tls[1])
        await asyncio.to_thread(agent.handshake)
        await until(lambda: len(apps) == 1)
        healthy = apps[0]
        sent = b""
        for name, (opening, handshaken) in HOSTILE.items():
            await asyncio.wait_for(_hostile(port, opening, tls[1] if handshaken else None), 20)
            message = name.encode()
            await asyncio.to_thread(agent.sock.sendall, agent.records(message))
            sent += message
            await until(lambda sent=sent: bytes(healthy.received) == sent)  # type: ignore[misc]
        for app in apps[1:]:
            await asyncio.wait_for(app.lost, 20)
            assert app.received == b""
        assert not healthy.lost.done()
        await until(lambda: gate.in_flight == 0)
        gate.close()
        await gate.wait_closed()
        agent.sock.close()
        await asyncio.wait_for(healthy.lost, 20)

    run_on(loop_name, main)


def _key_update_requester(tls: ssl.SSLObject) -> Callable[[], None]:
    """A function that queues a TLS 1.3 KeyUpdate asking ``tls``'s peer to update its
    own keys too: OpenSSL answers each with one of its own, written whatever its
    application does. Python has no call for it; libssl's ``SSL_key_update`` takes
    the ``SSL *`` that CPython keeps right after the object's header and its socket's
    weak reference (checked against the object's version before any use)."""
    if sys.implementation.name != "cpython":
        pytest.skip("the SSL pointer is read from CPython's object layout")
    try:
        libssl = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]
        key_update, get_version = libssl.SSL_key_update, libssl.SSL_get_version
    except (OSError, AttributeError):
        pytest.skip("libssl's SSL_key_update is not reachable")
    key_update.argtypes, key_update.restype = [ctypes.c_void_p, ctypes.c_int], ctypes.c_int
    get_version.argtypes, get_version.restype = [ctypes.c_void_p], ctypes.c_char_p
    inner = tls._sslobj  # type: ignore[attr-defined]
    pointer = ctypes.c_void_p.from_address(id(inner) + 3 * ctypes.sizeof(ctypes.c_void_p))
    if not pointer.value or get_version(pointer.value) != tls.version().encode():  # type: ignore[union-attr]
        pytest.skip("no SSL pointer where CPython keeps it")

    def request() -> None:
        assert key_update(pointer.value, 1) == 1  # SSL_KEY_UPDATE_REQUESTED
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()  # writes it to the BIO

    return request


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _uvicorn_http() -> Callable[[], asyncio.Protocol]:
    """uvicorn's HTTP protocol as the agent port makes it for each connection (enrollment
    and the bootstrap document are served through it), with an app that answers "ok"."""
    config = uvicorn.Config(_hello, lifespan="off", log_level="warning")
    config.load()
    state = ServerState()
    # the flood and its answers take longer than the headers' usual 10 s (not tested here)
    guarded = protocol_class(ConnectionLimits(header_timeout=120))
    return lambda: guarded(config=config, server_state=state, app_state={})


# the agent port runs on uvloop: every application there; the standard loop once
@pytest.mark.parametrize(
    ("loop_name", "application"),
    [
        ("uvloop", "reads_on"),
        ("uvloop", "pauses_and_resumes"),
        ("uvloop", "uvicorn_http"),
        ("asyncio", "pauses_and_resumes"),
    ],
)
def test_a_peer_that_sends_and_never_reads_is_not_read_either(
    tls: Contexts, loop_name: str, application: str
) -> None:
    """KeyUpdates asking for one back, sent by a peer that never reads: OpenSSL answers
    each whatever the application does, and an application that keeps reading while
    told to pause writing (uvicorn's HTTP protocol before a request, or one that
    resumes its own reading meanwhile) never stops the flood, so the answers would pile
    up in the server for as long as the peer sends. The layer stops reading while its
    writes are paused: the peer's sends stop at the sockets' buffers. Once the peer
    reads, everything is answered (an application's own pause still holds) and the
    connection goes on."""
    http = application == "uvicorn_http"

    async def main() -> None:
        server = Server(tls[0])

        async def serve() -> TLSLayer:
            if not http:
                return await server.serve_one()
            conn, _ = await asyncio.get_running_loop().sock_accept(server.sock)
            return await start_tls(conn, tls[0], _uvicorn_http(), 10.0)

        serving = asyncio.ensure_future(serve())
        # small socket buffers on both sides: what does not fit in them must wait in
        # the peer, not in the server's memory (loopback's would hold megabytes)
        client = RawClient(server.port, tls[1], receive_buffer=4096)
        await asyncio.to_thread(client.handshake)
        layer = await serving
        app = None if http else server.apps[-1]
        layer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        request = _key_update_requester(client.tls)
        # a byte of data after each batch for the test's application (it counts them);
        # uvicorn's gets none: a connection before its first request
        data = b"" if http else b"."
        batches = 0
        unsent = b""

        def flood(seconds: float) -> None:
            """KeyUpdates (~27 bytes each) in batches of 200, for ``seconds``; what the
            socket did not take by then is sent once the peer reads."""
            nonlocal batches, unsent
            client.sock.settimeout(0.05)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if not unsent:
                    for _ in range(200):
                        request()
                    unsent = client.outgoing.read() + (client.records(data) if data else b"")
                    batches += 1
                with contextlib.suppress(TimeoutError):
                    unsent = unsent[client.sock.send(unsent) :]

        async def toggle() -> None:
            # as uvicorn's request cycle does: reading resumed whenever it waits for a body
            while True:
                layer.pause_reading()
                await asyncio.sleep(0.01)
                layer.resume_reading()
                await asyncio.sleep(0.01)

        toggling = asyncio.ensure_future(toggle()) if application == "pauses_and_resumes" else None
        await asyncio.to_thread(flood, 3.0)
        if toggling is not None:
            toggling.cancel()
            await asyncio.gather(toggling, return_exceptions=True)
            layer.resume_reading()
        await asyncio.sleep(0.3)  # what waits in the server's socket, read if it will be
        buffered = layer.get_write_buffer_size()
        high = layer.get_write_buffer_limits()[1]
        if http:
            assert cast(GuardedHttpProtocol, layer.get_protocol()).flow.write_paused
        else:
            assert app is not None and app.paused_writing > app.resumed_writing
        # the high-water mark and the answers to the records of one slice fed to
        # OpenSSL (an answer is no larger than the KeyUpdate it answers); unpaused,
        # megabytes by now, and more the longer the peer sends
        assert buffered < high + 64 * 1024, f"{buffered} bytes buffered"
        # and what was read but not fed: at most the rest of the read the pause came in
        # (256 KiB at most on both loops) and a slice in OpenSSL's BIO
        held = layer.get_read_buffer_size()
        assert held <= 256 * 1024 + SLICE, f"{held} bytes read and held"
        assert not layer.is_closing()

        # the peer reads at last: the server resumes, answers the rest, and data flows
        stop, ask = threading.Event(), threading.Event()
        got = bytearray()

        def read_on() -> None:
            """Reads; sends what is unsent, and a request once ``ask`` is set (the TLS
            object is this thread's alone from here on)."""
            nonlocal unsent
            while not stop.is_set():
                if ask.is_set():
                    ask.clear()
                    unsent += client.records(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                if unsent:
                    with contextlib.suppress(TimeoutError):
                        unsent = unsent[client.sock.send(unsent) :]
                try:
                    while chunk := client.tls.read(65536):
                        got.extend(chunk)
                    return  # the server's close_notify
                except ssl.SSLWantReadError:
                    pass
                with contextlib.suppress(TimeoutError):
                    data = client.sock.recv(1 << 20)
                    if not data:
                        return
                    client.incoming.write(data)

        if application == "pauses_and_resumes":
            layer.pause_reading()
        reading = asyncio.ensure_future(asyncio.to_thread(read_on))
        try:
            if application == "pauses_and_resumes":
                assert app is not None
                # the peer's reading resumes the writes, not the application's reading
                await until(lambda: app.resumed_writing == app.paused_writing, timeout=60)
                delivered = len(app.received)
                await asyncio.sleep(0.3)
                assert len(app.received) == delivered and not layer.is_reading()
                layer.resume_reading()
            if http:
                await until(lambda: not unsent, timeout=60)
                await asyncio.sleep(0.5)  # the KeyUpdates still unread, answered
                ask.set()
                await until(lambda: b"\r\nok\r\n" in got, timeout=60)
                assert got.startswith(b"HTTP/1.1 200 OK")
            else:
                assert app is not None
                await until(lambda: len(app.received) == batches, timeout=60)
                assert bytes(app.received) == b"." * batches
                await until(lambda: app.resumed_writing == app.paused_writing)
                layer.write(b"still here")
                await until(lambda: bytes(got) == b"still here")
        finally:
            stop.set()
            await reading
        # (uvicorn's keep-alive clock may have closed its connection by now)
        assert http or not layer.is_closing()
        layer.close()
        if app is not None:
            await asyncio.wait_for(app.lost, 20)
        client.sock.close()

    run_on(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_close_the_peer_takes_nothing_of_is_cut_and_a_slow_reader_gets_it_all(
    tls: Contexts, loop_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A close waits for what is still to send; a peer that never reads would keep the
    connection, and that much of the server's memory, for good. One that reads, however
    slowly, gets every byte and the close_notify."""
    monkeypatch.setattr(tlslayer, "CLOSE_STALL", 0.5)

    async def main() -> None:
        server = Server(tls[0])

        async def connect() -> tuple[TLSLayer, App, RawClient]:
            serving = asyncio.ensure_future(server.serve_one())
            # small socket buffers: what is sent waits in the server, not the kernels
            client = RawClient(server.port, tls[1], receive_buffer=4096)
            await asyncio.to_thread(client.handshake)
            layer = await serving
            sock = layer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            return layer, server.apps[-1], client

        layer, app, stuck = await connect()
        layer.write(os.urandom(1 << 20))
        layer.close()
        assert layer.get_write_buffer_size() > 0
        await asyncio.wait_for(app.lost, 20)
        stuck.sock.close()

        layer, app, slow = await connect()
        payload = os.urandom(128 * 1024)
        layer.write(payload)
        layer.close()

        # a few KiB every 20 ms: ~1 s for all of it
        assert await asyncio.to_thread(read_slowly, slow, 0.02) == payload
        assert await asyncio.wait_for(app.lost, 20) is None
        slow.sock.close()

    run_on(loop_name, main)


def read_slowly(client: RawClient, pause: float) -> bytes:
    """What ``client`` is sent up to the close_notify, 4 KiB at a time with ``pause``
    seconds after each; ConnectionError if the connection is cut before it."""
    got = bytearray()
    while True:
        try:
            chunk = client.tls.read(65536)
        except ssl.SSLWantReadError:
            data = client.sock.recv(4096)
            if not data:
                raise ConnectionError(f"cut after {len(got)} bytes") from None
            client.incoming.write(data)
            time.sleep(pause)
            continue
        if not chunk:
            return bytes(got)  # the close_notify
        got += chunk


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_slow_reader_behind_a_full_kernel_queue_gets_the_close_whole(
    tls: Contexts, loop_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a send queue of a megabyte or more in the kernel, the transport's own buffer
    does not shrink until the peer has taken a third of it or so: a peer that reads all
    along, slower than that in one stall, is not the one that takes nothing."""
    monkeypatch.setattr(tlslayer, "CLOSE_STALL", 0.5)

    async def main() -> None:
        server = Server(tls[0])
        serving = asyncio.ensure_future(server.serve_one())
        slow = RawClient(server.port, tls[1], receive_buffer=4096)
        await asyncio.to_thread(slow.handshake)
        layer = await serving
        app = server.apps[-1]
        layer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        payload = os.urandom(2_500_000)
        layer.write(payload)
        await asyncio.sleep(0.2)
        assert layer.get_write_buffer_size() > 0  # the kernel's queue is full
        layer.close()

        try:
            # ~800 KB/s
            assert await asyncio.to_thread(read_slowly, slow, 0.005) == payload
            assert await asyncio.wait_for(app.lost, 20) is None
        finally:
            slow.sock.close()

    run_on(loop_name, main)


# resources -----------------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("loop_name", LOOPS)
def test_nothing_is_kept_per_connection_after_many_cycles(tls: Contexts, loop_name: str) -> None:
    """Connections that end every way (clean, cut, failed or stalled handshakes),
    many times over: no descriptor, task or layer outlives them."""
    rounds = 40
    # within the default executor's threads (6 on two cores): the stalled four take 0.5 s
    together = 4

    async def main() -> None:
        gate, port, apps = _gate(tls[0], timeout=0.5)

        def clean() -> None:
            client = RawClient(port, tls[1])
            client.handshake()
            client.sock.sendall(client.records(b"hello"))
            with contextlib.suppress(ssl.SSLWantReadError):
                client.tls.unwrap()
            client.sock.sendall(client.outgoing.read())
            client.sock.recv(1024)
            client.sock.close()

        def cut() -> None:
            client = RawClient(port, tls[1])
            client.handshake()
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.sock.close()

        def garbage() -> None:
            s = socket.create_connection(("127.0.0.1", port), timeout=20)
            s.sendall(b"\x16\x03\x01\x00\x05hello")
            s.recv(1024)
            s.close()

        def stall() -> None:
            s = socket.create_connection(("127.0.0.1", port), timeout=20)
            s.recv(1024)  # the server cuts it at its timeout
            s.close()

        async def one_round(at_once: int = 1) -> None:
            ends = (clean, cut, garbage, stall) * at_once
            await asyncio.gather(*(asyncio.to_thread(f) for f in ends))

        await one_round()  # what is made once
        await until(lambda: gate.in_flight == 0 and all(a.lost.done() for a in apps))
        gc.collect()
        fds, tasks = _open_fds(), len(asyncio.all_tasks())
        # several rounds at once: each waits out the stalled handshake's timeout, and one
        # after another that wait alone was most of the test
        for _ in range(rounds // together):
            await one_round(together)
        await until(lambda: gate.in_flight == 0 and all(a.lost.done() for a in apps))
        await asyncio.sleep(0.2)
        gc.collect()
        assert _open_fds() == fds
        assert len(asyncio.all_tasks()) == tasks
        for app in apps:
            app.transport = None  # the test's own reference
        gc.collect()
        layers = [o for o in gc.get_objects() if isinstance(o, TLSLayer)]
        assert layers == []
        gate.close()
        await gate.wait_closed()

    run_on(loop_name, main)
