"""What an enrolled host says about itself in its hello never reaches past itself.

A hostile agent here enrolls for real and speaks the protocol itself; what it claims
(the tasks it holds, where it serves file pieces, its IPv6 address) must neither cost
the server without bound nor steer work meant for another host.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.integration.harness import Running, eventually
from tests.integration.test_agent_messages import BAD_IP, GOOD_IP, raw_agent
from tests.integration.test_file_transfer import transfer_body
from tests.integration.test_peer_files import swarm_bytes

from jobfleet.agent.client import AgentSettings, Credential, enroll
from jobfleet.domain import protocol
from jobfleet.domain.protocol import PIECE_SIZE
from jobfleet.gateway.endpoint import MAX_KNOWN
from jobfleet.gateway.registry import AgentConnection

SOURCE = "127.0.0.6"
HONEST = ["127.0.0.4", "127.0.0.5"]
PEERS = {ip: {"peer_port": 0, "peer_listen": ip, "peer_address": ip} for ip in HONEST}
# a loopback address no host of the test has
TRAP_IP = "127.0.0.77"


async def enrolled(running: Running, ip: str) -> Credential:
    settings = AgentSettings(server=running.url, state_dir=None, ip=ip,
                             enroll_token=running.boot["enroll_token"])
    channel, _ = await settings.channel()
    return await enroll(settings, channel=channel)


async def test_a_hello_keeps_only_a_bounded_set_of_the_hosts_own_tasks(
        running: Running) -> None:
    await running.start_agents([GOOD_IP])
    good = running.server.registry.for_host(
        next(h.bk_host_id for h in await running.server.inventory.list() if h.ip == GOOD_IP))
    assert good is not None
    other = protocol.task_id(1, 0, good.bk_host_id)
    # ~4 MB of names: short junk, another host's task, and more of its own than are kept
    junk = [str(n) for n in range(200_000)]
    cred = await enrolled(running, BAD_IP)
    own = [protocol.task_id(n, 0, cred.bk_host_id) for n in range(1, 2 * MAX_KNOWN)]
    async with raw_agent(running, BAD_IP, cred, known=[*junk, other, *own]) as bad:
        async def connected() -> AgentConnection | None:
            return running.server.registry.for_host(bad.host_id)
        conn = await eventually(connected)
        assert len(conn.known) == MAX_KNOWN
        assert conn.known <= set(own)
        assert other not in conn.known


async def test_an_agent_cannot_make_its_swarm_peers_dial_an_address_not_its_own(
        running: Running, tmp_path: Path) -> None:
    """The hostile host names a loopback service (here a listener of the test's) as the
    place it serves pieces: the honest targets of the same transfer must not dial it,
    and still share pieces with each other."""
    dialed: list[str] = []

    async def trap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialed.append(str(writer.get_extra_info("peername")))
        writer.close()

    service = await asyncio.start_server(trap, TRAP_IP, 0)
    port = service.sockets[0].getsockname()[1]
    try:
        await running.start_agents([SOURCE, *HONEST], settings_of=PEERS)
        async with raw_agent(running, BAD_IP, peer=f"{TRAP_IP}:{port}") as bad:
            source = tmp_path / "payload.bin"
            source.write_bytes(os.urandom(3 * PIECE_SIZE + 7))
            answer = await running.wire.v3("fast_transfer_file", transfer_body(
                [str(source)], [SOURCE], [*HONEST, BAD_IP], f"{tmp_path}/dest/"))
            assert answer["result"], answer
            job = answer["data"]["job_instance_id"]
            await asyncio.wait_for(bad.runs.get(), 30)

            async def honest_done() -> bool:
                status = await running.wire.status(job)
                hosts = status["step_instance_list"][0]["step_ip_result_list"]
                return {h["status"] for h in hosts if h["ip"] in HONEST} == {9}
            await eventually(honest_done, timeout=60)
        assert dialed == []
        _, from_peers = swarm_bytes(running, HONEST)
        assert from_peers > 0
    finally:
        service.close()
        await service.wait_closed()
