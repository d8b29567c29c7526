"""A job driver stuck on an await that never completes (here: a step row another
transaction holds locked, so the driver's update of it waits for ever) must not keep
its job's lease: after ``driver_stall`` without progress its node gives the lease up,
says so in one line, and another node takes the job over and ends it. Real
PostgreSQL, Redis, server processes and agents."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from tests.integration.cluster import (
    agents_of,
    cluster,
    database,
    needs_cluster,
    node_ids,
)
from tests.integration.harness import eventually
from tests.integration.test_cluster_bus import all_started, hosts_by_node, owner, run


async def test_a_stuck_driver_gives_its_lease_up_and_another_node_ends_the_job(
        tmp_path: Path, database_url: str) -> None:
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=2, engine={"driver_stall": 4.0}) as c:
        nodes = node_ids(c)
        async with agents_of(c, tmp_path, 1, on=[0]), database(database_url) as db:
            ids, _ips = await hosts_by_node(c.wires[0])
            job_id, step_id = await run(c.wires[0], "echo started; sleep 3", ids)
            await all_started(c.wires[0], job_id, step_id, ids)
            assert await owner(db, job_id) == nodes[0]

            # node 0's driver ends the step once the host is done: that update now waits
            # on this lock (results still land: the host rows only share-lock the step)
            async with db.connect() as lock:
                await lock.execute(text(
                    "SELECT id FROM step_instances WHERE id = :s FOR NO KEY UPDATE"),
                    {"s": step_id})

                async def host_done() -> bool:
                    data = await c.wires[1].status(job_id)
                    hosts = data["step_instance_list"][0]["step_ip_result_list"]
                    return bool(hosts[0]["status"] == 9)
                await eventually(host_done, timeout=30, interval=0.2)

                async def taken_over() -> bool:
                    return await owner(db, job_id) == nodes[1]
                await eventually(taken_over, timeout=40, interval=0.2)
                await lock.rollback()

            data = await c.wires[1].wait(job_id, timeout=60)
            assert data["job_instance"]["status"] == 3, data
            await c.nodes[0].stop()
            log = await c.nodes[0].output()
            assert f"job_driver_stalled job={job_id} " in log, log
