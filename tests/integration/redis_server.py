"""A private Redis server for tests: ``redis-server`` on a free loopback port, no
persistence, in a temporary directory; stopped (and restartable) by the test.

``redis_url`` is the fixture; tests that need to stop or restart Redis mid-run use
``RedisServer`` directly. Without a ``redis-server`` binary the tests that need one
are skipped (``.ci/run`` installs it)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from tests.integration.harness import eventually, free_port, stop_process

BINARY = shutil.which("redis-server")


class RedisServer:
    def __init__(self, directory: Path, port: int = 0) -> None:
        self.directory = directory
        self.port = port or free_port()
        # a plain Popen, not an asyncio subprocess: in-process agents install their own
        # child watcher, bound to the loop of the test that started them
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        if BINARY is None:
            pytest.skip("redis-server is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--protected-mode", "yes"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = aioredis.Redis.from_url(self.url, socket_timeout=1.0)
        try:
            async def up() -> bool:
                assert self.proc is not None and self.proc.poll() is None, (
                    f"redis-server exited with {self.proc and self.proc.returncode}")
                try:
                    return bool(await client.ping())
                except (OSError, aioredis.RedisError):
                    return False
            await eventually(up, timeout=20)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        await stop_process(proc)


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
