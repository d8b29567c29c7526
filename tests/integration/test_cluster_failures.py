"""A cluster on a bad day: Redis gone for longer than a job, or back empty; PostgreSQL
dropping its connections under load. No host result is lost, none is failed for want
of an agent that is connected all along."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url
from tests.integration.cluster import cluster, needs_cluster
from tests.integration.harness import Wire, eventually
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
            for wire in c.wires:
                # every node still serves: none asks its balancer to be taken out
                async def degraded(wire: Wire = wire) -> httpx.Response | None:
                    ready = await wire.http.get("/readyz")
                    return ready if not ready.json()["checks"]["redis"]["ok"] else None
                ready = await eventually(degraded, timeout=10, interval=0.3)
                assert ready.status_code == 200, ready.text
                assert ready.json()["status"] == "degraded"
                assert (await wire.status(job_id))["job_instance"]["job_instance_id"] == job_id
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


@contextlib.asynccontextmanager
async def database_admin(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """A superuser connection to the server's ``postgres`` database, and the name of
    the test's own database (a copy made for this test alone)."""
    url = make_url(database_url)
    conn = await asyncpg.connect(host=url.host, port=url.port, user=url.username,
                                 password=url.password, database="postgres")
    try:
        yield conn, str(url.database)
    finally:
        await conn.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true')
        await conn.close()


async def drop_connections(admin: asyncpg.Connection, name: str) -> int:
    return int(await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
        name))


async def test_postgresql_dropping_connections_and_away_for_seconds_loses_no_output(
        tmp_path: Path, database_url: str) -> None:
    """Mid job, every connection of the nodes is cut three times, then the database
    refuses connections for 4 s (as while PostgreSQL restarts). Every host of both
    nodes still ends with its whole output, once, and the nodes work on after."""
    needs_cluster(database_url)
    lines = 30
    script = f'for i in $(seq {lines}); do echo "l$i $JOBFLEET_HOST_IP"; sleep 0.2; done'
    async with cluster(tmp_path, database_url, size=2) as c, \
            database_admin(database_url) as (admin, name):
        agents, ids, ips, job_id, step_id = await spread_job(c, tmp_path, 40, script, driver=0)
        try:
            await eventually(lambda: some_running(c.wires[1], job_id, 40), timeout=60)
            for _ in range(3):
                assert await drop_connections(admin, name) > 0
                await asyncio.sleep(0.5)
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await drop_connections(admin, name)
            down = asyncio.get_running_loop().time()
            # what a client hears meanwhile: the service is unavailable, try again
            for wire in c.wires:
                answer = await wire.http.get(
                    "/api/bk-job/prod/api/v3/get_job_instance_status",
                    params={"bk_biz_id": 2, "job_instance_id": job_id}, headers=wire.headers())
                assert answer.status_code == 503, answer.text
                assert answer.json()["code"] == 1240001, answer.text
                assert "database cannot be reached" in answer.json()["message"]
            await asyncio.sleep(4.0 - (asyncio.get_running_loop().time() - down))
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            expect = "".join(f"l{i} {{ip}}\n" for i in range(1, lines + 1))
            await check_every_host_once(c.wires[1], job_id, step_id, ips, expect)
            second, second_step = await run(c.wires[1], 'echo "again $JOBFLEET_HOST_IP"', ids)
            await check_every_host_once(c.wires[0], second, second_step, ips, "again {ip}\n")
        finally:
            await agents.stop()


async def test_a_node_restarted_while_redis_is_down_serves_and_joins_when_it_is_back(
        tmp_path: Path, database_url: str) -> None:
    """A node restarted during a Redis outage (an upgrade, a crash) comes up and
    serves instead of failing its start; once Redis is back it joins the cluster. A
    job it takes meanwhile does not fail the hosts whose agents it cannot locate."""
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=2) as c:
        agents, ids, ips, job_id, _step_id = await spread_job(c, tmp_path, 10, "true", driver=0)
        try:
            await c.redis.stop()
            await c.nodes[1].stop()
            await c.nodes[1].start()
            ready = await c.wires[1].http.get("/readyz")
            assert ready.json()["status"] == "degraded", ready.text
            await c.wires[1].status(job_id)
            # its agents are coming back to it or to the other node, which it cannot
            # tell without Redis: they are given the grace of an agent that dropped
            during, during_step = await run(c.wires[1], 'echo "during $JOBFLEET_HOST_IP"', ids)
            await c.redis.start()
            await check_every_host_once(c.wires[0], during, during_step, ips, "during {ip}\n")

            async def joined() -> bool:
                return all([metric(await scrape(w.http), "jobfleet_cluster_nodes") == 2
                            for w in c.wires])
            await eventually(joined, timeout=20)
            for driver, reader in ((1, 0), (0, 1)):
                job, step = await run(c.wires[driver], 'echo "after $JOBFLEET_HOST_IP"', ids)
                await check_every_host_once(c.wires[reader], job, step, ips, "after {ip}\n")
        finally:
            await agents.stop()
