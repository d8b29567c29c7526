"""A cluster on a bad day: Redis gone for longer than a job, or back empty; PostgreSQL
dropping its connections under load. No host result is lost, none is failed for want
of an agent that is connected all along."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.integration.cluster import cluster, needs_cluster
from tests.integration.harness import eventually
from tests.integration.test_cluster_bus import (
    check_every_host_once,
    run,
    some_running,
    spread_job,
)
from tests.integration.test_operations import metric, scrape


async def test_jobs_sent_right_after_redis_comes_back_empty_reach_every_agent(
        tmp_path: Path, database_url: str) -> None:
    """Redis is away longer than a job, then back with nothing in it. Jobs taken
    meanwhile and jobs taken the moment it answers again reach the agents of both
    nodes: until every node has written its agents back, the map is incomplete, not
    a sign that the agents left."""
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=2) as c:
        agents, ids, ips, job_id, step_id = await spread_job(
            c, tmp_path, 20, 'echo "a $JOBFLEET_HOST_IP"; sleep 1; echo b', driver=0)
        try:
            async def both_nodes_seen() -> bool:
                return all([metric(await scrape(w.http), "jobfleet_cluster_nodes") == 2
                            for w in c.wires])
            await eventually(both_nodes_seen, timeout=20)
            await eventually(lambda: some_running(c.wires[1], job_id, 20), timeout=60)
            await c.redis.stop()
            # taken while Redis is away: accepted, and run once it is back
            during = [await run(w, 'echo "during $JOBFLEET_HOST_IP"', ids) for w in c.wires]
            await asyncio.sleep(3.0)
            await c.redis.start()
            after = []
            # through the seconds the nodes take to notice the new Redis (one beat)
            for _ in range(12):
                after += [await run(w, 'echo "after $JOBFLEET_HOST_IP"', ids) for w in c.wires]
                await asyncio.sleep(0.2)
            await check_every_host_once(c.wires[1], job_id, step_id, ips, "a {ip}\nb\n")
            for job, step in during:
                await check_every_host_once(c.wires[0], job, step, ips, "during {ip}\n")
            for job, step in after:
                await check_every_host_once(c.wires[1], job, step, ips, "after {ip}\n")
        finally:
            await agents.stop()
