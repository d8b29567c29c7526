"""A seeded file step (the source agent serves its file itself) survives a server that is
killed mid-download and started again on the same data dir: real server process, real
agents; the targets finish from the source, or from the server when the source stops
serving."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.harness import Wire, eventually, free_port
from tests.integration.test_file_transfer import transfer_body
from tests.integration.test_peer_files import SOURCE, payload

from jobfleet.agent.client import Agent, AgentSettings
from jobfleet.agent.peers import PeerServer
from jobfleet.server import read_bootstrap

TARGETS = ["127.0.0.4", "127.0.0.5"]


class ServerProcess:
    """``jobfleet server`` on a fixed port and data dir; a plain Popen (the in-process
    agents install their own child watcher)."""

    def __init__(self, data_dir: Path, port: int, agent_port: int, database_url: str) -> None:
        self.args = [sys.executable, "-m", "jobfleet", "server", "--data-dir", str(data_dir),
                     "--port", str(port), "--agent-port", str(agent_port),
                     "--database-url", database_url, "--agent-lost-grace", "3",
                     "--recovery-window", "30", "--log-level", "warning"]
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        async with httpx.AsyncClient(trust_env=False) as http:
            async def up() -> bool:
                assert self.proc is not None and self.proc.poll() is None, "the server exited"
                with contextlib.suppress(httpx.HTTPError):
                    health = await http.get(f"http://127.0.0.1:{self.port}/healthz")
                    return health.status_code == 200
                return False
            await eventually(up, timeout=30)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await asyncio.to_thread(self.proc.wait)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


def held_back(peers: PeerServer, gate: asyncio.Event, asked: asyncio.Event) -> None:
    """The source answers no piece until ``gate`` opens; ``asked`` says a target asked."""
    honest = PeerServer._handle

    async def held(self: PeerServer, request: dict[str, Any], writer: Any) -> bool:
        if request.get("op") == "get":
            asked.set()
            await gate.wait()
        return await honest(self, request, writer)

    peers._handle = held.__get__(peers)  # type: ignore[method-assign]


@pytest.mark.parametrize("source_serves", [True, False], ids=["source-serves", "source-gone"])
async def test_a_seeded_step_resumes_after_a_server_sigkill(
        tmp_path: Path, database_url: str, source_serves: bool) -> None:
    port, agent_port = free_port(), free_port()
    data_dir = tmp_path / "server"
    server = ServerProcess(data_dir, port, agent_port, database_url)
    await server.start()
    boot = read_bootstrap(data_dir)
    url = f"http://127.0.0.1:{port}"
    wire = Wire(url, boot["bk_app_code"], boot["bk_app_secret"], boot["admin_user"])
    agents: dict[str, tuple[Agent, asyncio.Task[None]]] = {}
    try:
        for ip in [SOURCE, *TARGETS]:
            agent = Agent(AgentSettings(
                server=url, state_dir=tmp_path / f"agent-{ip}", ip=ip, biz=2,
                enroll_token=boot["enroll_token"], heartbeat=2.0, max_backoff=1.0,
                peer_port=0, peer_listen=ip, peer_address=ip))
            agents[ip] = (agent, asyncio.create_task(agent.run_forever()))
        await eventually(lambda: _all_connected(agents), timeout=30)
        peers = agents[SOURCE][0].peers
        assert peers is not None
        gate, asked = asyncio.Event(), asyncio.Event()
        held_back(peers, gate, asked)
        source = tmp_path / "payload.bin"
        digest = payload(source)
        answer = await wire.v3("fast_transfer_file", transfer_body(
            [str(source)], [SOURCE], TARGETS, f"{tmp_path}/dest/[FILESRCIP]/", timeout=120))
        assert answer["result"], answer
        job = answer["data"]["job_instance_id"]
        # the targets are taking the file from the source when the server dies
        await asyncio.wait_for(asked.wait(), 30)
        await server.kill()
        if not source_serves:
            await peers.close()  # the targets fall back to the server
        await server.start()
        gate.set()
        data = await wire.wait(job, timeout=90)
        assert data["job_instance"]["status"] == 3, data
        results = data["step_instance_list"][0]["step_ip_result_list"]
        assert {r["ip"]: r["status"] for r in results} == dict.fromkeys(TARGETS, 9), results
        received = tmp_path / "dest" / f"0_{SOURCE}" / "payload.bin"
        assert hashlib.sha256(received.read_bytes()).hexdigest() == digest
        if source_serves:
            assert peers.served_bytes > 0  # pieces still came from the source
        # the server took the file from its source after the restart, once
        blobs = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()
                 and p.stat().st_size == source.stat().st_size]
        assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in blobs] == [digest]
    finally:
        for agent, task in agents.values():
            await agent.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await wire.close()
        await server.stop()


async def _all_connected(agents: dict[str, tuple[Agent, asyncio.Task[None]]]) -> bool:
    for _agent, task in agents.values():
        if task.done():
            task.result()
    return all(agent.connected.is_set() for agent, _task in agents.values())
