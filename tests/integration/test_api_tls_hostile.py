"""The API port with ``tls_cert`` against hostile peers: one that floods TLS 1.3
KeyUpdate requests (each answered by one of the server's) and never reads, and one
address that opens handshakes and stalls them. Neither may grow the server's memory
with what it sends, nor keep another client from its answers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from tests.gateway.test_tlslayer_hostile import RawClient, _key_update_requester
from tests.integration.harness import STOP_WAIT, TEST_ENGINE, bound_socket, serve_on
from tests.integration.test_tls import self_signed

from jobfleet.server import EngineSettings, Server, ServerSettings

# what the flood sends at most: far more than the socket buffers on both ends hold
FLOOD_BYTES = 24 << 20
FLOOD_SECONDS = 5.0


@dataclass
class HttpsServer:
    node: Server
    listener: uvicorn.Server
    url: str
    port: int
    cert: Path

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=self.context(), trust_env=False,
                                 timeout=30)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[HttpsServer]:
    cert, key = self_signed(tmp_path)
    sock = bound_socket(nodelay=True)
    port = sock.getsockname()[1]
    settings = ServerSettings(data_dir=tmp_path / "server", port=port,
                              engine=EngineSettings(**TEST_ENGINE), heartbeat=2.0,
                              log_level="warning", tls_cert=cert, tls_key=key)
    node = Server(settings)
    listener = node.listener()
    task = await serve_on(listener, sock)
    try:
        yield HttpsServer(node, listener, settings.url, port, cert)
    finally:
        listener.should_exit = True
        await asyncio.wait_for(task, STOP_WAIT)


async def _answered_within(https: HttpsServer, seconds: float, rounds: int = 5) -> list[float]:
    """``rounds`` new connections each asking /healthz; how long each took."""
    took = []
    for _ in range(rounds):
        start = time.monotonic()
        async with https.client() as http:
            resp = await asyncio.wait_for(http.get("/healthz"), seconds)
        assert resp.status_code == 200
        took.append(time.monotonic() - start)
        await asyncio.sleep(0.1)
    return took


@pytest.mark.parametrize("flood_of", ["key_updates", "pipelined_requests"])
async def test_a_flood_that_never_reads_is_not_buffered(
    https: HttpsServer, flood_of: str
) -> None:
    """Each KeyUpdate the peer asks for is answered by the server's TLS whatever the
    HTTP protocol does, and each pipelined request by the API; a peer that never reads
    would have the server hold every answer, about as many bytes as it sends. The
    server stops reading it instead, and another client is answered as before
    meanwhile."""
    client = RawClient(https.port, https.context(), receive_buffer=4096)
    await asyncio.to_thread(client.handshake)
    state = https.listener.server_state

    async def connected() -> None:
        while not state.connections:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(connected(), 20)
    (flooded,) = state.connections
    transport = flooded.transport  # type: ignore[union-attr]
    # the server's socket holds little: what it cannot send must wait in the server
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    request = _key_update_requester(client.tls)
    pipelined = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 100
    sent = 0

    def batch() -> bytes:
        if flood_of == "pipelined_requests":
            return client.records(pipelined)
        for _ in range(500):
            request()
        return client.outgoing.read()

    def flood() -> None:
        nonlocal sent
        client.sock.settimeout(0.05)
        unsent = b""
        deadline = time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < deadline and sent < FLOOD_BYTES:
            if not unsent:
                unsent = batch()
            with contextlib.suppress(TimeoutError):
                n = client.sock.send(unsent)
                sent += n
                unsent = unsent[n:]

    # the same answers before the flood: what this machine's load costs them now, which
    # on a shared 2-core machine runs to seconds (and the flood's TLS records are made
    # in this process, beside the server)
    before = max(await _answered_within(https, 30.0, rounds=2))
    flooding = asyncio.ensure_future(asyncio.to_thread(flood))
    try:
        await asyncio.sleep(0.5)
        # another client, on new connections, is answered promptly throughout
        took = await _answered_within(https, 5.0 + 3 * before)
        assert max(took) < 2.0 + 3 * before, (took, before)
        await flooding
        await asyncio.sleep(0.3)  # what waits in the server's socket, read if it will be
        buffered = transport.get_write_buffer_size()
        # the socket's high-water mark and the answers to one slice of records; without
        # the pause, what the flood sent less what the kernels' buffers hold
        assert buffered < 1 << 20, f"{buffered} bytes buffered after {sent} sent"
    finally:
        client.sock.close()


async def test_one_address_stalling_handshakes_keeps_no_other_client_out(
    https: HttpsServer,
) -> None:
    """More stalled handshakes from one address than the API port has slots: a client
    from another address is still answered, and each stalled one is cut at the gate's
    timeout (asyncio's own waits 60 s)."""
    limits = https.node.api_handshake_limits
    stalled: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(limits.slots + 16):
            stalled.append(await asyncio.open_connection(
                "127.0.0.1", https.port, local_addr=("127.0.0.2", 0)))
        took = await _answered_within(https, 5.0, rounds=3)
        assert max(took) < 2.0, took
        reader = stalled[0][0]
        assert await asyncio.wait_for(reader.read(), limits.timeout + 20) == b""
    finally:
        for _, writer in stalled:
            writer.close()
