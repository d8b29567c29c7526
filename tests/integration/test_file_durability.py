"""File steps survive a dying target agent and a dying server; bk-log's extraction flow works."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

from tests.integration.harness import (
    Proc,
    Running,
    Wire,
    agent_proc,
    alive_ips,
    b64,
    eventually,
    free_port,
)
from tests.integration.test_durability import start_server
from tests.integration.test_file_transfer import transfer_body

from jobfleet.server import read_bootstrap

# the source's upload in the mid-upload restart: long enough at 1 MB/s for the kill to
# land inside it, and it is uploaded again after the restart
UPLOAD_MIB = 4
# when the source's agent comes back after the restart: past the agent-lost grace (3 s)
BACK_AFTER = 4.0


def random_file(path: Path, mib: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(mib):
            chunk = os.urandom(1024 * 1024)
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


async def downloading(wire: Wire, sub: dict[str, Any], ip: str) -> bool:
    logs = await wire.v3("batch_get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
        "step_instance_id": sub["step_instance_id"], "ip_list": [{"ip": ip, "bk_cloud_id": 0}]})
    rows = logs["data"]["file_task_logs"][0]["file_logs"] if logs.get("data") else []
    return any(r["status"] == 3 and r["process"] not in ("0%", "100%") for r in rows)


async def test_target_agent_killed_mid_download_ends_with_310(running: Running,
                                                              tmp_path: Path) -> None:
    await running.start_agents(["127.0.0.2"])
    target = agent_proc(running.url, running.boot["enroll_token"], tmp_path / "t", "127.0.0.9")
    await target.start()
    try:
        await eventually(lambda: alive_ips(running.wire, ["127.0.0.9"]), timeout=30)
        random_file(tmp_path / "big.bin", 24)
        answer = await running.wire.v3("fast_transfer_file", transfer_body(
            [str(tmp_path / "big.bin")], ["127.0.0.2"], ["127.0.0.9"], f"{tmp_path}/out/",
            download_speed_limit=4))
        sub = answer["data"]
        await eventually(lambda: downloading(running.wire, sub, "127.0.0.9"), timeout=30)
        target.kill()
        data = await running.wire.wait(sub["job_instance_id"], timeout=30)
        assert data["step_instance_list"][0]["step_ip_result_list"][0]["status"] == 310
        assert data["job_instance"]["status"] == 4
        assert not (tmp_path / "out" / "big.bin").exists()
    finally:
        await target.stop()


async def test_server_sigkill_mid_transfer(tmp_path: Path, database_url: str) -> None:
    async with SourceAndTarget(tmp_path, database_url,
                               targets=("127.0.0.3", "127.0.0.4")) as setup:
        wire = setup.wire
        # 4 s of download at 4 MB/s for the kill to land in
        digest = random_file(tmp_path / "big.bin", 16)
        answer = await wire.v3("fast_transfer_file", transfer_body(
            [str(tmp_path / "big.bin")], [setup.source], list(setup.targets),
            f"{tmp_path}/out/[FILESRCIP]/", download_speed_limit=4))
        sub = answer["data"]
        # the file goes through the server first: on a loaded machine that alone can take
        # most of half a minute, and the kill must come while a target downloads
        await eventually(lambda: downloading(wire, sub, setup.target), timeout=90)
        setup.server.kill()
        assert setup.server.proc is not None
        await setup.server.proc.wait()
        await asyncio.sleep(1.0)
        setup.server = await setup.start_server()
        data = await wire.wait(sub["job_instance_id"], timeout=120)
        assert data["job_instance"]["status"] == 3, data
        assert {r["status"] for r in data["step_instance_list"][0]["step_ip_result_list"]} == {9}
        assert sha256_of(tmp_path / "out" / f"0_{setup.source}" / "big.bin") == digest


PACK = """\
#!/bin/bash
# pack.sh: tar the requested files into a package and say where it is
set -e
out=/tmp/bklog-extract-$JOBFLEET_HOST_IP-$$.tar.gz
tar -czf "$out" "$@" 2>/dev/null
echo "<BKLOG>packed_path:$out</BKLOG>"
echo "<BKLOG>size:$(stat -c %s "$out")</BKLOG>"
"""

COS = """\
#!/bin/bash
# cos.sh: every subdirectory of the transit dir holds one source host's package
cd "$1"
for host in *; do
  [ "$host" = "[]" ] && continue
  ls "$host"/*.tar.gz >/dev/null || exit 4
  echo "uploaded $host"
done
"""


async def test_bk_log_extraction_flow(running: Running, tmp_path: Path) -> None:
    """bk-clients.md §2.4: pack on hosts, move to a transit host with [FILESRCIP], upload."""
    sources = ["127.0.0.2", "127.0.0.3"]
    transit = "127.0.0.8"
    await running.start_agents([*sources, transit])
    logs_dir = tmp_path / "var-log"
    logs_dir.mkdir()
    (logs_dir / "app.log").write_text("error at 12:00\n" * 100)
    wire = running.wire
    legacy = "/api/c/compapi/v2/jobv3"

    async def poll(job_id: int) -> dict[str, Any]:
        for _ in range(120):  # MAX_SCHEDULE_TIMES polls, more often than bk-log polls
            answer = await wire.get(f"{legacy}/get_job_instance_status/", {
                "bk_biz_id": 2, "job_instance_id": job_id, "bk_username": "admin",
                "return_ip_result": True})
            if answer["data"]["finished"]:
                return dict(answer["data"])
            await asyncio.sleep(0.25)
        raise AssertionError("the phase did not finish")

    # 1. pack
    pack = await wire.post(f"{legacy}/fast_execute_script/", {
        "bk_biz_id": 2, "bk_username": "admin", "operator": "admin", "account_alias": "root",
        "script_content": b64(PACK), "script_language": 1, "task_name": "[BKLOG] pack",
        "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in sources]},
        "timeout": 600, "script_param": b64(str(logs_dir / "app.log"))})
    status = await poll(pack["data"]["job_instance_id"])
    step = status["step_instance_list"][0]
    assert any(r["exit_code"] == 0 for r in step["step_ip_result_list"])
    logs = await wire.post(f"{legacy}/batch_get_job_instance_ip_log/", {
        "bk_biz_id": 2, "job_instance_id": pack["data"]["job_instance_id"],
        "step_instance_id": step["step_instance_id"],
        "ip_list": [{"ip": r["ip"], "bk_cloud_id": r["bk_cloud_id"]}
                    for r in step["step_ip_result_list"]]})
    packed: dict[int, str] = {}
    for item in logs["data"]["script_task_logs"]:
        for line in item["log_content"].splitlines():
            if line.startswith("<BKLOG>packed_path:"):
                packed[item["bk_host_id"]] = line[len("<BKLOG>packed_path:"):-len("</BKLOG>")]
    assert len(packed) == 2
    # 2. distribute to the transit host
    transit_dir = tmp_path / "transit" / "task-1"
    distribution = await wire.post(f"{legacy}/fast_transfer_file/", {
        "bk_username": "admin", "account": "root", "account_alias": "root",
        "task_name": "[BKLOG] File Distribution By admin", "bk_biz_id": 2,
        "file_source_list": [{"account": {"alias": "root"},
                              "server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0}]},
                              "file_list": [path]}
                             for ip, path in zip(sources, [packed[h] for h in sorted(packed)],
                                                 strict=True)],
        "file_target_path": f"{transit_dir}/[FILESRCIP]",
        "target_server": {"ip_list": [{"ip": transit, "bk_cloud_id": 0}]}})
    assert distribution["result"], distribution
    status = await poll(distribution["data"]["job_instance_id"])
    assert status["job_instance"]["status"] == 3, status
    assert sorted(os.listdir(transit_dir)) == sorted(f"0_{ip}" for ip in sources)
    # 3. upload from the transit host
    cos = await wire.post(f"{legacy}/fast_execute_script/", {
        "bk_biz_id": 2, "bk_username": "admin", "account_alias": "root",
        "script_content": b64(COS), "script_language": 1, "script_param": b64(str(transit_dir)),
        "target_server": {"ip_list": [{"ip": transit, "bk_cloud_id": 0}]}, "timeout": 600})
    status = await poll(cos["data"]["job_instance_id"])
    assert all(r["exit_code"] == 0 for r in status["step_instance_list"][0]["step_ip_result_list"])
    for path in packed.values():
        Path(path).unlink(missing_ok=True)


class SourceAndTarget:
    """A server (on fixed ports, so that it can start again where it was) with a
    source agent and the ``targets``' agents connected, for the length of an
    ``async with``; ``target`` is the first of them."""

    source = "127.0.0.2"

    def __init__(self, tmp_path: Path, database_url: str, window: float = 30,
                 targets: tuple[str, ...] = ("127.0.0.3",)) -> None:
        self.tmp_path, self.database_url, self.window = tmp_path, database_url, window
        self.targets, self.target = targets, targets[0]
        self.port, self.agent_port = free_port(), free_port()
        self.data_dir = tmp_path / "server"
        self.url = f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> SourceAndTarget:
        self.server = await self.start_server()
        self.boot = read_bootstrap(self.data_dir)
        self.wire = Wire(self.url, self.boot["bk_app_code"], self.boot["bk_app_secret"])
        self.agents = {ip: self.agent(ip) for ip in (self.source, *self.targets)}
        try:
            for agent in self.agents.values():
                await agent.start()
            await eventually(lambda: alive_ips(self.wire, list(self.agents)), timeout=30)
        except BaseException:
            # no __aexit__ follows a failed __aenter__
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.wire.close()
        for agent in self.agents.values():
            await agent.stop()
        await self.server.stop()

    async def start_server(self) -> Proc:
        return await start_server(self.data_dir, self.port, self.database_url,
                                  self.agent_port, self.window)

    def agent(self, ip: str) -> Proc:
        return agent_proc(self.url, self.boot["enroll_token"], self.tmp_path / ip, ip)

    async def crash(self) -> float:
        """SIGKILL the server and the source's agent with it, then start the server
        again; when it started (loop time)."""
        self.agents[self.source].kill()
        self.server.kill()
        assert self.server.proc is not None
        await self.server.proc.wait()
        await self.agents[self.source].stop()
        restarted = asyncio.get_running_loop().time()
        self.server = await self.start_server()
        return restarted

    async def source_back(self) -> None:
        self.agents[self.source] = self.agent(self.source)
        await self.agents[self.source].start()


async def test_a_restart_mid_upload_waits_for_the_source_agent(tmp_path: Path,
                                                              database_url: str) -> None:
    """The server dies while the source uploads and its agent dies with it: the server
    that starts again gives the source the recovery window to come back, as it gives the
    targets, rather than failing the transfer because its agent is not connected yet."""
    async with SourceAndTarget(tmp_path, database_url) as setup:
        wire = setup.wire
        digest = random_file(tmp_path / "big.bin", UPLOAD_MIB)
        # 1 MB/s: the upload to the server lasts a few seconds, and the kill lands inside it
        answer = await wire.v3("fast_transfer_file", transfer_body(
            [str(tmp_path / "big.bin")], [setup.source], [setup.target], f"{tmp_path}/out/",
            upload_speed_limit=1))
        sub = answer["data"]

        async def running() -> bool:
            return bool((await wire.status(sub["job_instance_id"]))
                        ["step_instance_list"][0]["status"] == 2)
        await eventually(running, timeout=30)
        await asyncio.sleep(1.0)
        await setup.crash()
        # the source's agent comes back a while after the server took the job over: past
        # the agent-lost grace (3 s), so only the recovery window keeps it waited for
        await asyncio.sleep(BACK_AFTER)
        await setup.source_back()
        data = await wire.wait(sub["job_instance_id"], timeout=120)
        results = data["step_instance_list"][0]["step_ip_result_list"]
        assert data["job_instance"]["status"] == 3, data
        assert [r["status"] for r in results] == [9], results
        assert sha256_of(tmp_path / "out" / "big.bin") == digest


async def _transfer_after_restart(tmp_path: Path, database_url: str, window: float,
                                  back_after: float | None) -> tuple[dict[str, Any], str, float]:
    """Kill the server with a source and a target agent connected, the source's agent
    with it; start the server again and, before the source's agent is back, a transfer
    from it. ``back_after``: when the source's agent connects again (None: never). The
    job's status, the target's file logs and how long after the restart it ended."""
    async with SourceAndTarget(tmp_path, database_url, window) as setup:
        wire = setup.wire
        (tmp_path / "src.txt").write_text("after the restart\n")
        restarted = await setup.crash()
        # the target's agent may not be back yet either: it is waited for the same way
        answer = await wire.v3("fast_transfer_file", transfer_body(
            [str(tmp_path / "src.txt")], [setup.source], [setup.target], f"{tmp_path}/out/"))
        sub = answer["data"]
        if back_after is not None:
            # past the agent-lost grace (3 s): only the recovery window keeps it waited for
            await asyncio.sleep(back_after)
            await setup.source_back()
        data = await wire.wait(sub["job_instance_id"], timeout=120)
        took = asyncio.get_running_loop().time() - restarted
        logs = await wire.v3("batch_get_job_instance_ip_log", {
            "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
            "step_instance_id": sub["step_instance_id"],
            "ip_list": [{"ip": setup.target, "bk_cloud_id": 0}]})
        rows = logs["data"]["file_task_logs"][0]["file_logs"]
        return data, " | ".join(r["log_content"] for r in rows), took


async def test_a_transfer_started_after_a_restart_waits_for_its_source_agent(
        tmp_path: Path, database_url: str) -> None:
    """A new transfer whose source's agent this server held before it was killed waits
    for that agent within the recovery window, as a new job's targets do."""
    data, logs, _ = await _transfer_after_restart(tmp_path, database_url, 30, 6.0)
    results = data["step_instance_list"][0]["step_ip_result_list"]
    assert data["job_instance"]["status"] == 3, (data, logs)
    assert [r["status"] for r in results] == [9], results
    assert (tmp_path / "out" / "src.txt").read_text() == "after the restart\n"


async def test_a_source_agent_that_never_returns_fails_at_the_windows_end(
        tmp_path: Path, database_url: str) -> None:
    """Waited for no longer than the window, and the failure says why."""
    # longer than the agent-lost grace (3 s), so that it is the window that ends the wait
    window = 8
    data, logs, took = await _transfer_after_restart(tmp_path, database_url, window, None)
    results = data["step_instance_list"][0]["step_ip_result_list"]
    assert data["job_instance"]["status"] == 4, data
    assert [r["status"] for r in results] != [9], results
    # the window runs from the server's start, after ``restarted``
    assert window <= took < window + 30, took
    assert "did not come back within" in logs and "restart" in logs, logs
