"""Hosts alive under a node id that no node uses any more: a server killed and
started under another node id, a cluster node gone for good while Redis forgot it.
BlueKing clients read presence through the GSE agent-status queries: a host whose
agent is connected nowhere must read offline there, and a host whose agent a live
node holds must never read offline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.integration.cluster import (
    CLUSTER_ENGINE,
    Node,
    agents_of,
    cluster,
    needs_cluster,
    swarm,
    wait_ready,
)
from tests.integration.harness import Proc, Wire, eventually
from tests.integration.test_cluster_bus import hosts_by_node
from tests.integration.test_gse_procs import V2

from jobfleet.server import read_bootstrap

RUNNING = 2


async def agent_states(wire: Wire, ips: list[str]) -> dict[str, int]:
    """The GSE status code of each host's agent, by IP."""
    answer = await wire.post(f"{V2}/cluster/list_agent_state",
                             {"agent_id_list": [f"0:{ip}" for ip in ips]})
    assert answer["result"], answer
    return {item["bk_agent_id"].split(":", 1)[1]: item["status_code"] for item in answer["data"]}


async def stays_running(wire: Wire, ip: str, seconds: float) -> None:
    """The host's agent reads RUNNING on ``wire`` every time it is asked, for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert (await agent_states(wire, [ip]))[ip] == RUNNING
        await asyncio.sleep(0.2)


async def killed(proc: Proc) -> None:
    """SIGKILL, and wait until the process is gone: it writes nothing more."""
    proc.kill()
    assert proc.proc is not None
    await proc.proc.wait()


async def test_a_server_started_under_another_node_id_resets_what_the_old_id_held(
        tmp_path: Path, database_url: str) -> None:
    """A node alone (no Redis) with an agent is killed, and started under another node
    id on the same database with no agent: the host reads offline, as it does after a
    restart under the same id."""
    node = Node("node", tmp_path / "node", database_url, None, CLUSTER_ENGINE)
    await node.start()
    boot = read_bootstrap(node.data_dir)
    wire = Wire(node.url, boot["bk_app_code"], boot["bk_app_secret"], boot["admin_user"])
    agents = swarm([node.url], boot["enroll_token"], 1, tmp_path / "swarm")
    await agents.start()
    try:
        await wait_ready(agents, 1)
        _ids, by_id = await hosts_by_node(wire)
        ips = list(by_id.values())

        async def online() -> bool:
            return set((await agent_states(wire, ips)).values()) == {RUNNING}
        await eventually(online, timeout=30)
        assert node.proc is not None
        await killed(node.proc)
        await killed(agents)
        # an operator renamed the node: its node_id file says another id now
        (node.data_dir / "node_id").write_text("renamed-node\n")
        await node.start()
        started = time.monotonic()

        async def offline() -> bool:
            return RUNNING not in (await agent_states(wire, ips)).values()
        await eventually(offline, timeout=15)
        print(f"offline {time.monotonic() - started:.1f}s after the start")
    finally:
        await agents.stop()
        await wire.close()
        await node.stop()
        await node.output()


async def test_a_node_gone_while_redis_forgot_it_is_reset_and_a_live_peers_hosts_never_are(
        tmp_path: Path, database_url: str) -> None:
    """Node 1 is killed with an agent, and Redis restarts empty (it forgets node 1): no
    take-over will ever reset node 1's host. Node 0 is killed and started again: its
    start resets that host, once Redis is old enough to name every live node. Then node 1
    comes back under a new id: its start resets none of node 0's hosts, whose agent
    node 0 holds."""
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=2) as c:
        token = c.boot["enroll_token"]
        kept = swarm([c.urls[0]], token, 1, tmp_path / "kept")
        lost = swarm([c.urls[1]], token, 1, tmp_path / "lost", "--first", "1")
        await kept.start()
        try:
            await wait_ready(kept, 1)
            [kept_ip] = (await hosts_by_node(c.wires[0]))[1].values()
            await lost.start()
            await wait_ready(lost, 1)
            [lost_ip] = set((await hosts_by_node(c.wires[0]))[1].values()) - {kept_ip}
            ips = [kept_ip, lost_ip]

            async def states() -> dict[str, int]:
                return await agent_states(c.wires[0], ips)

            async def both_online() -> bool:
                return set((await states()).values()) == {RUNNING}
            await eventually(both_online, timeout=30)

            for victim in (c.nodes[1], c.nodes[0]):
                assert victim.proc is not None
                await killed(victim.proc)
            await killed(lost)
            # a new, empty Redis: the record of node 1 (and its agents) is gone
            await c.redis.stop()
            await c.redis.start()
            await c.nodes[0].start()

            async def lost_offline() -> bool:
                found = await states()
                return found[lost_ip] != RUNNING and found[kept_ip] == RUNNING
            # Redis's own first node_ttl (CLUSTER_NODE_TTL), a beat, and the agent's reconnection
            await eventually(lost_offline, timeout=40)

            (c.nodes[1].data_dir / "node_id").write_text("renamed-node\n")
            await c.nodes[1].start()
            # node 1's start looks once Redis is past node_ttl, at most a second later:
            # for a while past that, node 0's host never reads offline
            await stays_running(c.wires[1], kept_ip, 6.0)
        finally:
            await kept.stop()
            await lost.stop()



async def test_nodes_that_share_the_database_and_no_redis_keep_each_others_hosts(
        tmp_path: Path, database_url: str) -> None:
    """Two nodes on one database without Redis: node 1 starting again does not take
    node 0 for dead (the database tells it node 0 runs), so node 0's host, whose agent
    node 0 holds, never reads offline."""
    needs_cluster(database_url, redis=False)
    async with (cluster(tmp_path, database_url, size=2, with_redis=False) as c,
                agents_of(c, tmp_path, 1, on=[0])):
        [ip] = (await hosts_by_node(c.wires[0]))[1].values()

        async def online() -> bool:
            return (await agent_states(c.wires[0], [ip]))[ip] == RUNNING
        await eventually(online, timeout=30)
        await c.nodes[1].stop()
        await c.nodes[1].start()
        # node 1's start looks at once: for a while past that, the host stays online
        await stays_running(c.wires[1], ip, 3.0)
