"""Peer-to-peer file distribution among real agents: pieces from peers, checked, with
the server as the fallback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from pathlib import Path
from typing import Any

from tests.integration.harness import Running
from tests.integration.test_file_transfer import run_transfer, transfer_body

from jobfleet.agent.peers import (
    ANSWER,
    MAGIC,
    OK,
    REFUSED,
    REQUEST,
    PeerLink,
    PeerServer,
    encode_request,
)
from jobfleet.domain.protocol import PIECE_SIZE

SOURCE = "127.0.0.2"
TARGETS = ["127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"]
PEERS = {ip: {"peer_port": 0, "peer_listen": ip, "peer_address": ip} for ip in TARGETS}
# six pieces and a short last one
SIZE = 5 * PIECE_SIZE + 12345


def payload(path: Path) -> str:
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def swarm_bytes(running: Running, ips: list[str]) -> tuple[int, int]:
    server = sum(running.agents[ip][0].files.swarm_bytes["server"] for ip in ips)
    peers = sum(running.agents[ip][0].files.swarm_bytes["peers"] for ip in ips)
    return server, peers


async def send(running: Running, tmp_path: Path, targets: list[str]) -> dict[str, Any]:
    source = tmp_path / "payload.bin"
    digest = payload(source)
    dest = tmp_path / "dest"
    _sub, data = await run_transfer(
        running, transfer_body([str(source)], [SOURCE], targets, f"{dest}/[FILESRCIP]/"))
    assert data["job_instance"]["status"] == 3, data
    for ip in targets:
        received = dest / f"0_{SOURCE}" / "payload.bin"
        assert hashlib.sha256(received.read_bytes()).hexdigest() == digest, ip
    return data


async def test_targets_share_pieces_and_the_server_sends_each_about_once(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents([SOURCE, *TARGETS], settings_of=PEERS)
    await send(running, tmp_path, TARGETS)
    from_server, from_peers = swarm_bytes(running, TARGETS)
    # every byte came from somewhere, and most of it not from the server
    assert from_server + from_peers == SIZE * len(TARGETS)
    assert from_server < 2 * SIZE, (from_server, from_peers)
    served = sum(running.agents[ip][0].peers.served_bytes  # type: ignore[union-attr]
                 for ip in TARGETS)
    assert served == from_peers


async def test_a_lying_peer_is_dropped_and_the_file_is_still_right(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents([SOURCE, *TARGETS], settings_of=PEERS)
    liar = running.agents[TARGETS[0]][0].peers
    assert liar is not None
    honest = PeerServer._handle

    async def lie(self: PeerServer, request: dict[str, Any], writer: Any) -> bool:
        if request.get("op") != "get":
            return await honest(self, request, writer)
        share = self.shares.get(str(request.get("x")))
        item = share.items.get(request.get("n")) if share else None  # type: ignore[arg-type]
        if item is None or not item.have[int(request.get("i") or 0)]:
            return await honest(self, request, writer)
        length = item.span(int(request["i"]))[1]
        writer.write(ANSWER.pack(OK, length) + os.urandom(length))
        await writer.drain()
        return True

    liar._handle = lie.__get__(liar)  # type: ignore[method-assign]
    await send(running, tmp_path, TARGETS)
    from_server, from_peers = swarm_bytes(running, TARGETS)
    assert from_server + from_peers == SIZE * len(TARGETS)


async def test_a_dead_peer_is_dropped_and_its_pieces_come_from_the_server(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents([SOURCE, *TARGETS], settings_of=PEERS)
    dead = running.agents[TARGETS[0]][0].peers
    assert dead is not None
    # the agent still runs its task; nobody can reach its peer port any more
    await dead.close()
    await send(running, tmp_path, TARGETS)
    from_server, from_peers = swarm_bytes(running, TARGETS)
    assert from_server + from_peers == SIZE * len(TARGETS)
    assert from_server >= SIZE  # the dead member's seed pieces were fetched again
    assert dead.served_bytes == 0


async def test_without_peer_ports_everything_comes_from_the_server(
        running: Running, tmp_path: Path) -> None:
    only_one = {TARGETS[0]: PEERS[TARGETS[0]]}
    await running.start_agents([SOURCE, *TARGETS[:2]], settings_of=only_one)
    await send(running, tmp_path, TARGETS[:2])
    # a swarm needs two members: nobody fetched a piece
    assert swarm_bytes(running, TARGETS[:2]) == (0, 0)


async def test_hostile_requests_to_an_agents_peer_port_change_nothing(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents([SOURCE, *TARGETS[:2]], settings_of=PEERS)
    await send(running, tmp_path, TARGETS[:2])
    served = running.agents[TARGETS[0]][0].peers
    assert served is not None
    # the finished transfer is still offered for a while, to peers still fetching
    (transfer, share), = served.shares.items()
    port = served.port

    def hostile() -> list[bytes]:
        answers = []
        for frame in (
            encode_request({"op": "get", "x": transfer, "t": "0" * 64, "n": 0, "i": 0}),
            encode_request({"op": "get", "x": transfer, "t": share.token, "n": 0, "i": 99}),
            encode_request({"op": "get", "x": transfer, "t": share.token, "n": 5, "i": 0}),
            REQUEST.pack(MAGIC, 1 << 30),
        ):
            with socket.create_connection((TARGETS[0], port), timeout=10) as sock:
                sock.sendall(frame)
                head = sock.recv(ANSWER.size, socket.MSG_WAITALL)
                answers.append(head[:1])
        return answers

    assert await asyncio.to_thread(hostile) == [bytes([REFUSED])] * 4
    good = PeerLink(f"{TARGETS[0]}:{port}", transfer, share.token)
    try:
        piece = await asyncio.to_thread(good.get, 0, 0, bytearray(PIECE_SIZE))
    finally:
        good.close()
    assert piece is not None and len(piece) == PIECE_SIZE
    # and the agent goes on working
    await send(running, tmp_path, TARGETS[:2])
