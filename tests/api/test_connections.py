"""The guarded HTTP protocol lets go of a closed connection at once."""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import pytest
import uvicorn
from uvicorn.server import ServerState

from jobfleet.api.connections import ConnectionLimits, GuardedHttpProtocol, protocol_class


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def no_collection() -> Iterator[None]:
    """Only reference counting frees objects: what waits for a collection stays."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Upgraded(asyncio.Protocol):
    """Stands in for the WebSocket protocol: holds the connection open, answers nothing."""

    held: ClassVar[list[asyncio.BaseTransport]] = []

    def __init__(self, **_: Any) -> None:
        pass

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.held.append(transport)


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, weakref.WeakSet[GuardedHttpProtocol]]]:
    made: weakref.WeakSet[GuardedHttpProtocol] = weakref.WeakSet()
    config = uvicorn.Config(hello, lifespan="off", log_level="warning")
    config.load()
    config.ws_protocol_class = Upgraded
    state = ServerState()
    guarded = protocol_class(ConnectionLimits())

    def factory() -> asyncio.Protocol:
        protocol = guarded(config=config, server_state=state, app_state={})
        made.add(protocol)
        return protocol

    listener = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1], made
    finally:
        listener.close()
        await listener.wait_closed()


async def request(port: int, headers: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    answer = await reader.readuntil(b"ok")
    writer.close()
    await writer.wait_closed()
    return answer


async def gone(made: weakref.WeakSet[GuardedHttpProtocol]) -> bool:
    for _ in range(100):
        if not made:
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.mark.parametrize("headers", [b"", b"Connection: close\r\n"], ids=["keep-alive", "close"])
async def test_a_closed_connection_is_freed_without_a_collection(
    no_collection: None,
    server: tuple[int, weakref.WeakSet[GuardedHttpProtocol]],
    headers: bytes,
) -> None:
    # the server collects young objects rarely: a connection that waits for a collection
    # holds its TLS state (~40 KiB of OpenSSL's per connection) until then
    port, made = server
    for _ in range(3):
        assert b"200 OK" in await request(port, headers)
    assert await gone(made), f"{len(made)} closed connections still held"


async def test_a_connection_upgraded_to_a_websocket_lets_go_of_its_http_protocol(
    no_collection: None, server: tuple[int, weakref.WeakSet[GuardedHttpProtocol]]
) -> None:
    # every agent's connection begins as an HTTP request: its HTTP protocol is done with once
    # the WebSocket protocol has the connection
    port, made = server
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    try:
        for _ in range(100):
            if Upgraded.held:
                break
            await asyncio.sleep(0.01)
        assert Upgraded.held, "the connection was not upgraded"
        assert await gone(made), "the upgraded connection's HTTP protocol is still held"
    finally:
        writer.close()
        await writer.wait_closed()
        for transport in Upgraded.held:
            transport.close()
        Upgraded.held.clear()


async def test_a_kept_alive_connection_reset_by_its_client_is_freed(
    server: tuple[int, weakref.WeakSet[GuardedHttpProtocol]],
) -> None:
    # a connection lost with an error (a reset, a TLS client gone without close_notify)
    # must not leave its keep-alive timer holding the protocol, and through it the app,
    # for the idle timeout
    port, made = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in await reader.readuntil(b"ok")
    sock = writer.get_extra_info("socket")
    # no lingering on close: the kernel answers with a reset, not a FIN
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    protocol = next(iter(made))
    writer.transport.abort()
    # uvicorn lets go of the parser last thing in ``connection_lost``
    for _ in range(1000):
        if protocol.parser is None:
            break
        await asyncio.sleep(0.01)
    assert protocol.parser is None, "the server never saw the reset"
    del protocol
    gc.collect()
    assert not made, "a connection reset by its client is still held"
