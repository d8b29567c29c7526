"""The tracker's part of peer-to-peer files: who is in a transfer's swarm, with which
pieces and token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobfleet.domain import protocol
from jobfleet.domain.pieces import PIECE_SIZE, PieceHasher, piece_span
from jobfleet.engine.swarms import Swarms
from jobfleet.store.blobs import BlobStore, hash_pieces
from jobfleet.store.database import Database
from jobfleet.store.inventory import Inventory


@dataclass
class Link:
    swarm: str


class Directory:
    def __init__(self, links: dict[int, Link]) -> None:
        self.links = links

    def for_host(self, bk_host_id: int) -> Link | None:
        return self.links.get(bk_host_id)

    async def refresh(self, hosts: list[int]) -> bool:
        return True


@dataclass
class Parts:
    blobs: BlobStore
    inventory: Inventory


@pytest.fixture
async def parts(database_url: str, tmp_path: Path) -> AsyncIterator[Parts]:
    db = Database(database_url)
    await db.migrate()
    try:
        yield Parts(BlobStore(db, tmp_path / "blobs"), Inventory(db))
    finally:
        await db.close()


def item(n: int, blob: str, size: int, *, is_dir: bool = False) -> protocol.DownloadItem:
    return {"n": n, "blob": blob, "dest": f"/tmp/x{n}", "size": size, "sha256": None,
            "mode": 0o644, "is_dir": is_dir, "src": "0.0.0.0:/x"}


async def test_pieces_are_hashed_once_as_the_blob_is_stored(parts: Parts) -> None:
    data = os.urandom(2 * PIECE_SIZE + 5)
    blob = await parts.blobs.create(name="f", kind="upload")
    await parts.blobs.store_bytes(blob, data)
    kept = parts.blobs.pieces_path(blob)
    assert kept.exists()
    digests = await parts.blobs.pieces(blob)
    assert digests == [hashlib.sha256(data[o:o + n]).digest()
                       for o, n in (piece_span(i, len(data)) for i in range(3))]
    assert hash_pieces(parts.blobs.path(blob)) == digests
    # a blob stored before pieces existed is hashed on first use, then kept
    kept.unlink()
    assert await parts.blobs.pieces(blob) == digests and kept.exists()


def test_piece_hasher_takes_any_chunking() -> None:
    data = os.urandom(3 * 1000 + 7)
    whole = PieceHasher(1000)
    whole.update(data)
    bits = PieceHasher(1000)
    for i in range(0, len(data), 333):
        bits.update(data[i:i + 333])
    assert whole.finish() == bits.finish() == [
        hashlib.sha256(data[i:i + 1000]).digest() for i in range(0, len(data), 1000)]


async def test_a_swarm_per_cloud_area_of_hosts_with_a_peer_port(parts: Parts) -> None:
    hosts = [await parts.inventory.add(2, f"127.0.0.{i}", 0) for i in range(1, 4)]
    alone = await parts.inventory.add(2, "127.0.0.9", 1)
    without = await parts.inventory.add(2, "127.0.0.10", 0)
    links = {h.bk_host_id: Link(f"{h.ip}:7070") for h in [*hosts, alone]}
    links[without.bk_host_id] = Link("")
    data = os.urandom(PIECE_SIZE + 1)
    blob = await parts.blobs.create(name="f", kind="upload")
    await parts.blobs.store_bytes(blob, data)
    swarms = Swarms(Directory(links), parts.blobs, parts.inventory, key=b"k" * 32)  # type: ignore[arg-type]
    items = [item(0, "", 0, is_dir=True), item(1, blob, len(data)), item(2, blob, 0)]
    plan = await swarms.plan("5.1", items, [h.bk_host_id for h in
                                            [*hosts, alone, without]], 60)
    assert set(plan) == {h.bk_host_id for h in hosts}
    members = [f"{h.ip}:7070" for h in hosts]
    for me, host in enumerate(hosts):
        swarm = plan[host.bk_host_id]["swarm"]
        assert swarm["members"] == members and swarm["me"] == me
        assert swarm["transfer"] == "5.1" and swarm["piece_size"] == PIECE_SIZE
        expected = hmac.new(b"k" * 32, f"5.1|{swarm['expires']}".encode(),
                            hashlib.sha256).hexdigest()
        assert swarm["token"] == expected
    assert "pieces" not in items[0] and "pieces" not in items[2]
    assert base64.b64decode(items[1]["pieces"]) == b"".join(await parts.blobs.pieces(blob))


async def test_no_swarm_without_two_members(parts: Parts) -> None:
    one = await parts.inventory.add(2, "127.0.0.1", 0)
    other = await parts.inventory.add(2, "127.0.0.2", 0)
    blob = await parts.blobs.create(name="f", kind="upload")
    await parts.blobs.store_bytes(blob, b"data")
    swarms = Swarms(Directory({one.bk_host_id: Link("127.0.0.1:7070")}), parts.blobs,  # type: ignore[arg-type]
                    parts.inventory)
    assert await swarms.plan("1.1", [item(0, blob, 4)], [one.bk_host_id, other.bk_host_id],
                             60) == {}


async def test_rolling_batches_form_swarms_of_their_own(parts: Parts) -> None:
    hosts = [await parts.inventory.add(2, f"127.0.1.{i}", 0) for i in range(1, 5)]
    links = {h.bk_host_id: Link(f"{h.ip}:7070") for h in hosts}
    blob = await parts.blobs.create(name="f", kind="upload")
    await parts.blobs.store_bytes(blob, b"data")
    swarms = Swarms(Directory(links), parts.blobs, parts.inventory)  # type: ignore[arg-type]
    batches = {h.bk_host_id: 1 + n // 2 for n, h in enumerate(hosts)}
    plan = await swarms.plan("2.1", [item(0, blob, 4)], list(batches), 60, batches)
    assert plan[hosts[0].bk_host_id]["swarm"]["members"] == ["127.0.1.1:7070", "127.0.1.2:7070"]
    assert plan[hosts[3].bk_host_id]["swarm"]["members"] == ["127.0.1.3:7070", "127.0.1.4:7070"]
