"""Two server nodes on one database: an operation taken by one reaches the job the other drives."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.integration.harness import Running, Wire, eventually, run_server

IPS = ["127.0.0.101", "127.0.0.102"]


async def test_terminate_through_another_node(
        running: Running, tmp_path: Path, database_url: str) -> None:
    await running.start_agents(IPS)
    job = await running.wire.run_script("echo started; sleep 300", IPS)
    other_dir = tmp_path / "node-b"
    (other_dir / "server").mkdir(parents=True)
    # every node of a cluster shares the secret key and agent CA (and the admin credentials)
    for name in ("secret.key", "bootstrap.json"):
        shutil.copy(running.data_dir / "server" / name, other_dir / "server" / name)
    shutil.copytree(running.data_dir / "server" / "tls", other_dir / "server" / "tls")
    async with run_server(other_dir, database_url) as node_b:
        assert node_b.server.node_id != running.server.node_id
        wire_b: Wire = node_b.wire

        async def started() -> bool:
            logs = await running.wire.logs(job["job_instance_id"], job["step_instance_id"], IPS)
            return all(v.strip() == "started" for v in logs.values())

        await eventually(started, timeout=20)
        answer = await wire_b.v3("operate_job_instance", {
            "bk_biz_id": 2, "job_instance_id": job["job_instance_id"], "operation_code": 1})
        assert answer["result"], answer
        done = await wire_b.wait(job["job_instance_id"], timeout=30)
        assert done["job_instance"]["status"] == 11
        assert done["step_instance_list"][0]["status"] == 11
        assert {h["status"] for h in done["step_instance_list"][0]["step_ip_result_list"]} == {
            403}


async def test_a_second_node_starts_on_an_initialised_database(
        running: Running, tmp_path: Path, database_url: str) -> None:
    """A node with an empty data directory joins a database another node set up."""
    other_dir = tmp_path / "node-c"
    (other_dir / "server").mkdir(parents=True)
    shutil.copy(running.data_dir / "server" / "secret.key", other_dir / "server" / "secret.key")
    shutil.copytree(running.data_dir / "server" / "tls", other_dir / "server" / "tls")
    async with run_server(other_dir, database_url, boot=running.boot) as node_c:
        answer = await node_c.wire.v3("get_job_instance_list", {
            "bk_biz_id": 2, "create_time_start": 1, "create_time_end": 2}, method="GET")
        assert answer["result"], answer
        assert not (other_dir / "server" / "bootstrap.json").exists()
