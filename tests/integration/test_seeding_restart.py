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
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.harness import Wire, eventually, free_port, stop_process
from tests.integration.test_file_transfer import transfer_body
from tests.integration.test_peer_files import SOURCE, payload

from jobfleet.agent.client import Agent, AgentSettings
from jobfleet.agent.peers import PeerServer
from jobfleet.domain import protocol
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
        await stop_process(proc)


def held_back(peers: PeerServer, gate: asyncio.Event, asked: asyncio.Event) -> None:
    """The source answers no piece until ``gate`` opens; ``asked`` says a target asked."""
    honest = PeerServer._handle

    async def held(self: PeerServer, request: dict[str, Any], writer: Any) -> bool:
        if request.get("op") == "get":
            asked.set()
            await gate.wait()
        return await honest(self, request, writer)

    peers._handle = held.__get__(peers)  # type: ignore[method-assign]


@pytest.mark.parametrize("source", ["serves", "gone", "cannot-upload"])
async def test_a_seeded_step_resumes_after_a_server_sigkill(
        tmp_path: Path, database_url: str, source: str) -> None:
    """``serves``: the source still serves after the restart; ``gone``: its peer port
    closed meanwhile (the targets take the server's copy); ``cannot-upload``: nor can it
    upload the file (it went away): the targets are told so and fail soon."""
    async with seeding_run(tmp_path, database_url) as (server, wire, agents, data_dir):
        await resumes(server, wire, agents, tmp_path, data_dir, source)


@contextlib.asynccontextmanager
async def seeding_run(
    tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[ServerProcess, Wire, dict[str, Agent], Path]]:
    """A ``jobfleet server`` process and the seeding agents; all stopped afterwards."""
    port, agent_port = free_port(), free_port()
    data_dir = tmp_path / "server"
    server = ServerProcess(data_dir, port, agent_port, database_url)
    await server.start()
    boot = read_bootstrap(data_dir)
    url = f"http://127.0.0.1:{port}"
    wire = Wire(url, boot["bk_app_code"], boot["bk_app_secret"], boot["admin_user"])
    try:
        async with seeding_agents(url, boot["enroll_token"], tmp_path) as agents:
            yield server, wire, agents, data_dir
    finally:
        await wire.close()
        await server.stop()


async def resumes(server: ServerProcess, wire: Wire, agents: dict[str, Agent], tmp_path: Path,
                  data_dir: Path, source: str) -> None:
    """Kill the server while the targets take the file from the source; start it again."""
    peers = agents[SOURCE].peers
    assert peers is not None
    gate, asked = asyncio.Event(), asyncio.Event()
    held_back(peers, gate, asked)
    path = tmp_path / "payload.bin"
    digest = payload(path)
    answer = await wire.v3("fast_transfer_file", transfer_body(
        [str(path)], [SOURCE], TARGETS, f"{tmp_path}/dest/[FILESRCIP]/", timeout=120))
    assert answer["result"], answer
    job = answer["data"]["job_instance_id"]
    # the targets are taking the file from the source when the server dies
    await asyncio.wait_for(asked.wait(), 30)
    await server.kill()
    if source != "serves":
        await peers.close()  # the targets fall back to the server
    if source == "cannot-upload":
        agents[SOURCE].files.upload = vanished  # type: ignore[method-assign]
    await server.start()
    gate.set()
    started = time.monotonic()
    data = await wire.wait(job, timeout=90)
    if source == "cannot-upload":
        assert data["job_instance"]["status"] != 3, data
        results = data["step_instance_list"][0]["step_ip_result_list"]
        assert all(r["status"] not in (9, 0) for r in results), results
        # told 410, not left asking until the token expires
        assert time.monotonic() - started < 60
        return
    assert data["job_instance"]["status"] == 3, data
    results = data["step_instance_list"][0]["step_ip_result_list"]
    assert {r["ip"]: r["status"] for r in results} == dict.fromkeys(TARGETS, 9), results
    received = tmp_path / "dest" / f"0_{SOURCE}" / "payload.bin"
    assert hashlib.sha256(received.read_bytes()).hexdigest() == digest
    if source == "serves":
        assert peers.served_bytes > 0  # pieces still came from the source
    # the server took the file from its source after the restart, once
    blobs = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()
             and p.stat().st_size == path.stat().st_size]
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in blobs] == [digest]


async def test_a_terminate_after_a_restart_does_not_wait_for_the_source(
        tmp_path: Path, database_url: str) -> None:
    """After the restart the source is away, so the server would wait the recovery window
    (30 s) for it to come back and upload: a terminate ends the step at once instead,
    and the targets' downloads are killed."""
    gate, asked = asyncio.Event(), asyncio.Event()
    try:
        async with seeding_run(tmp_path, database_url) as (server, wire, agents, _data):
            peers = agents[SOURCE].peers
            assert peers is not None
            held_back(peers, gate, asked)
            path = tmp_path / "payload.bin"
            payload(path)
            answer = await wire.v3("fast_transfer_file", transfer_body(
                [str(path)], [SOURCE], TARGETS, f"{tmp_path}/dest/[FILESRCIP]/", timeout=120))
            assert answer["result"], answer
            job = answer["data"]["job_instance_id"]
            await asyncio.wait_for(asked.wait(), 30)
            await server.kill()
            await peers.close()
            await agents[SOURCE].stop()

            async def targets_connected(wanted: bool) -> bool:
                return all(agents[ip].connected.is_set() == wanted for ip in TARGETS)
            # the targets are back before the terminate, so that they can confirm it
            await eventually(lambda: targets_connected(False), timeout=30)
            await server.start()
            await eventually(lambda: targets_connected(True), timeout=30)
            started = time.monotonic()
            answer = await wire.v3("operate_job_instance", {
                "bk_biz_id": 2, "job_instance_id": job, "operation_code": 1})
            assert answer["result"], answer
            data = await wire.wait(job, timeout=90)
            assert time.monotonic() - started < 25  # not the 30 s recovery window
            assert data["job_instance"]["status"] == 11, data
            results = data["step_instance_list"][0]["step_ip_result_list"]
            assert {r["ip"]: r["status"] for r in results} == dict.fromkeys(TARGETS, 403), results
    finally:
        gate.set()


async def vanished(request: str, message: Any) -> Any:
    """A source whose file went away: every upload fails."""
    return protocol.reply(request, results=[
        {"blob": str(i["blob"]), "status": 3, "error": "No such file"}
        for i in message.get("items") or []])


@contextlib.asynccontextmanager
async def seeding_agents(url: str, token: str, tmp_path: Path) -> AsyncIterator[dict[str, Agent]]:
    """The source and the targets, in this process, each with a peer port."""
    running: dict[str, tuple[Agent, asyncio.Task[None]]] = {}
    try:
        for ip in [SOURCE, *TARGETS]:
            agent = Agent(AgentSettings(
                server=url, state_dir=tmp_path / f"agent-{ip}", ip=ip, biz=2,
                enroll_token=token, heartbeat=2.0, max_backoff=1.0,
                peer_port=0, peer_listen=ip, peer_address=ip))
            running[ip] = (agent, asyncio.create_task(agent.run_forever()))

        async def connected() -> bool:
            for _agent, task in running.values():
                if task.done():
                    task.result()
            return all(a.connected.is_set() for a, _task in running.values())
        await eventually(connected, timeout=30)
        yield {ip: agent for ip, (agent, _task) in running.items()}
    finally:
        for agent, task in running.values():
            await agent.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
