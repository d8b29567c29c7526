"""Nodes whose clocks disagree must not drive one job twice, nor leave a dead node's
job waiting for a lease its wrong clock stretched. Node 1's clock runs 30 s ahead
(``lease_ttl`` is 3 s): it must not take node 0's live job, and once it dies node 0
takes its job over within seconds. Real PostgreSQL, Redis, server processes and agents;
the machine's clock is untouched, node 1 is given the offset through its environment."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.integration.cluster import (
    agents_of,
    cluster,
    database,
    needs_cluster,
    node_ids,
)
from tests.integration.harness import eventually
from tests.integration.test_cluster_bus import all_started, hosts_by_node, owner, run

from jobfleet.store.leases import CLOCK_OFFSET_ENV

AHEAD = 30.0


async def test_a_node_with_a_clock_ahead_neither_steals_nor_holds_a_job_too_long(
        tmp_path: Path, database_url: str) -> None:
    needs_cluster(database_url)
    envs = {1: {CLOCK_OFFSET_ENV: str(AHEAD)}}
    async with cluster(tmp_path, database_url, size=2, envs=envs) as c:
        nodes = node_ids(c)
        async with agents_of(c, tmp_path, 1, on=[0]), database(database_url) as db:
            ids, _ips = await hosts_by_node(c.wires[0])

            # node 0 drives a job for two lease lifetimes: node 1, whose clock reads
            # node 0's leases as long lapsed (and looks for lapsed ones every
            # lease_renew, a dozen times meanwhile), must leave it alone all along
            job_id, step_id = await run(c.wires[0], "echo started; sleep 6", ids)
            await all_started(c.wires[0], job_id, step_id, ids)
            owners = set()
            while (await c.wires[0].status(job_id))["job_instance"]["status"] == 2:
                owners.add(await owner(db, job_id))
                await asyncio.sleep(0.1)
            owners.discard(None)
            assert owners == {nodes[0]}, owners
            data = await c.wires[0].wait(job_id, timeout=30)
            assert data["job_instance"]["status"] == 3, data

            # node 1 drives a job and dies: its leases end lease_ttl after its last
            # renewal, not lease_ttl plus its clock's lead
            job_id, step_id = await run(c.wires[1], "echo started; sleep 6", ids)
            await all_started(c.wires[1], job_id, step_id, ids)
            assert await owner(db, job_id) == nodes[1]
            c.nodes[1].kill()
            killed = time.monotonic()

            async def taken_over() -> bool:
                return await owner(db, job_id) == nodes[0]
            await eventually(taken_over, timeout=AHEAD / 2, interval=0.2)
            assert time.monotonic() - killed < AHEAD / 2
            data = await c.wires[0].wait(job_id, timeout=60)
            assert data["job_instance"]["status"] == 3, data
            # the skewed node said so; the other did not
            assert "clock_skew seconds=+30." in await c.nodes[1].output()
            await c.nodes[0].stop()
            assert "clock_skew" not in await c.nodes[0].output()
