"""A seeded file wanted on one node, or lost on another, is known on every node of a
cluster: real Redis buses between the nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from tests.bus.test_buses import Listener, bus, redis  # noqa: F401 (the redis fixture)
from tests.integration.cluster import Redis
from tests.integration.harness import eventually

from jobfleet.bus.local import LocalBus
from jobfleet.gateway.blob_news import BlobNews
from jobfleet.store.blobs import BlobStore
from jobfleet.store.database import Database
from jobfleet.store.secrets import Cipher


class Node:
    def __init__(self, server: Redis, name: str, cipher: Cipher, db: Database,
                 root: Path) -> None:
        self.bus = bus(server, name, cipher)
        self.blobs = BlobStore(db, root / name)
        self.news = BlobNews(self.bus, self.blobs)

    async def start(self) -> None:
        await self.bus.start(Listener())
        self.news.start()

    async def stop(self) -> None:
        await self.news.stop()
        await self.bus.stop()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'marks.db'}")
    try:
        yield database
    finally:
        await database.close()


async def test_a_demand_on_any_node_wakes_the_driving_node_and_a_loss_reaches_all(
        redis: Redis, db: Database, tmp_path: Path) -> None:  # noqa: F811
    cipher = Cipher(Fernet.generate_key())
    driving, other = Node(redis, "a", cipher, db, tmp_path), Node(redis, "b", cipher, db, tmp_path)
    late = Node(redis, "c", cipher, db, tmp_path)
    await driving.start()
    await other.start()
    try:
        wanted = driving.blobs.demand("blob1")
        # the target's request reaches the other node; it asks again while it gets 409
        async def woken() -> bool:
            other.blobs.asked_for("blob1")
            return await asyncio.sleep(0.2, wanted.is_set())
        await eventually(woken, timeout=10)
        driving.blobs.lost("blob1", "No such file")
        await eventually(lambda: asyncio.sleep(0.05, other.blobs.why_lost("blob1")), timeout=10)
        assert other.blobs.why_lost("blob1") == "No such file"
        # a node that missed the news learns it when a target asks it for the file
        await late.start()
        assert late.blobs.why_lost("blob1") is None

        async def told() -> str | None:
            late.blobs.asked_for("blob1")
            return await asyncio.sleep(0.2, late.blobs.why_lost("blob1"))
        assert await eventually(told, timeout=10) == "No such file"
    finally:
        await late.stop()
        await other.stop()
        await driving.stop()


async def test_a_node_on_its_own_keeps_its_marks_to_itself(db: Database, tmp_path: Path) -> None:
    local = LocalBus("solo")
    blobs = BlobStore(db, tmp_path / "solo")
    news = BlobNews(local, blobs)
    await local.start(Listener())
    news.start()
    try:
        assert blobs.others is None
        event = blobs.demand("blob1")
        blobs.asked_for("blob1")
        assert event.is_set()
    finally:
        await news.stop()
        await local.stop()


def test_lost_files_heard_from_others_are_kept_for_the_newest_only(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jobfleet.store.blobs.HEARD_LOST_KEPT", 3)
    blobs = BlobStore(db, tmp_path / "heard")
    for n in range(5):
        blobs.heard_lost(f"blob{n}", f"upload {n} failed")
    blobs.heard_lost("blob2", "heard again")  # news heard again counts as new
    assert [b for b in (f"blob{n}" for n in range(5)) if blobs.why_lost(b)] == [
        "blob2", "blob3", "blob4"]
    assert blobs.why_lost("blob2") == "heard again"


class AwayBus(LocalBus):
    """A bus whose Redis is away until told otherwise."""

    away = True
    clustered = True

    async def publish(self, topic: str, event: dict[str, object]) -> None:
        if self.away:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


async def test_news_not_sent_while_the_bus_is_away_is_one_line_not_one_per_demand(
        db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    away = AwayBus("a")
    news = BlobNews(away, BlobStore(db, tmp_path / "a"))
    with caplog.at_level("INFO", logger="jobfleet.gateway.blob_news"):
        for _ in range(20):  # a target asking every two seconds for 40 s
            news.tell("demand", "blob1", "")
            await asyncio.sleep(0.01)
        away.away = False
        news.tell("demand", "blob1", "")
        await asyncio.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("blob_news_not_sent kind=demand reason=Error 111 connecting to "
                        "127.0.0.1:6379. Connection refused."), lines
    assert lines[1].startswith("blob_news_sent_again after="), lines
    assert len(lines) == 2, lines
