"""Nothing about a running job lives only in memory: kill the server or an agent mid-job."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.harness import (
    AGENT_BACKOFF_ARGS,
    Proc,
    Running,
    Wire,
    agent_proc,
    alive_ips,
    b64,
    eventually,
    free_port,
    run_server,
    wait_healthy,
)
from tests.integration.test_plans import execute, hosts, make_plan, script
from tests.integration.test_script_execution import sleep_marker, tree_alive

from jobfleet.server import read_bootstrap

HOSTS = 100
A_HOST = "127.0.0.30"
PG_CLUSTER = Path(__file__).resolve().parents[2] / "scripts" / "pg-cluster.sh"


async def start_server(data_dir: Path, port: int, database_url: str,
                       agent_port: int = 0, recovery_window: float = 30) -> Proc:
    """Restart on the same ``port`` and ``agent_port``, as an operator would."""
    server = Proc(["jobfleet", "server", "--data-dir", str(data_dir), "--port", str(port),
                   "--agent-port", str(agent_port),
                   "--database-url", database_url, "--agent-lost-grace", "3",
                   "--recovery-window", f"{recovery_window:g}", "--log-level", "warning"], {})
    await server.start()
    try:
        await wait_healthy(f"http://127.0.0.1:{port}")
    except BaseException:
        # a server that is not up in time is not left running past its test
        await server.stop()
        raise
    return server


async def test_server_sigkill_mid_job_loses_and_duplicates_nothing(
        tmp_path: Path, database_url: str) -> None:
    port, agent_port = free_port(), free_port()
    data_dir = tmp_path / "server"
    server = await start_server(data_dir, port, database_url, agent_port)
    boot = read_bootstrap(data_dir)
    url = f"http://127.0.0.1:{port}"
    swarm = Proc(["jobfleet.agent.swarm", "--server", url, "--count", str(HOSTS),
                  "--concurrency", "16", "--state-dir", str(tmp_path / "swarm"),
                  *AGENT_BACKOFF_ARGS],
                 {"JOBFLEET_ENROLL_TOKEN": boot["enroll_token"]})
    await swarm.start()
    wire = Wire(url, boot["bk_app_code"], boot["bk_app_secret"])
    try:
        assert swarm.proc is not None and swarm.proc.stdout is not None
        line = await asyncio.wait_for(swarm.proc.stdout.readline(), 120)
        assert line.decode().strip() == f"ready {HOSTS}"
        hosts = await wire.http.get("/api/jobfleet/v1/hosts", headers=wire.headers())
        ids = [h["bk_host_id"] for h in hosts.json()["data"]]
        ips = {h["bk_host_id"]: h["ip"] for h in hosts.json()["data"]}
        assert len(ids) == HOSTS
        answer = await wire.v3("fast_execute_script", {
            "bk_biz_id": 2, "script_language": 1, "account_alias": "root",
            "script_content": b64('sleep 0.5; echo "done $JOBFLEET_HOST_IP"'),
            "target_server": {"host_id_list": ids}})
        job_id = answer["data"]["job_instance_id"]
        step_id = answer["data"]["step_instance_id"]

        async def some_done() -> bool:
            data = await wire.status(job_id)
            statuses = [r["status"] for r in data["step_instance_list"][0]["step_ip_result_list"]]
            return 10 <= statuses.count(9) <= 60
        await eventually(some_done, timeout=30, interval=0.05)
        server.kill()
        assert server.proc is not None
        await server.proc.wait()
        await asyncio.sleep(1.0)  # hosts keep finishing while no server listens
        server = await start_server(data_dir, port, database_url, agent_port)
        data = await wire.wait(job_id, timeout=90)
        results = data["step_instance_list"][0]["step_ip_result_list"]
        assert len(results) == HOSTS
        assert {r["status"] for r in results} == {9}, [r for r in results if r["status"] != 9]
        assert data["job_instance"]["status"] == 3
        for part in (ids[:50], ids[50:]):
            logs = await wire.v3("batch_get_job_instance_ip_log", {
                "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
                "host_id_list": part})
            for item in logs["data"]["script_task_logs"]:
                assert item["log_content"] == f"done {ips[item['bk_host_id']]}\n"
    finally:
        await wire.close()
        await swarm.stop()
        await server.stop()


@pytest.mark.parametrize("crashes", [1, 2])
async def test_a_job_started_after_a_restart_waits_for_the_agents_it_had(
        tmp_path: Path, database_url: str, crashes: int) -> None:
    """Killed with its agents connected, the server starts again before they do: a job
    sent to one of them meanwhile (an operator pressing start again) waits for its agent
    within the recovery window, as a job it recovered does, instead of failing with 310
    because that agent has not reconnected yet. ``crashes=2``: the first start after the
    kill dies too before the agent is back (a crash loop); the next still waits for it."""
    port, agent_port = free_port(), free_port()
    data_dir = tmp_path / "server"
    server = await start_server(data_dir, port, database_url, agent_port)
    url = f"http://127.0.0.1:{port}"
    boot = read_bootstrap(data_dir)
    wire = Wire(url, boot["bk_app_code"], boot["bk_app_secret"])

    def agent() -> Proc:
        return agent_proc(url, boot["enroll_token"], tmp_path / "agent", A_HOST)
    host = agent()
    try:
        await host.start()

        await eventually(lambda: alive_ips(wire, [A_HOST]), timeout=30)
        host.kill()
        server.kill()
        assert server.proc is not None
        await server.proc.wait()
        await host.stop()
        for _ in range(crashes - 1):
            server = await start_server(data_dir, port, database_url, agent_port)
            server.kill()
            await server.proc.wait()
        server = await start_server(data_dir, port, database_url, agent_port)
        job = await wire.run_script("echo back", [A_HOST])
        await asyncio.sleep(1.0)
        host = agent()
        await host.start()
        data = await wire.wait(job["job_instance_id"], timeout=60)
        results = data["step_instance_list"][0]["step_ip_result_list"]
        assert [r["status"] for r in results] == [9], results
        assert data["job_instance"]["status"] == 3
        assert (await wire.logs(job["job_instance_id"], job["step_instance_id"], [A_HOST])
                ) == {A_HOST: "back\n"}
    finally:
        await wire.close()
        await host.stop()
        await server.stop()


async def test_agent_killed_mid_script_ends_host_with_310(running: Running,
                                                           tmp_path: Path) -> None:
    marker = sleep_marker("4244.25")
    agent = agent_proc(running.url, running.boot["enroll_token"], tmp_path / "agent",
                       "127.0.0.7")
    await agent.start()
    try:
        await eventually(lambda: alive_ips(running.wire, ["127.0.0.7"]), timeout=30)
        sub = await running.wire.run_script(f"echo started; sleep {marker}", ["127.0.0.7"])

        async def started() -> bool:
            logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"],
                                           ["127.0.0.7"])
            return logs["127.0.0.7"] == "started\n"
        await eventually(started)
        agent.kill()
        killed_at = time.monotonic()
        data = await running.wire.wait(sub["job_instance_id"], timeout=30)
        elapsed = time.monotonic() - killed_at
        result = data["step_instance_list"][0]["step_ip_result_list"][0]
        assert result["status"] == 310 and data["job_instance"]["status"] == 4
        # the harness server allows 1 s for the agent to come back, plus detection and a
        # poll; its recovery window, the other way a host could end, is 8 s
        assert elapsed < 8, elapsed
        logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"],
                                       ["127.0.0.7"])
        assert logs["127.0.0.7"].startswith("started\n")
        assert "did not come back" in logs["127.0.0.7"]
        # the agent's script does not outlive it: its watchdog kills the task
        await eventually(lambda: asyncio.sleep(0, not tree_alive(marker)), timeout=10)
        await agent.start()
    finally:
        await agent.stop()


async def test_agent_restart_replays_results_it_held(running: Running, tmp_path: Path) -> None:
    """A result produced while the server could not hear it arrives after the reconnect."""
    agent = agent_proc(running.url, running.boot["enroll_token"], tmp_path / "agent",
                       "127.0.0.8")
    await agent.start()
    try:
        await eventually(lambda: alive_ips(running.wire, ["127.0.0.8"]), timeout=30)
        sub = await running.wire.run_script("sleep 0.5; echo finished", ["127.0.0.8"])
        assert agent.proc is not None
        # freeze the agent so the script finishes but its result cannot be sent yet
        os.kill(agent.proc.pid, signal.SIGSTOP)
        await asyncio.sleep(0.3)
        os.kill(agent.proc.pid, signal.SIGCONT)
        data = await running.wire.wait(sub["job_instance_id"], timeout=30)
        assert data["step_instance_list"][0]["step_ip_result_list"][0]["status"] == 9
        logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"],
                                       ["127.0.0.8"])
        assert logs["127.0.0.8"] == "finished\n"
    finally:
        await agent.stop()


def _pg_ctl(cluster: Path, *args: str) -> None:
    """``pg_ctl`` on a cluster of scripts/pg-cluster.sh, as the user who owns it."""
    bindir = subprocess.run([str(PG_CLUSTER), "bindir"], capture_output=True, text=True,
                            check=True).stdout.strip()
    owner = cluster.joinpath("data").owner()
    runas = ["runuser", "-u", owner, "--"] if os.geteuid() == 0 else []
    subprocess.run([*runas, f"{bindir}/pg_ctl", f"--pgdata={cluster}/data",
                    f"--log={cluster}/postgres.log", "--wait", *args],
                   cwd=cluster, check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def own_postgresql() -> Iterator[tuple[str, Callable[[float], Awaitable[None]]]]:
    """A PostgreSQL cluster of this test's own, and a way to take it away for a while."""
    if subprocess.run([str(PG_CLUSTER), "bindir"], capture_output=True).returncode:
        pytest.skip("no PostgreSQL server binaries")
    # outside pytest's directory, which the cluster's own user may not enter
    cluster = Path(tempfile.mkdtemp(prefix="jobfleet-pg-"))
    url = subprocess.run([str(PG_CLUSTER), "start", str(cluster)], capture_output=True,
                         text=True, check=True).stdout.strip()
    port = url.rsplit(":", 1)[1].split("/")[0]

    async def outage(seconds: float) -> None:
        # a fast stop, not an immediate one: the tests' clusters commit without waiting
        # for the WAL (synchronous_commit off), so a crash would lose committed rows
        _pg_ctl(cluster, "--mode=fast", "stop")
        await asyncio.sleep(seconds)
        _pg_ctl(cluster, f"--options=-p {port}", "start")
    try:
        yield url, outage
    finally:
        subprocess.run([str(PG_CLUSTER), "stop", str(cluster)], capture_output=True)


