"""A source agent with a peer port serves its file to the targets while it uploads it:
real server, real agents; a lying or unreachable source is dropped for the server's
copy, and a step with a target outside the swarm uploads first as before."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from tests.integration.harness import Running
from tests.integration.test_file_transfer import transfer_body
from tests.integration.test_peer_files import (
    PEERS,
    SIZE,
    SOURCE,
    TARGETS,
    payload,
    send,
    swarm_bytes,
)

from jobfleet.agent.peers import ANSWER, OK, PeerServer

SEEDING = {**PEERS, SOURCE: {"peer_port": 0, "peer_listen": SOURCE, "peer_address": SOURCE}}


def source_peers(running: Running) -> PeerServer:
    peers = running.agents[SOURCE][0].peers
    assert peers is not None
    return peers


def stored_on_server(running: Running, tmp_path: Path) -> bool:
    """Whether the server holds the file (fetched for targets that fell back)."""
    digest = hashlib.sha256((tmp_path / "payload.bin").read_bytes()).hexdigest()
    root = running.server.blobs.root
    held = [hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir()
            if p.is_file() and p.stat().st_size == SIZE]
    return digest in held


async def upload_rows(running: Running, data: dict[str, Any]) -> list[dict[str, Any]]:
    step = data["step_instance_list"][0]["step_instance_id"]
    logs = await running.wire.v3("batch_get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": data["job_instance"]["job_instance_id"],
        "step_instance_id": step, "ip_list": [{"ip": SOURCE, "bk_cloud_id": 0}]})
    rows = logs["data"]["file_task_logs"][0]["file_logs"]
    return [r for r in rows if r["mode"] == 0]


async def test_the_source_serves_its_file_and_the_server_gets_it_too(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents([SOURCE, *TARGETS], settings_of=SEEDING)
    data = await send(running, tmp_path, TARGETS)
    from_server, from_peers = swarm_bytes(running, TARGETS)
    assert from_server == 0 and from_peers == SIZE * len(TARGETS)
    # each piece left the source about once; the targets gave each other the rest
    served = source_peers(running).served_bytes
    assert SIZE <= served < 2 * SIZE, served
    # no target asked the server: the file never crossed to it
    assert not stored_on_server(running, tmp_path)
    rows = await upload_rows(running, data)
    assert [(r["status"], r["process"]) for r in rows] == [(4, "100%")], rows
    assert "peer port" in rows[0]["log_content"], rows
    # and the source no longer offers it (the next transfer of the same path is new)
    assert source_peers(running).shares and all(
        s.release_at is not None for s in source_peers(running).shares.values())
    # and again: a second transfer of the same path is served the same way
    await send(running, tmp_path, TARGETS[:2])
    assert source_peers(running).served_bytes > served


async def test_a_lying_source_is_dropped_and_the_server_copy_is_used(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents([SOURCE, *TARGETS], settings_of=SEEDING)
    liar = source_peers(running)
    honest = PeerServer._handle

    async def lie(self: PeerServer, request: dict[str, Any], writer: Any) -> bool:
        share = self.shares.get(str(request.get("x")))
        item = share.items.get(request.get("n")) if share else None  # type: ignore[arg-type]
        if request.get("op") != "get" or item is None:
            return await honest(self, request, writer)
        length = item.span(int(request.get("i") or 0))[1]
        writer.write(ANSWER.pack(OK, length) + os.urandom(length))
        await writer.drain()
        return True

    liar._handle = lie.__get__(liar)  # type: ignore[method-assign]
    await send(running, tmp_path, TARGETS)
    from_server, from_peers = swarm_bytes(running, TARGETS)
    assert from_server + from_peers == SIZE * len(TARGETS)
    assert from_server >= SIZE  # what the source was to give came from the server
    assert stored_on_server(running, tmp_path)  # fetched from the source when asked for


async def test_an_unreachable_source_falls_back_to_the_server(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents([SOURCE, *TARGETS], settings_of=SEEDING)
    unreachable = source_peers(running)
    # the agent still hashes and offers its file, but nobody can reach its port
    await unreachable.close()
    await send(running, tmp_path, TARGETS)
    from_server, from_peers = swarm_bytes(running, TARGETS)
    assert from_server + from_peers == SIZE * len(TARGETS)
    assert from_server >= SIZE and unreachable.served_bytes == 0
    assert stored_on_server(running, tmp_path)


async def test_a_target_without_a_peer_port_means_the_upload_comes_first(
        running: Running, tmp_path: Path) -> None:
    settings = {ip: s for ip, s in SEEDING.items() if ip != TARGETS[0]}
    await running.start_agents([SOURCE, *TARGETS], settings_of=settings)
    await send(running, tmp_path, TARGETS)
    # the others still share pieces, seeded by the server as before
    assert source_peers(running).served_bytes == 0
    from_server, from_peers = swarm_bytes(running, TARGETS[1:])
    assert from_server + from_peers == SIZE * 3 and from_server > 0


async def test_a_source_whose_upload_fails_when_asked_for_fails_its_targets_soon(
        running: Running, tmp_path: Path) -> None:
    """The targets cannot reach the source and the server's fallback upload fails (the
    file went away): they are told so, instead of asking the server for a file that will
    never come until the step's timeout."""
    await running.start_agents([SOURCE, *TARGETS], settings_of=SEEDING)
    await source_peers(running).close()
    files = running.agents[SOURCE][0].files

    async def vanished(request: str, message: Any) -> Any:
        from jobfleet.domain import protocol
        return protocol.reply(request, results=[
            {"blob": str(i["blob"]), "status": 3, "error": "No such file"}
            for i in message.get("items") or []])

    files.upload = vanished  # type: ignore[method-assign]
    source = tmp_path / "payload.bin"
    payload(source)
    started = time.monotonic()
    answer = await running.wire.v3("fast_transfer_file", transfer_body(
        [str(source)], [SOURCE], TARGETS, f"{tmp_path}/dest/", timeout=90))
    assert answer["result"], answer
    data = await running.wire.wait(answer["data"]["job_instance_id"], timeout=150)
    assert data["job_instance"]["status"] != 3, data
    results = data["step_instance_list"][0]["step_ip_result_list"]
    assert {r["ip"] for r in results} == set(TARGETS)
    assert all(r["status"] not in (9, 0) for r in results), results
    assert time.monotonic() - started < 45, "the targets waited out the step's timeout"


