"""A real cluster for tests: a Redis server of its own, and server nodes as processes
on one PostgreSQL database, sharing their secret key, agent CA and admin app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tests.integration.harness import (
    AGENT_BACKOFF_ARGS,
    Proc,
    Wire,
    eventually,
    free_port,
    wait_healthy,
)

from jobfleet.server import read_bootstrap

REDIS_SERVER = shutil.which("redis-server")
# short leases and beats: a dead node's jobs are taken over within seconds
CLUSTER_ENGINE = {"agent_lost_grace": 10.0, "recovery_window": 20.0, "reconcile_interval": 1.0,
                  "terminate_wait": 5.0, "lease_ttl": 3.0, "lease_renew": 0.5,
                  "timeout_slack": 5.0}
# a killed node is held gone after this (10 s by default): tests that wait for its hosts
# to read offline, or its operations to be answered, wait that long. Three beats of the
# bus (2 s), so a node of a loaded machine that is late with one is not held gone
CLUSTER_NODE_TTL = 6.0


def needs_cluster(database_url: str, redis: bool = True) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a cluster runs on PostgreSQL (this is the SQLite run)")
    if redis and REDIS_SERVER is None:
        pytest.fail("redis-server is not installed: the cluster tests need it "
                    "(apt-get install redis-server; .ci/run does)")


@dataclass
class Redis:
    """A Redis server of the test's own (a plain Popen: in-process agents of earlier
    tests install a child watcher that asyncio subprocesses would then wait on)."""

    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        assert REDIS_SERVER is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        async def up() -> bool:
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                await writer.drain()
                answer = await reader.readline()
                writer.close()
                return answer.startswith(b"+PONG")
            return False

        await eventually(up, timeout=15)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            for _ in range(100):
                if proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)


@dataclass
class Node:
    name: str
    data_dir: Path
    database_url: str
    # None: a cluster without Redis (the nodes share the database only)
    redis_url: str | None
    engine: dict[str, Any]
    heartbeat: float = 2.0
    # extra environment of the node's process
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    agent_port: int = field(default_factory=free_port)
    # None: its warnings only, unformatted (Python's last-resort handler); a level:
    # jobfleet's log setup at that level, as the CLI does
    log_level: str | None = None
    node_ttl: float = CLUSTER_NODE_TTL
    proc: Proc | None = None
    # what the node writes is read all along into ``<data_dir>.log``, so that a node
    # that logs much (a database outage) never blocks on a full pipe
    reader: asyncio.Task[None] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_suffix(".log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        cfg = {"data_dir": str(self.data_dir), "port": self.port, "agent_port": self.agent_port,
               "database_url": self.database_url, "redis_url": self.redis_url,
               "engine": self.engine, "heartbeat": self.heartbeat, "log_level": self.log_level,
               "node_ttl": self.node_ttl}
        self.proc = Proc(["tests.integration.cluster_node", json.dumps(cfg)], self.env)
        await self.proc.start()
        self.reader = asyncio.get_running_loop().create_task(self._read())
        await wait_healthy(self.url)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.proc is not None
        stdout = self.proc.proc.stdout
        assert stdout is not None
        with self.log_path.open("ab") as log:
            while chunk := await stdout.read(65536):
                log.write(chunk)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop()

    async def output(self) -> str:
        """What a stopped node wrote (warnings and errors), for a failing test."""
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.reader), 5)
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-4000:].decode(errors="replace")


@dataclass
class Cluster:
    nodes: list[Node]
    redis: Redis
    boot: dict[str, Any]
    wires: list[Wire]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, database_url: str, size: int = 3,
                  engine: dict[str, Any] | None = None,
                  heartbeat: float = 2.0, with_redis: bool = True,
                  envs: dict[int, dict[str, str]] | None = None,
                  log_level: str | None = None) -> AsyncIterator[Cluster]:
    """``with_redis=False``: the nodes share the database only (``c.redis`` never runs);
    ``envs``: extra environment of some nodes' processes, by index."""
    redis = Redis(tmp_path / "redis")
    if with_redis:
        await redis.start()
    settings = {**CLUSTER_ENGINE, **(engine or {})}
    nodes = [Node(f"node{i}", tmp_path / f"node{i}", database_url,
                  redis.url if with_redis else None, settings, heartbeat,
                  (envs or {}).get(i, {}), log_level=log_level)
             for i in range(size)]
    wires: list[Wire] = []
    failed = True
    try:
        await nodes[0].start()
        first = nodes[0].data_dir
        for node in nodes[1:]:
            # what every node of a cluster shares (docs/deploy.md)
            node.data_dir.mkdir(parents=True)
            for name in ("secret.key", "bootstrap.json"):
                shutil.copy(first / name, node.data_dir / name)
            shutil.copytree(first / "tls", node.data_dir / "tls")
        await asyncio.gather(*(node.start() for node in nodes[1:]))
        boot = read_bootstrap(first)
        wires = [Wire(n.url, boot["bk_app_code"], boot["bk_app_secret"], boot["admin_user"])
                 for n in nodes]
        yield Cluster(nodes, redis, boot, wires)
        failed = False
    finally:
        for wire in wires:
            await wire.close()
        await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)
        await redis.stop()
        if failed:
            for node in nodes:
                sys.stderr.write(f"--- {node.name} ---\n{await node.output()}\n")


def swarm(urls: list[str], token: str, count: int, state: Path, *extra: str) -> Proc:
    """Real agents spread over the nodes, each knowing every node."""
    servers = [arg for url in urls for arg in ("--server", url)]
    return Proc(["jobfleet.agent.swarm", *servers, "--count", str(count), "--state-dir",
                 str(state), "--concurrency", "64", *AGENT_BACKOFF_ARGS, *extra],
                {"JOBFLEET_ENROLL_TOKEN": token})


async def wait_ready(proc: Proc, count: int, timeout: float = 120.0) -> None:
    assert proc.proc is not None and proc.proc.stdout is not None
    line = await asyncio.wait_for(proc.proc.stdout.readline(), timeout)
    assert line.decode().strip() == f"ready {count}", line


@contextlib.asynccontextmanager
async def agents_of(c: Cluster, tmp_path: Path, count: int,
                    on: list[int] | None = None) -> AsyncIterator[Proc]:
    """``count`` real agents that know the nodes ``on`` (every node when None), all
    connected; stopped on the way out, whatever happened."""
    urls = c.urls if on is None else [c.urls[i] for i in on]
    agents = swarm(urls, c.boot["enroll_token"], count, tmp_path / "swarm")
    await agents.start()
    try:
        await wait_ready(agents, count)
        yield agents
    finally:
        await agents.stop()


def node_ids(c: Cluster) -> list[str]:
    """Each node's id, as the leases it holds name it."""
    return [(n.data_dir / "node_id").read_text().strip() for n in c.nodes]


@contextlib.asynccontextmanager
async def database(url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of the cluster's database, for what the test reads there itself."""
    db = create_async_engine(url)
    try:
        yield db
    finally:
        await db.dispose()
