"""A swarm's hosts enroll with the agent's own client from several processes: each host
gets its own credential in host order, and the server writes them in shared batches."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from tests.integration.harness import Running

from jobfleet.agent.swarm import swarm_ip, swarm_settings
from jobfleet.agent.swarm_enroll import channels_of, enroll_all, healthz_all
from jobfleet.store.tables import audit_log, hosts


async def test_hosts_enrolled_from_three_processes_get_their_own_credentials(
        running: Running) -> None:
    token = running.boot["enroll_token"]
    servers = [running.url]
    channels = await channels_of(servers, token)
    settings = swarm_settings(servers, token, 60, first=500)
    writer = running.server.identity.enrollments.commits
    before = writer.batches
    creds = await enroll_all(settings, servers, token, channels, window=8, processes=3,
                             first=500)
    assert len(creds) == 60 and len({c.agent_id for c in creds}) == 60
    async with running.server.db.connect() as conn:
        by_id = {r.bk_host_id: r for r in await conn.execute(select(hosts))}
        audited = (await conn.execute(
            select(audit_log.c.resource_id).where(audit_log.c.action == "agent_enroll"))).all()
    for i, cred in enumerate(creds):
        host = by_id[cred.bk_host_id]
        assert (host.ip, host.agent_id, host.hostname) == (
            swarm_ip(500 + i), cred.agent_id, f"swarm-{500 + i}")
    assert {int(r.resource_id) for r in audited} >= {c.bk_host_id for c in creds}
    assert writer.items >= 60 and writer.batches > before
    await healthz_all(40, servers, token, channels, window=8, processes=2)


async def test_a_swarm_on_uvloop_enrolls_from_helpers_on_uvloop(running: Running) -> None:
    import uvloop

    from jobfleet.agent.swarm_enroll import _Helper

    token = running.boot["enroll_token"]
    servers = [running.url]

    async def on_uvloop() -> tuple[list[str], int]:
        channels = await channels_of(servers, token)
        settings = swarm_settings(servers, token, 12, first=700)
        creds = await enroll_all(settings, servers, token, channels, window=4, processes=2,
                                 first=700)
        helper = _Helper(servers, token, 800, 2, 2, 2, healthz=True)
        await helper.credentials()
        return list(helper.proc.args), len({c.agent_id for c in creds})

    # a loop of its own, in a thread, beside the test's (which runs the server)
    argv, enrolled = await asyncio.to_thread(uvloop.run, on_uvloop())
    assert enrolled == 12
    assert argv[argv.index("--loop") + 1] == "uvloop"