async def test_a_step_terminated_while_its_fallback_upload_runs_ends_without_it(
        running: Running, tmp_path: Path) -> None:
    """Terminating the job does not wait for the source's upload to the server."""
    await running.start_agents([SOURCE, *TARGETS], settings_of=SEEDING)
    await source_peers(running).close()
    files = running.agents[SOURCE][0].files
    uploading = asyncio.Event()

    async def slow(request: str, message: Any) -> Any:
        uploading.set()
        await asyncio.sleep(600)  # a very large file
        raise AssertionError("not reached")

    files.upload = slow  # type: ignore[method-assign]
    source = tmp_path / "payload.bin"
    payload(source)
    answer = await running.wire.v3("fast_transfer_file", transfer_body(
        [str(source)], [SOURCE], TARGETS, f"{tmp_path}/dest/", timeout=300))
    assert answer["result"], answer
    job = answer["data"]["job_instance_id"]
    await asyncio.wait_for(uploading.wait(), 30)
    stopped = await running.wire.v3("operate_job_instance", {
        "bk_biz_id": 2, "job_instance_id": job, "operation_code": 1})
    assert stopped["result"], stopped
    started = time.monotonic()
    data = await running.wire.wait(job, timeout=120)
    assert data["job_instance"]["status"] == 11, data
    assert time.monotonic() - started < 30, "the terminated step waited for the upload"
