"""The CLI of an operator whose node is killed while ``jobfleet run`` waits on a job:
the job runs on (another node takes it over), so the command says which job it was
and how to follow it, rather than an error alone that reads as a failed job whose id
was never shown. Real PostgreSQL, Redis, nodes and agents as processes."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.integration.cluster import agents_of, cluster, needs_cluster
from tests.integration.harness import eventually
from tests.integration.test_cluster_bus import hosts_by_node


async def test_run_that_loses_its_node_names_the_job_that_runs_on(
        tmp_path: Path, database_url: str) -> None:
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=2) as c, agents_of(c, tmp_path, 2, on=[1]):
        _ids, ips = await hosts_by_node(c.wires[1])
        bootstrap = c.nodes[0].data_dir / "bootstrap.json"
        hosts = [arg for ip in ips.values() for arg in ("--host", ip)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jobfleet", "--server", c.urls[0], "--bootstrap",
            str(bootstrap), "run", *hosts, "-c", "sleep 4; echo done",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200"})

        async def running() -> bool:
            answer = await c.wires[1].v3("get_job_instance_status", {
                "bk_biz_id": 2, "job_instance_id": 1}, method="GET")
            return bool(answer["result"])
        await eventually(running, timeout=30)
        await asyncio.sleep(0.5)
        c.nodes[0].kill()
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        text = err.decode()
        assert proc.returncode == 2, (out, text)
        assert "job 1 was submitted and may still be running" in text, text
        assert "jobfleet logs -f 1" in text and "--server" in text, text
