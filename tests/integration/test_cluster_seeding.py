"""A seeded file step in a cluster whose targets ask another node than the driving one
for the file: the demand reaches the driving node, and a lost file is answered 410 there
too. Two real nodes on PostgreSQL and Redis, real agents."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.integration.cluster import CLUSTER_ENGINE, Redis, needs_cluster
from tests.integration.harness import Wire, free_port
from tests.integration.test_file_transfer import transfer_body
from tests.integration.test_peer_files import SIZE, SOURCE, payload
from tests.integration.test_seeding_restart import (
    TARGETS,
    ServerProcess,
    seeding_agents,
    vanished,
)

from jobfleet.agent.client import Agent
from jobfleet.server import read_bootstrap


class NodeProcess(ServerProcess):
    """A node of the test cluster as its own process."""

    def __init__(self, data_dir: Path, database_url: str, redis_url: str) -> None:
        super().__init__(data_dir, free_port(), free_port(), database_url)
        self.data_dir = data_dir
        self.agent_port = int(self.args[self.args.index("--agent-port") + 1])
        cfg = {"data_dir": str(data_dir), "port": self.port, "agent_port": self.agent_port,
               "database_url": database_url, "redis_url": redis_url,
               "engine": CLUSTER_ENGINE}
        self.args = [sys.executable, "-m", "tests.integration.cluster_node", json.dumps(cfg)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, database_url: str) -> AsyncIterator[list[NodeProcess]]:
    redis = Redis(tmp_path / "redis")
    await redis.start()
    nodes = [NodeProcess(tmp_path / f"node{i}", database_url, redis.url) for i in range(2)]
    try:
        await nodes[0].start()
        # what every node of a cluster shares (docs/deploy.md)
        nodes[1].data_dir.mkdir(parents=True)
        for name in ("secret.key", "bootstrap.json"):
            shutil.copy(nodes[0].data_dir / name, nodes[1].data_dir / name)
        shutil.copytree(nodes[0].data_dir / "tls", nodes[1].data_dir / "tls")
        await nodes[1].start()
        yield nodes
    finally:
        await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)
        await redis.stop()


def token(node: NodeProcess) -> str:
    return str(read_bootstrap(node.data_dir)["enroll_token"])


def ask_other_node(agents: dict[str, Agent], other: NodeProcess) -> None:
    """The targets' file requests go to ``other`` (a load balancer's choice)."""
    for ip in TARGETS:
        agents[ip].files._server = lambda: f"https://127.0.0.1:{other.agent_port}"


async def transfer(wire: Wire, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    source = tmp_path / "payload.bin"
    digest = payload(source)
    answer = await wire.v3("fast_transfer_file", transfer_body(
        [str(source)], [SOURCE], TARGETS, f"{tmp_path}/dest/", timeout=60))
    assert answer["result"], answer
    return digest, await wire.wait(answer["data"]["job_instance_id"], timeout=90)


@contextlib.asynccontextmanager
async def unreachable_source(
        tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Wire, dict[str, Agent], Any]]:
    """Two nodes, every agent on node0, the source's peer port closed (the targets
    cannot reach it) and the targets' blob requests sent to node1."""
    needs_cluster(database_url)
    async with two_nodes(tmp_path, database_url) as nodes:
        boot = read_bootstrap(nodes[0].data_dir)
        wire = Wire(nodes[0].url, boot["bk_app_code"], boot["bk_app_secret"], boot["admin_user"])
        try:
            async with seeding_agents(nodes[0].url, token(nodes[0]), tmp_path) as agents:
                peers = agents[SOURCE].peers
                assert peers is not None
                await peers.close()
                ask_other_node(agents, nodes[1])
                yield wire, agents, peers
        finally:
            await wire.close()


async def test_a_target_asking_another_node_gets_the_file_from_its_source(
        tmp_path: Path, database_url: str) -> None:
    async with unreachable_source(tmp_path, database_url) as (wire, agents, peers):
        digest, data = await transfer(wire, tmp_path)
        assert data["job_instance"]["status"] == 3, data
        assert peers.shares, "the source was not asked to serve its file"
        received = tmp_path / "dest" / "payload.bin"
        assert hashlib.sha256(received.read_bytes()).hexdigest() == digest
        from_server = sum(agents[ip].files.swarm_bytes["server"] for ip in TARGETS)
        assert from_server >= SIZE  # the server's copy, uploaded when node1 was asked


async def test_a_file_lost_on_the_driving_node_is_refused_by_the_other_node(
        tmp_path: Path, database_url: str) -> None:
    async with unreachable_source(tmp_path, database_url) as (wire, agents, peers):
        agents[SOURCE].files.upload = vanished  # type: ignore[method-assign]
        started = time.monotonic()
        _digest, data = await transfer(wire, tmp_path)
        assert data["job_instance"]["status"] != 3, data
        assert peers.shares, "the source was not asked to serve its file"
        results = data["step_instance_list"][0]["step_ip_result_list"]
        assert {r["ip"] for r in results} == set(TARGETS)
        assert all(r["status"] not in (9, 0) for r in results), results
        # told 410 by node1, not left asking until the step's timeout
        assert time.monotonic() - started < 50