async def test_postgresql_down_for_a_while_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """The database goes away under a running job for longer than the engine's periodic
    checks of its steps wait, and comes back: every result is stored once."""
    ips = [f"127.0.0.{20 + i}" for i in range(4)]
    with own_postgresql() as (url, outage):
        async with run_server(tmp_path, url) as running:
            await running.start_agents(ips)
            job = await running.wire.run_script(
                'echo "start $JOBFLEET_HOST_IP"; sleep 1; echo "end $JOBFLEET_HOST_IP"', ips)
            await asyncio.sleep(0.3)
            # past several of the engine's checks of the waiting step (1 s in tests)
            await outage(4)
            data = await running.wire.wait(job["job_instance_id"], timeout=60)
            results = data["step_instance_list"][0]["step_ip_result_list"]
            assert {r["status"] for r in results} == {9}, results
            assert data["job_instance"]["status"] == 3
            logs = await running.wire.logs(job["job_instance_id"], job["step_instance_id"], ips)
            assert logs == {ip: f"start {ip}\nend {ip}\n" for ip in ips}


async def test_a_confirmation_waits_through_a_postgresql_restart(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A job may wait days for its approvers: a database restart meanwhile must not end
    it (nor its driver, which could then end it 9 if the database came back just as it
    gave up), and the confirmation given afterwards runs the rest."""
    with own_postgresql() as (url, outage):
        async with run_server(tmp_path, url) as running:
            await running.start_agents([A_HOST])
            plan_id, _ = await make_plan(running, [
                {"name": "go?", "type": 3,
                 "approval_info": {"approval_user": {"user_list": ["admin"]}}},
                script("after", "echo after\n", hosts(A_HOST)),
            ], [])
            job_id = (await execute(running, plan_id))["data"]["job_instance_id"]
            wire = running.wire

            async def waiting() -> dict[str, Any] | None:
                data = await wire.status(job_id)
                return data if data["job_instance"]["status"] == 7 else None
            step_id = (await eventually(waiting))["step_instance_list"][0]["step_instance_id"]
            await outage(4)
            assert (await eventually(waiting))["finished"] is False
            ok = await wire.v3("operate_step_instance", {
                "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
                "operation_code": 6})
            assert ok["result"], ok
            done = await wire.wait(job_id)
            assert [s["status"] for s in done["step_instance_list"]] == [3, 3], done
            assert "job_failed" not in caplog.text


# before the first step has its hosts, and between steps: the driver dies on both
@pytest.mark.parametrize("delay", [0.05, 2.3])
async def test_a_long_outage_under_a_job_of_several_steps_leaves_no_job_running(
        tmp_path: Path, delay: float) -> None:
    """The database goes away for longer than the driver of a job of several steps rides
    out, at moments that hit different calls of the driver: the driver dies, and so does
    its attempt to end the job; the lease keeper resumes the job once the database is
    back, and it ends with every host's result stored once."""
    ips = [f"127.0.0.{40 + i}" for i in range(2)]
    with own_postgresql() as (url, outage):
        async with run_server(tmp_path, url) as running:
            await running.start_agents(ips)
            plan_id, _ = await make_plan(running, [
                script(f"s{n}", f'sleep 0.4; echo "s{n} $JOBFLEET_HOST_IP"\n', hosts(*ips))
                for n in range(4)], [])
            job_id = (await execute(running, plan_id))["data"]["job_instance_id"]
            await asyncio.sleep(delay)
            await outage(12)
            data = await running.wire.wait(job_id, timeout=90)
            assert data["job_instance"]["status"] in (3, 4, 9), data
            for n, step in enumerate(data["step_instance_list"]):
                results = step["step_ip_result_list"]
                assert len(results) in (0, len(ips)), results
                if step["status"] == 3:
                    logs = await running.wire.logs(job_id, step["step_instance_id"], ips)
                    assert logs == {ip: f"s{n} {ip}\n" for ip in ips}, logs
