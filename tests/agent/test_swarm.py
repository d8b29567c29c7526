"""Downloading from a swarm: every piece checked, liars and dead peers dropped, the
server as the fallback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import pwd
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.agent.test_files import cancel_while_opening, slow_target_opens

from jobfleet.agent.files import TransferError
from jobfleet.agent.files.swarm import digests_of, swarm_download
from jobfleet.agent.peers import ItemShare, PeerServer
from jobfleet.domain import protocol
from jobfleet.domain.status import HostStatus

PIECE = 64 * 1024
TOKEN = "c" * 64
SELF = pwd.getpwuid(os.geteuid()).pw_name
DATA = os.urandom(6 * PIECE + 1000)


def pieces_of(data: bytes) -> str:
    return base64.b64encode(b"".join(
        hashlib.sha256(data[i:i + PIECE]).digest() for i in range(0, len(data), PIECE))).decode()


class Origin:
    """The server's side: ranges of the stored file, counted."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sent = 0

    async def __call__(self, offset: int, length: int, into: bytearray) -> memoryview:
        into[:length] = self.data[offset:offset + length]
        self.sent += length
        return memoryview(into)[:length]


def swarm(members: list[str], me: int) -> protocol.Swarm:
    return {"transfer": "3.1", "token": TOKEN, "expires": int(time.time()) + 60,
            "piece_size": PIECE, "members": members, "me": me}


@pytest.fixture
async def mine() -> AsyncIterator[PeerServer]:
    srv = PeerServer("127.0.0.1", 0, "127.0.0.1")
    await srv.start()
    yield srv
    await srv.close()


async def a_peer(tmp_path: Path, content: bytes, have: bytearray) -> PeerServer:
    """A peer holding ``content`` as the transfer's file (lying if it is not DATA)."""
    path = tmp_path / f"held-{os.urandom(4).hex()}"
    path.write_bytes(content)
    srv = PeerServer("127.0.0.1", 0, "127.0.0.1")
    await srv.start()
    srv.offer("3.1", TOKEN, time.time() + 60, 0,
              ItemShare(os.open(path, os.O_RDONLY), len(content), PIECE, have))
    return srv


async def fetch(tmp_path: Path, members: list[str], mine: PeerServer, origin: Origin,
                stall: float = 15.0) -> tuple[int, int]:
    dest = tmp_path / "out" / "file"
    result = await swarm_download(
        swarm(members, 0), 0, 0, str(dest), size=len(DATA), pieces=pieces_of(DATA),
        mode=0o640, account=SELF, create_dirs=True, server=origin, peers=mine, stall=stall)
    assert dest.read_bytes() == DATA
    assert oct(dest.stat().st_mode & 0o777) == "0o640"
    return result


def address(srv: PeerServer) -> str:
    return f"127.0.0.1:{srv.port}"


async def test_pieces_come_from_a_peer_and_the_rest_from_the_server(
        tmp_path: Path, mine: PeerServer) -> None:
    count = protocol.piece_count(len(DATA), PIECE)
    peer = await a_peer(tmp_path, DATA, bytearray([1] * count))
    try:
        origin = Origin(DATA)
        from_server, from_peers = await fetch(tmp_path, [address(mine), address(peer)], mine,
                                              origin)
    finally:
        await peer.close()
    # pieces 0, 2, 4, 6 are seeded to this member; the peer gives 1, 3, 5 at least
    assert from_peers >= 3 * PIECE and from_server + from_peers == len(DATA)
    assert origin.sent == from_server
    # what it got, it offers on: every piece checked and held
    assert bytes(mine.shares["3.1"].items[0].have) == b"\x01" * count


async def test_a_lying_peer_is_dropped(tmp_path: Path, mine: PeerServer) -> None:
    count = protocol.piece_count(len(DATA), PIECE)
    liar = await a_peer(tmp_path, os.urandom(len(DATA)), bytearray([1] * count))
    try:
        origin = Origin(DATA)
        from_server, from_peers = await fetch(tmp_path, [address(mine), address(liar)], mine,
                                              origin)
    finally:
        await liar.close()
    assert from_peers == 0 and from_server == len(DATA)


async def test_a_dead_peer_is_dropped(tmp_path: Path, mine: PeerServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"  # nobody listens there
    origin = Origin(DATA)
    assert await fetch(tmp_path, [address(mine), dead], mine, origin) == (len(DATA), 0)


async def test_a_peer_that_never_has_anything_stalls_into_the_server(
        tmp_path: Path, mine: PeerServer) -> None:
    count = protocol.piece_count(len(DATA), PIECE)
    empty = await a_peer(tmp_path, DATA, bytearray(count))
    try:
        origin = Origin(DATA)
        result = await fetch(tmp_path, [address(mine), address(empty)], mine, origin, stall=0.5)
    finally:
        await empty.close()
    assert result == (len(DATA), 0)


async def test_a_wrong_piece_from_the_server_fails_the_download(
        tmp_path: Path, mine: PeerServer) -> None:
    with pytest.raises(TransferError, match="does not match"):
        await swarm_download(
            swarm([address(mine)], 0), 0, 0, str(tmp_path / "f"), size=len(DATA),
            pieces=pieces_of(DATA), mode=0o644, account=SELF, create_dirs=True,
            server=Origin(os.urandom(len(DATA))), peers=mine)
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_a_piece_list_must_fit_the_size() -> None:
    assert len(digests_of(pieces_of(DATA), len(DATA), PIECE)) == 7
    with pytest.raises(ValueError, match="6 piece digests for 7"):
        digests_of(pieces_of(DATA[:6 * PIECE]), len(DATA), PIECE)


async def test_a_swarm_download_cancelled_while_its_file_is_opened_leaves_nothing(
        tmp_path: Path, mine: PeerServer, monkeypatch: pytest.MonkeyPatch) -> None:
    opening, opened = slow_target_opens(monkeypatch)
    fds = len(os.listdir("/proc/self/fd"))
    task = asyncio.create_task(swarm_download(
        swarm([address(mine)], 0), 0, 0, str(tmp_path / "f"), size=len(DATA),
        pieces=pieces_of(DATA), mode=0o644, account=SELF, create_dirs=True,
        server=Origin(DATA), peers=mine))
    await cancel_while_opening(task, opening, opened)
    assert not list(tmp_path.iterdir())
    assert len(os.listdir("/proc/self/fd")) == fds


async def test_a_swarm_download_follows_no_symlink_below_its_root(
        tmp_path: Path, mine: PeerServer) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "sub").symlink_to(outside)
    with pytest.raises(TransferError, match="is a symbolic link") as caught:
        await swarm_download(
            swarm([address(mine)], 0), 0, 0, str(root / "sub" / "f"), size=len(DATA),
            pieces=pieces_of(DATA), mode=0o644, account=SELF, create_dirs=True,
            server=Origin(DATA), peers=mine, root=str(root))
    assert caught.value.status == HostStatus.COPYFILE_FAILED
    assert not list(outside.iterdir())
