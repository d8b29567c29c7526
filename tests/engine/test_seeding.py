"""Which source hosts serve their own files to a step's targets (``engine.seeding``)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.engine.test_swarms import Directory, Link, Parts

from jobfleet.engine.file_gathering import Prepared, seed_timeout
from jobfleet.engine.seeding import Seeding
from jobfleet.engine.swarms import Swarms
from jobfleet.store.blobs import BlobStore
from jobfleet.store.database import Database
from jobfleet.store.inventory import Inventory


@pytest.fixture
async def store(database_url: str, tmp_path: Path) -> AsyncIterator[Parts]:
    db = Database(database_url)
    await db.migrate()
    try:
        yield Parts(BlobStore(db, tmp_path / "blobs"), Inventory(db))
    finally:
        await db.close()


def step(**config: Any) -> tuple[Any, dict[str, Any]]:
    row = SimpleNamespace(id=7, execute_count=1, timeout=600, rolling_config=None)
    return row, config


async def hosts(parts: Parts, cloud_of_source: int = 0) -> tuple[int, list[int]]:
    source = await parts.inventory.add(2, "127.1.0.1", cloud_of_source)
    targets = [await parts.inventory.add(2, f"127.1.0.{i}", 0) for i in range(2, 5)]
    return source.bk_host_id, [t.bk_host_id for t in targets]


def seeding(parts: Parts, links: dict[int, Link]) -> Seeding:
    swarms = Swarms(Directory(links), parts.blobs, parts.inventory, key=b"k" * 32)  # type: ignore[arg-type]
    return Seeding(Directory(links), parts.inventory, swarms)  # type: ignore[arg-type]


async def test_a_source_with_a_peer_port_seeds_targets_of_its_cloud(store: Parts) -> None:
    source, targets = await hosts(store)
    links = {h: Link(f"127.1.0.{h}:7070") for h in [source, *targets]}
    row, cfg = step(sources=[{"kind": "host", "host_ids": [source]}, {"kind": "blob"}])
    tickets = await seeding(store, links).plan(row, cfg, targets)
    assert list(tickets) == [source]
    ticket = tickets[source]
    assert ticket.transfer == f"7.1.s{source}" and ticket.peer == links[source].swarm
    expected = hmac.new(b"k" * 32, f"{ticket.transfer}|{ticket.expires}".encode(),
                        hashlib.sha256).hexdigest()
    assert ticket.token == expected


async def test_no_seeding_where_a_target_could_not_take_part(store: Parts) -> None:
    source, targets = await hosts(store)
    links = {h: Link(f"127.1.0.{h}:7070") for h in [source, *targets]}
    sources = [{"kind": "host", "host_ids": [source]}]
    plan = seeding(store, links).plan
    # a target without a peer port downloads from the server: the file must be there first
    without = {**links, targets[0]: Link("")}
    assert await seeding(store, without).plan(*step(sources=sources), targets) == {}
    assert await plan(*step(sources=sources, download_speed_limit=5), targets) == {}
    assert await plan(*step(sources=sources, upload_speed_limit=5), targets) == {}
    assert await plan(*step(sources=sources, direction="fetch"), targets) == {}
    assert await plan(*step(sources=sources), targets[:1]) == {}
    # the source among the targets: its own download would share the transfer
    assert await plan(*step(sources=[{"kind": "host", "host_ids": [targets[0]]}]),
                      targets) == {}
    rolling, cfg = step(sources=sources)
    rolling.rolling_config = {"expr": "50%"}
    assert await plan(rolling, cfg, targets) == {}
    # a source without a peer port uploads first, as before
    assert await seeding(store, {**links, source: Link("")}).plan(
        *step(sources=sources), targets) == {}


async def test_no_seeding_across_cloud_areas(store: Parts) -> None:
    source, targets = await hosts(store, cloud_of_source=1)
    links = {h: Link(f"127.1.0.{h}:7070") for h in [source, *targets]}
    assert await seeding(store, links).plan(
        *step(sources=[{"kind": "host", "host_ids": [source]}]), targets) == {}


def test_a_source_has_time_to_hash_what_it_listed() -> None:
    big = Prepared("", 1, "127.1.0.1", 0, "/f", "f", False, 0o644, size=500 * 1024 * 1024)
    folder = Prepared("", 1, "127.1.0.1", 0, "/d", "d", True, 0o755, size=10**12)
    assert seed_timeout([]) == 30.0
    assert seed_timeout([big, folder]) == 40.0
