"""A node killed while an agent downloads a file from it: the agent moves to the other
node and fetches the file from there (its bytes are in the database), and the host
ends with the file, not with 320 after a minute of retries against the dead node's
address. Real PostgreSQL, Redis, nodes and an agent as processes."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from tests.integration.cluster import cluster, needs_cluster
from tests.integration.harness import agent_proc, eventually

IP = "127.0.31.7"
SIZE = 6 * 1024 * 1024


async def test_a_download_from_a_killed_node_completes_from_the_other(
        tmp_path: Path, database_url: str) -> None:
    needs_cluster(database_url)
    data = os.urandom(SIZE)
    target = tmp_path / "target"
    async with cluster(tmp_path, database_url, size=2) as c:
        first, second = c.wires
        agent = agent_proc(c.urls[0], c.boot["enroll_token"], tmp_path / "agent", IP,
                           "--server", c.urls[1])
        await agent.start()
        try:
            async def online() -> bool:
                answer = await second.http.get("/api/jobfleet/v1/hosts",
                                               headers=second.headers())
                return any(h["ip"] == IP and h["alive"] for h in answer.json()["data"])
            await eventually(online, timeout=30)
            upload = (await first.http.post(
                "/api/jobfleet/v1/files", params={"name": "pkg.bin", "bk_biz_id": 2},
                content=data, headers=first.headers())).json()
            assert upload["result"], upload
            # 1 MB/s: the download is under way for seconds when its node dies
            answer = await first.v3("fast_transfer_file", {
                "bk_biz_id": 2, "account_alias": "root", "file_target_path": str(target),
                "file_source_list": [{"file_list": [upload["data"]["path"]], "file_type": 2}],
                "target_server": {"ip_list": [{"ip": IP, "bk_cloud_id": 0}]},
                "download_speed_limit": 1})
            assert answer["result"], answer
            job_id = answer["data"]["job_instance_id"]

            async def downloading() -> bool:
                return any(p.name.startswith(".") or p.name == "pkg.bin"
                           for p in target.iterdir()) if target.exists() else False
            await eventually(downloading, timeout=30, interval=0.05)
            await asyncio.sleep(1.0)
            c.nodes[0].kill()
            data_end = await second.wait(job_id, timeout=120)
            hosts = data_end["step_instance_list"][0]["step_ip_result_list"]
            assert [h["status"] for h in hosts] == [9], hosts
            assert hashlib.sha256((target / "pkg.bin").read_bytes()).digest() == \
                hashlib.sha256(data).digest()
        finally:
            await agent.stop()
