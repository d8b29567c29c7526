"""A node started on a cluster's database and Redis without the cluster's secret key
or agent CA (its data directory not copied from the first node, docs/deploy.md) ends at
once with one line saying what to copy, instead of serving: with its own key, what it
seals no other node can open (its jobs never reach their agents), and agents that
pinned the cluster's CA refuse it. The database's values decide (test_stored_keys.py);
Redis's are compared too, for a node pointed at another database. Real PostgreSQL,
Redis and server processes."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import redis.asyncio as aioredis
from tests.conftest import fresh_database
from tests.integration.cluster import Node, cluster, needs_cluster
from tests.integration.harness import Proc

from jobfleet.store.secrets import Cipher


async def refused(node: Node) -> str:
    """What a node that must not start wrote before it ended (it must end, status 2)."""
    node.data_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"data_dir": str(node.data_dir), "port": node.port, "agent_port": node.agent_port,
           "database_url": node.database_url, "redis_url": node.redis_url,
           "engine": node.engine, "heartbeat": node.heartbeat}
    proc = Proc(["tests.integration.cluster_node", json.dumps(cfg)], {})
    await proc.start()
    code, text = await proc.ended()
    assert code == 2, text
    assert "Traceback" not in text, text
    return text


async def test_a_node_without_the_clusters_key_or_ca_is_refused_in_one_line(
        tmp_path: Path, database_url: str) -> None:
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=1) as c:
        first = c.nodes[0]
        lone = Node("lone", tmp_path / "lone", database_url, c.redis.url, first.engine)
        text = await refused(lone)
        assert "database_keys_refused" in text and "secret.key" in text, text
        assert "tls/ca.pem" in text and "docs/deploy.md" in text, text

        # the key copied, the CA forgotten
        half = Node("half", tmp_path / "half", database_url, c.redis.url, first.engine)
        half.data_dir.mkdir(parents=True)
        shutil.copy(first.data_dir / "secret.key", half.data_dir / "secret.key")
        text = await refused(half)
        assert "files=tls/ca.pem " in text, text

        # copied as the docs say: it joins
        good = Node("good", tmp_path / "good", database_url, c.redis.url, first.engine)
        good.data_dir.mkdir(parents=True)
        shutil.copy(first.data_dir / "secret.key", good.data_dir / "secret.key")
        shutil.copytree(first.data_dir / "tls", good.data_dir / "tls")
        await good.start()
        try:
            assert (await c.wires[0].http.get(f"{good.url}/readyz")).status_code == 200
        finally:
            await good.stop()


async def test_a_node_started_while_redis_is_away_is_refused_once_redis_is_back(
        tmp_path: Path, database_url: str) -> None:
    """Redis away when a node without the cluster's key starts on a database of its own
    (a wrong database URL: the database cannot tell): the node starts, but when Redis
    is back (here a new, empty instance) it compares before it sends or reads anything
    there, and ends as at start; the cluster's values stay the ones of the node that
    ran all along."""
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=1) as c, \
            fresh_database("postgresql", tmp_path) as own_database:
        first = c.nodes[0]
        await c.redis.stop()
        lone = Node("lone", tmp_path / "lone", own_database, c.redis.url, first.engine)
        await lone.start()
        try:
            await c.redis.start()
            assert lone.proc is not None and lone.proc.proc is not None
            code = await asyncio.wait_for(lone.proc.proc.wait(), 60)
            text = await lone.output()
            assert code == 2, text
            assert "cluster_keys_refused files=secret.key,tls/ca.pem " in text, text
            assert "Traceback" not in text, text
        finally:
            await lone.stop()

        client = aioredis.Redis.from_url(c.redis.url)
        try:
            stored = await client.hgetall("jf:cluster")
            nodes = {n.decode() for n in await client.smembers("jf:nodes")}
        finally:
            await client.aclose()
        assert stored[b"secret.key"].decode() == Cipher.from_data_dir(first.data_dir).check_value()
        assert nodes == {(first.data_dir / "node_id").read_text().strip()}
        assert (await c.wires[0].http.get(f"{first.url}/readyz")).status_code == 200


async def test_a_node_with_a_running_nodes_id_is_refused_in_one_line(
        tmp_path: Path, database_url: str) -> None:
    """A data directory copied whole, ``node_id`` too: the copy would read part of the
    first node's messages and drive its jobs beside it; it ends at once instead."""
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=1) as c:
        first = c.nodes[0]
        twin = Node("twin", tmp_path / "twin", database_url, c.redis.url, first.engine)
        twin.data_dir.mkdir(parents=True)
        for name in ("secret.key", "bootstrap.json", "node_id"):
            shutil.copy(first.data_dir / name, twin.data_dir / name)
        shutil.copytree(first.data_dir / "tls", twin.data_dir / "tls")
        text = await refused(twin)
        assert "node_id_in_use node=" in text and "docs/deploy.md" in text, text
        assert (await c.wires[0].http.get(f"{first.url}/readyz")).status_code == 200
