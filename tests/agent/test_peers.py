"""The agent's peer port: pieces served to holders of the transfer's token, and
nothing — without harm — to anyone else."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobfleet.agent import peers
from jobfleet.agent.peers import (
    ANSWER,
    MAGIC,
    REFUSED,
    REQUEST,
    ItemShare,
    PeerError,
    PeerLink,
    PeerServer,
    encode_request,
)

PIECE = 1024
TOKEN = "a" * 64


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[PeerServer, bytes]]:
    data = os.urandom(2 * PIECE + 100)
    path = tmp_path / "file"
    path.write_bytes(data)
    srv = PeerServer("127.0.0.1", 0, "127.0.0.1")
    await srv.start()
    fd = os.open(path, os.O_RDONLY)
    srv.offer("7.1", TOKEN, time.time() + 60, 0, ItemShare(fd, len(data), PIECE,
                                                           bytearray([1, 0, 1])))
    yield srv, data
    await srv.close()


def link(srv: PeerServer, transfer: str = "7.1", token: str = TOKEN) -> PeerLink:
    return PeerLink(f"127.0.0.1:{srv.port}", transfer, token, timeout=5)


async def test_have_and_get_checked_pieces(server: tuple[PeerServer, bytes]) -> None:
    srv, data = server
    peer = link(srv)
    try:
        assert await asyncio.to_thread(peer.have, 0) == b"\x01\x00\x01"
        into = bytearray(PIECE)
        got = await asyncio.to_thread(peer.get, 0, 2, into)
        assert got is not None and bytes(got) == data[2 * PIECE:]
        # a piece not held (yet) is no refusal: the connection stays
        assert await asyncio.to_thread(peer.get, 0, 1, into) is None
        got = await asyncio.to_thread(peer.get, 0, 0, into)
        assert got is not None and bytes(got) == data[:PIECE]
    finally:
        peer.close()
    for _ in range(100):  # counted once the server's sendfile call returns
        if srv.served_bytes == PIECE + 100:
            break
        await asyncio.sleep(0.01)
    assert srv.served_bytes == PIECE + 100


async def test_a_transfer_it_does_not_hold_gives_nothing(server: tuple[PeerServer, bytes]) -> None:
    srv, _ = server
    peer = link(srv, transfer="8.1")
    try:
        assert await asyncio.to_thread(peer.have, 0) == b""
        assert await asyncio.to_thread(peer.get, 0, 0, bytearray(PIECE)) is None
    finally:
        peer.close()


@pytest.mark.parametrize(("token", "n", "index", "reason"), [
    ("b" * 64, 0, 0, "bad token"),
    (TOKEN, 1, 0, "no such item"),
    (TOKEN, 0, 3, "out of range"),
    (TOKEN, 0, -1, "out of range"),
])
async def test_hostile_requests_are_refused(server: tuple[PeerServer, bytes], token: str,
                                            n: int, index: int, reason: str) -> None:
    srv, data = server
    peer = link(srv, token=token)
    with pytest.raises(PeerError, match=reason):
        await asyncio.to_thread(peer.get, n, index, bytearray(PIECE))
    # the agent serves the next peer as before
    good = link(srv)
    got = await asyncio.to_thread(good.get, 0, 0, bytearray(PIECE))
    good.close()
    assert got is not None and bytes(got) == data[:PIECE]


async def test_an_expired_token_is_refused(tmp_path: Path) -> None:
    srv = PeerServer("127.0.0.1", 0, "127.0.0.1")
    await srv.start()
    try:
        path = tmp_path / "f"
        path.write_bytes(b"x" * 10)
        srv.offer("1.1", TOKEN, time.time() - 1, 0,
                  ItemShare(os.open(path, os.O_RDONLY), 10, PIECE, bytearray([1])))
        with pytest.raises(PeerError, match="expired"):
            await asyncio.to_thread(link(srv, transfer="1.1").have, 0)
    finally:
        await srv.close()


def raw_answer(port: int, frame: bytes) -> tuple[int, bytes, bytes]:
    """Send ``frame``; (status, body, what follows before the close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(frame)
        head = sock.recv(ANSWER.size, socket.MSG_WAITALL)
        status, length = ANSWER.unpack(head)
        body = sock.recv(length, socket.MSG_WAITALL) if length else b""
        return status, body, sock.recv(10)


async def test_oversized_and_malformed_frames_are_refused(
        server: tuple[PeerServer, bytes]) -> None:
    srv, _ = server
    status, body, rest = await asyncio.to_thread(
        raw_answer, srv.port, REQUEST.pack(MAGIC, 10**9) + b"{}")
    assert status == REFUSED and b"over the limit" in body and rest == b""
    status, body, rest = await asyncio.to_thread(
        raw_answer, srv.port, REQUEST.pack(b"HTTP", 5) + b"hello")
    assert status == REFUSED and b"not a peer request" in body and rest == b""
    status, body, _ = await asyncio.to_thread(
        raw_answer, srv.port, REQUEST.pack(MAGIC, 5) + b"nope!")
    assert status == REFUSED and b"not JSON" in body
    status, body, _ = await asyncio.to_thread(
        raw_answer, srv.port, encode_request({"op": "delete", "x": "7.1", "t": TOKEN, "n": 0}))
    assert status == REFUSED and b"unknown request" in body


async def test_a_slow_request_is_cut_off(server: tuple[PeerServer, bytes],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    srv, data = server
    monkeypatch.setattr(peers, "REQUEST_TIMEOUT", 0.3)

    def slowloris() -> bytes:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(MAGIC[:2])
            return sock.recv(10)  # the server closes: b""

    assert await asyncio.to_thread(slowloris) == b""
    good = link(srv)
    got = await asyncio.to_thread(good.get, 0, 0, bytearray(PIECE))
    good.close()
    assert got is not None and bytes(got) == data[:PIECE]


async def test_a_share_is_released_after_the_linger(tmp_path: Path) -> None:
    srv = PeerServer("127.0.0.1", 0, "127.0.0.1", linger=0.1)
    await srv.start()
    try:
        path = tmp_path / "f"
        path.write_bytes(b"x" * 10)
        srv.offer("1.1", TOKEN, time.time() + 60, 0,
                  ItemShare(os.open(path, os.O_RDONLY), 10, PIECE, bytearray([1])))
        srv.finished("1.1")
        assert "1.1" in srv.shares
        await asyncio.sleep(0.3)
        assert "1.1" not in srv.shares
    finally:
        await srv.close()


async def test_a_connection_the_peer_closed_while_idle_is_dialled_again(
        server: tuple[PeerServer, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    srv, data = server
    monkeypatch.setattr(peers, "REQUEST_TIMEOUT", 0.2)
    peer = link(srv)
    try:
        assert await asyncio.to_thread(peer.have, 0) == b"\x01\x00\x01"
        await asyncio.sleep(0.5)  # the server hangs up the idle connection
        got = await asyncio.to_thread(peer.get, 0, 0, bytearray(PIECE))
        assert got is not None and bytes(got) == data[:PIECE]
    finally:
        peer.close()


async def test_a_share_nobody_finishes_is_dropped_when_its_token_expires(
        tmp_path: Path) -> None:
    # a seeding source whose step ended while it was away: no upload ever tells it
    # to stop, and the token no longer opens anything
    srv = PeerServer("127.0.0.1", 0, "127.0.0.1")
    await srv.start()
    try:
        path = tmp_path / "f"
        path.write_bytes(b"x" * 10)
        fd = os.open(path, os.O_RDONLY)
        srv.offer("1.1", TOKEN, time.time() + 0.2, 0, ItemShare(fd, 10, PIECE, bytearray([1])))
        assert "1.1" in srv.shares
        await asyncio.sleep(1.6)
        assert "1.1" not in srv.shares
        with pytest.raises(OSError):
            os.fstat(fd)
    finally:
        await srv.close()


async def test_a_deeply_nested_request_is_refused_as_not_json(
        server: tuple[PeerServer, bytes]) -> None:
    srv, _ = server
    nested = b"[" * 1020 + b"]" * 1020
    status, body, rest = await asyncio.to_thread(
        raw_answer, srv.port, REQUEST.pack(MAGIC, len(nested)) + nested)
    assert status == REFUSED and b"not JSON" in body and rest == b""
