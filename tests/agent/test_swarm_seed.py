"""A source agent serving its own file to a swarm: its pieces hashed once, served,
checked by the targets; a lying or dead source dropped for the server."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.agent.test_swarm import DATA, PIECE, SELF, Origin, address, pieces_of, swarm

from jobfleet.agent.files import TransferError
from jobfleet.agent.files.seeding import seed_file
from jobfleet.agent.files.swarm import swarm_download
from jobfleet.agent.peers import ItemShare, PeerServer
from jobfleet.domain import protocol
from jobfleet.domain.status import HostStatus

SEED_TRANSFER = "3.1.s9"
SEED_TOKEN = "d" * 64


async def a_seed(tmp_path: Path, content: bytes) -> PeerServer:
    """The source agent: its whole file offered under the seed transfer, as item 2."""
    path = tmp_path / f"source-{os.urandom(4).hex()}"
    path.write_bytes(content)
    fd, size, digests = await seed_file(str(path), SELF, None, PIECE)
    srv = PeerServer("127.0.0.1", 0, "127.0.0.1")
    await srv.start()
    srv.offer(SEED_TRANSFER, SEED_TOKEN, time.time() + 60, 2,
              ItemShare(fd, size, PIECE, bytearray(b"\x01" * len(digests))))
    return srv


def seed_of(peer: str) -> protocol.ItemSeed:
    return {"peer": peer, "transfer": SEED_TRANSFER, "token": SEED_TOKEN, "n": 2}


async def fetch(tmp_path: Path, mine: PeerServer, seed: str, origin: Origin) -> tuple[int, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        # the other target of the swarm is gone: what it was to take, this one takes
        other = f"127.0.0.1:{sock.getsockname()[1]}"
    dest = tmp_path / "out" / "file"
    result = await swarm_download(
        swarm([address(mine), other], 0), 0, 0, str(dest), size=len(DATA),
        pieces=pieces_of(DATA), mode=0o640, account=SELF, create_dirs=True, server=origin,
        peers=mine, seed=seed_of(seed))
    assert dest.read_bytes() == DATA
    return result


@pytest.fixture
async def mine() -> AsyncIterator[PeerServer]:
    srv = PeerServer("127.0.0.1", 0, "127.0.0.1")
    await srv.start()
    yield srv
    await srv.close()


async def test_seed_file_hashes_every_piece_once(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    fd, size, digests = await seed_file(str(path), SELF, None, PIECE)
    try:
        assert size == len(DATA)
        assert digests == [hashlib.sha256(DATA[i:i + PIECE]).digest()
                           for i in range(0, len(DATA), PIECE)]
        assert os.pread(fd, 10, 0) == DATA[:10]
    finally:
        os.close(fd)


async def test_seed_file_refuses_what_the_upload_would(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    with pytest.raises(TransferError) as too_big:
        await seed_file(str(path), SELF, len(DATA) - 1, PIECE)
    assert too_big.value.status == HostStatus.GSE_FILE_SIZE_EXCEED
    with pytest.raises(TransferError) as missing:
        await seed_file(str(tmp_path / "nope"), SELF, None, PIECE)
    assert missing.value.status == HostStatus.COPYFILE_SOURCE_FILE_NOT_EXIST
    with pytest.raises(TransferError) as not_a_file:
        await seed_file(str(tmp_path), SELF, None, PIECE)
    assert not_a_file.value.status == HostStatus.COPYFILE_SOURCE_FILE_NOT_EXIST


async def test_what_the_server_would_send_comes_from_the_seed(
        tmp_path: Path, mine: PeerServer) -> None:
    seed = await a_seed(tmp_path, DATA)
    try:
        origin = Origin(DATA)
        from_server, from_peers = await fetch(tmp_path, mine, address(seed), origin)
    finally:
        await seed.close()
    assert (from_server, from_peers) == (0, len(DATA))
    assert origin.sent == 0 and seed.served_bytes == len(DATA)


async def test_a_lying_seed_is_dropped_for_the_server(tmp_path: Path, mine: PeerServer) -> None:
    liar = await a_seed(tmp_path, os.urandom(len(DATA)))
    try:
        origin = Origin(DATA)
        from_server, from_peers = await fetch(tmp_path, mine, address(liar), origin)
    finally:
        await liar.close()
    assert (from_server, from_peers) == (len(DATA), 0)


class Arriving(Origin):
    """The server's copy, still on its way for the first few asks (HTTP 409)."""

    def __init__(self, data: bytes, refusals: int) -> None:
        super().__init__(data)
        self.refusals = refusals

    async def __call__(self, offset: int, length: int, into: bytearray) -> memoryview:
        if self.refusals:
            self.refusals -= 1
            raise TransferError(HostStatus.GSE_FILE_ERROR, "fetch failed: HTTP 409")
        return await super().__call__(offset, length, into)


async def test_with_the_seed_gone_the_server_copy_is_waited_for(
        tmp_path: Path, mine: PeerServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        gone = f"127.0.0.1:{sock.getsockname()[1]}"
    origin = Arriving(DATA, 3)
    assert await fetch(tmp_path, mine, gone, origin) == (len(DATA), 0)
    assert origin.refusals == 0


async def test_without_a_seed_a_server_refusal_fails_at_once(
        tmp_path: Path, mine: PeerServer) -> None:
    with pytest.raises(TransferError, match="409"):
        await swarm_download(
            swarm([address(mine)], 0), 0, 0, str(tmp_path / "f"), size=len(DATA),
            pieces=pieces_of(DATA), mode=0o644, account=SELF, create_dirs=True,
            server=Arriving(DATA, 1), peers=mine)
