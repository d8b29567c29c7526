"""What an enrolled host says about itself in its hello never reaches past itself.

A hostile agent here enrolls for real and speaks the protocol itself; what it claims
(the tasks it holds, where it serves file pieces, its IPv6 address) must neither cost
the server without bound nor steer work meant for another host.
"""

from __future__ import annotations

from tests.integration.harness import Running, eventually
from tests.integration.test_agent_messages import BAD_IP, GOOD_IP, raw_agent

from jobfleet.agent.client import AgentSettings, Credential, enroll
from jobfleet.domain import protocol
from jobfleet.gateway.endpoint import MAX_KNOWN
from jobfleet.gateway.registry import AgentConnection


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
