"""The buses between nodes: the in-process one, and the Redis one on a real Redis server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from tests.integration.cluster import REDIS_SERVER, Redis
from tests.integration.harness import eventually

from jobfleet.bus.live import OVERFLOW, BusLive
from jobfleet.bus.local import LocalBus
from jobfleet.bus.redis import RedisBus, claim_cluster_keys
from jobfleet.store.secrets import Cipher


class Listener:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.presence_events: list[tuple[str, list[int], list[int]]] = []
        self.gone: list[tuple[str, list[int]]] = []
        self.reconnects = 0

    async def message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def presence(self, node: str, online: list[int], offline: list[int]) -> None:
        self.presence_events.append((node, online, offline))

    async def node_gone(self, node: str, hosts: list[int]) -> None:
        self.gone.append((node, hosts))

    def reconnected(self) -> None:
        self.reconnects += 1


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[Redis]:
    if REDIS_SERVER is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    server = Redis(tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def bus(redis: Redis, node: str, cipher: Cipher, node_ttl: float = 1.0, **kw: Any) -> RedisBus:
    return RedisBus(redis.url, node, seal=cipher.seal_bytes, unseal=cipher.open_bytes,
                    beat=0.2, node_ttl=node_ttl, resync=0.5, **kw)


async def test_local_bus_delivers_to_itself_and_fans_out_live_events() -> None:
    local = LocalBus("n1")
    listener = Listener()
    await local.start(listener)
    try:
        local.send("n1", {"k": "wake", "step": 1})
        local.send("elsewhere", {"k": "wake", "step": 2})  # no other node: dropped
        await eventually(lambda: asyncio.sleep(0, listener.messages))
        assert listener.messages == [{"k": "wake", "step": 1}]
        local.hold([5])
        assert local.holder(5) == "n1" and local.holder(6) is None
        events = local.subscribe("job:1")
        first = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)
        await local.publish("job:1", {"seq": 1})
        assert await asyncio.wait_for(first, 10) == {"seq": 1}
    finally:
        await local.stop()


async def test_messages_cross_sealed_and_in_order(redis: Redis) -> None:
    cipher = Cipher(Fernet.generate_key())
    a, b = bus(redis, "a", cipher), bus(redis, "b", cipher)
    la, lb = Listener(), Listener()
    await a.start(la)
    try:
        for i in range(5):
            a.send("b", {"k": "agent", "n": i, "msg": {"script": "echo s3cret-value"}})
        await a.flush()
        # b has not started: what waits for it in Redis is sealed
        raw = await a.redis.xrange("jf:inbox:b")
        assert raw and all(b"s3cret" not in fields[b"m"] for _id, fields in raw)
        await b.start(lb)
        await eventually(lambda: asyncio.sleep(0, len(lb.messages) == 5))
        assert [m["n"] for m in lb.messages] == [0, 1, 2, 3, 4]
        # handled entries are acknowledged and gone
        async def drained() -> bool:
            return int(await a.redis.xlen("jf:inbox:b")) == 0
        await eventually(drained)
    finally:
        await a.stop()
        await b.stop()


async def test_an_entry_sealed_with_another_key_is_dropped_alone(
        redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    ours, theirs = Cipher(Fernet.generate_key()), Cipher(Fernet.generate_key())
    stranger, a, b = bus(redis, "x", theirs), bus(redis, "a", ours), bus(redis, "b", ours)
    lb = Listener()
    await stranger.start(Listener())
    await a.start(Listener())
    try:
        stranger.send("b", {"k": "agent", "n": "forged"})
        await stranger.flush()
        a.send("b", {"k": "agent", "n": "real"})
        await a.flush()
        await b.start(lb)
        await eventually(lambda: asyncio.sleep(0, lb.messages))
        await asyncio.sleep(0.3)
        assert [m["n"] for m in lb.messages] == ["real"]
        # the operator is told why, and where to look
        assert any("bus_entry_unreadable reason=sealed with another secret key" in r.message
                   and "secret.key" in r.message for r in caplog.records), caplog.text
    finally:
        for node in (stranger, a, b):
            await node.stop()


async def test_presence_and_a_dead_node_taken_over(redis: Redis) -> None:
    cipher = Cipher(Fernet.generate_key())
    a, b = bus(redis, "a", cipher), bus(redis, "b", cipher)
    la, lb = Listener(), Listener()
    await a.start(la)
    await b.start(lb)
    try:
        b.hold([1, 2])
        await b.flush()
        await eventually(lambda: asyncio.sleep(0, a.holder(1) == "b" and a.holder(2) == "b"))
        assert ("b", [1, 2], []) in la.presence_events
        # b dies without a word, with a message for it still unread
        for task in b._tasks:
            task.cancel()
        # every loop ends, even when the Redis client swallowed the cancellation
        await asyncio.wait_for(asyncio.gather(*b._tasks, return_exceptions=True), 10)
        a.send("b", {"k": "agent", "host": 1, "msg": {}})
        await a.flush()
        await eventually(lambda: asyncio.sleep(0, la.gone), timeout=10)
        assert la.gone == [("b", [1, 2])]

        async def released() -> bool:
            # the take-over tells the listener first, then hands over b's messages and
            # then frees b's hosts: on a loaded machine the test gets between the steps.
            # What was left for b reaches a, marked as such; b's agents count as absent
            return (any(m.get("orphan") == "b" for m in la.messages)
                    and a.holder(1) is None and "b" not in a.live_nodes()
                    and await a.redis.hlen("jf:presence") == 0)
        await eventually(released, timeout=30)
    finally:
        await a.stop()
        await b.redis.aclose()


async def test_a_fractional_node_ttl_is_kept_to_the_millisecond(redis: Redis) -> None:
    """node_ttl is a float setting: Redis is given it in ms, not cut to whole seconds."""
    cipher = Cipher(Fernet.generate_key())
    a = RedisBus(redis.url, "a", seal=cipher.seal_bytes, unseal=cipher.open_bytes,
                 beat=30.0, node_ttl=1.5, resync=30.0)
    await a.start(Listener())
    try:
        await eventually(lambda: a.redis.exists("jf:node:a"))
        # whole seconds would give 1000 ms at most
        assert 1000 < await a.redis.pttl("jf:node:a") <= 1500
    finally:
        await a.stop()


async def test_a_redis_restart_is_noticed_and_presence_written_again(redis: Redis) -> None:
    cipher = Cipher(Fernet.generate_key())
    a = bus(redis, "a", cipher)
    la = Listener()
    await a.start(la)
    try:
        a.hold([7])
        await a.flush()
        await redis.stop()
        a.send("a", {"k": "wake", "step": 3})  # waits in memory while Redis is away
        await asyncio.sleep(0.5)
        await redis.start()
        await eventually(lambda: asyncio.sleep(0, la.reconnects >= 1), timeout=15)
        await eventually(lambda: asyncio.sleep(0, {"k": "wake", "step": 3} in la.messages),
                         timeout=15)
        assert (await a.redis.hget("jf:presence", "7")) == b"a"
    finally:
        await a.stop()


async def test_live_views_hear_events_again_after_a_redis_restart(redis: Redis) -> None:
    # a viewer watching a job must not be left on its slow re-reads for good
    cipher = Cipher(Fernet.generate_key())
    a = bus(redis, "a", cipher)
    await a.start(Listener())
    live = BusLive(a, resubscribe=(0.1, 0.2))
    seen: list[dict[str, Any]] = []

    async def watch() -> None:
        async for event in live.subscribe(["job:1"]):
            seen.append(event)

    watching = asyncio.ensure_future(watch())
    try:
        await asyncio.sleep(0.2)
        await a.publish("job:1", {"n": 1})
        await eventually(lambda: asyncio.sleep(0, {"n": 1} in seen), timeout=5)
        await redis.stop()
        await asyncio.sleep(0.5)
        await redis.start()

        async def heard() -> bool:
            with contextlib.suppress(Exception):
                await a.publish("job:1", {"n": 2})
            await asyncio.sleep(0.1)
            return {"n": 2} in seen
        await eventually(heard, timeout=20)
        # and it was told to read again what went by while Redis was away
        assert OVERFLOW in seen[seen.index({"n": 1}):], seen
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await a.stop()


async def test_redis_away_is_one_line_per_loop_and_one_when_back(
        redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    """Seconds without Redis: each loop of the bus says so once, not on every turn (a
    minute-long outage was some thousands of lines per node), and says when it is back."""
    cipher = Cipher(Fernet.generate_key())
    a = bus(redis, "a", cipher, cluster_keys={"secret.key": "check"})
    await a.start(Listener())
    try:
        assert await a.redis.hget("jf:cluster", "secret.key") == b"check"
        with caplog.at_level(logging.INFO, logger="jobfleet.bus.redis"):
            await redis.stop()
            a.send("b", {"k": "wake"})
            await asyncio.sleep(3.0)
            await redis.start()

            async def sent() -> bool:
                return int(await a.redis.xlen("jf:inbox:b")) == 1
            await eventually(sent, timeout=20)
            await asyncio.sleep(1.0)
        events = [r.getMessage().split(" ")[0] for r in caplog.records]
        for event in ("bus_send_waiting", "bus_read_waiting", "bus_beat_failed",
                      "bus_agents_feed_lost"):
            assert events.count(event) == 1, events
        assert "bus_send_resumed" in events and "bus_read_resumed" in events, events
        # the Redis that came back empty learnt the cluster's keys from the running node
        assert await a.redis.hget("jf:cluster", "secret.key") == b"check"
    finally:
        await a.stop()


async def test_a_node_that_reaches_redis_late_compares_its_keys_before_it_joins(
        redis: Redis) -> None:
    """Redis is away when ``b`` starts with keys that are not the cluster's, and comes
    back empty: ``a`` (which ran all along) writes the cluster's keys back, and ``b``,
    which waits a node_ttl before it would write its own into an empty Redis, finds
    them, says it is refused, and writes and sends nothing there."""
    cipher = Cipher(Fernet.generate_key())
    # as a server does before its bus starts
    assert await claim_cluster_keys(redis.url, {"secret.key": "check"}) == []
    # a's write-back comes within a beat (0.2 s) of Redis's return; a loaded machine has
    # stretched that past 1 s, so b waits 5 s: the order under test, not a race
    a = bus(redis, "a", cipher, node_ttl=5.0, cluster_keys={"secret.key": "check"})
    await a.start(Listener())
    refused: list[list[str]] = []
    b = bus(redis, "b", Cipher(Fernet.generate_key()), node_ttl=5.0,
            cluster_keys={"secret.key": "other"}, on_refused=refused.append)
    try:
        await redis.stop()
        await b.start(Listener())
        b.send("a", {"k": "wake"})
        b.hold([7])
        await redis.start()
        await eventually(lambda: asyncio.sleep(0, refused), timeout=20)
        assert refused == [["secret.key"]]
        assert await a.redis.hget("jf:cluster", "secret.key") == b"check"
        await asyncio.sleep(1.0)
        assert await a.redis.exists("jf:node:b", "jf:inbox:b") == 0
        assert not await a.redis.sismember("jf:nodes", "b")
        assert await a.redis.xlen("jf:inbox:a") == 0
        assert await a.redis.hget("jf:presence", "7") is None
    finally:
        await b.stop()
        await a.stop()


async def test_running_nodes_keep_their_keys_over_a_node_that_claimed_a_restarted_redis(
        redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    """Redis restarts empty and a node with other keys starts in the moment before the
    running node wrote the cluster's back: the running node is not the one refused (that
    would take the whole cluster down); it writes the cluster's keys back."""
    cipher = Cipher(Fernet.generate_key())
    refused: list[list[str]] = []
    a = RedisBus(redis.url, "a", seal=cipher.seal_bytes, unseal=cipher.open_bytes,
                 beat=3.0, node_ttl=10.0, cluster_keys={"secret.key": "check"},
                 on_refused=refused.append)
    assert await claim_cluster_keys(redis.url, {"secret.key": "check"}) == []
    await a.start(Listener())
    try:
        # the newcomer must be first into the new Redis; ``a`` may reconnect sooner
        for _attempt in range(10):
            await redis.stop()
            await redis.start()
            if await claim_cluster_keys(redis.url, {"secret.key": "other"}) == []:
                break
        else:
            raise AssertionError("the running node always wrote the keys back first")

        async def written_back() -> bool:
            return bool(await a.redis.hget("jf:cluster", "secret.key") == b"check")
        with caplog.at_level(logging.INFO, logger="jobfleet.bus.redis"):
            await eventually(written_back, timeout=20)
        assert refused == [] and a.refused is None
        assert any("cluster_keys_conflict" in r.getMessage() for r in caplog.records)
        assert await claim_cluster_keys(redis.url, {"secret.key": "other"}) == ["secret.key"]
    finally:
        await a.stop()
