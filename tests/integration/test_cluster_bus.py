"""Three server nodes on PostgreSQL and Redis, with real agents spread over them:
any node takes any call, and a node that dies loses nothing."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.integration.cluster import Cluster, agents_of, cluster, needs_cluster, swarm, wait_ready
from tests.integration.harness import Proc, Wire, b64, eventually
from tests.integration.test_cron import A, cron_jobs, firings, make_plan, saved, set_status

from jobfleet.store.database import Database
from jobfleet.store.secrets import Cipher


async def owner(db: AsyncEngine, job_id: int) -> str | None:
    """The node whose driver holds the job (its lease), read from the database."""
    async with db.connect() as conn:
        value = (await conn.execute(text(
            "SELECT owner_node FROM job_instances WHERE id = :j"), {"j": job_id})).scalar()
    return None if value is None else str(value)


async def hosts_by_node(wire: Wire) -> tuple[list[int], dict[int, str]]:
    answer = await wire.http.get("/api/jobfleet/v1/hosts", headers=wire.headers())
    data = answer.json()["data"]
    return [h["bk_host_id"] for h in data], {h["bk_host_id"]: h["ip"] for h in data}


async def run(wire: Wire, script: str, ids: list[int]) -> tuple[int, int]:
    answer = await wire.v3("fast_execute_script", {
        "bk_biz_id": 2, "script_language": 1, "account_alias": "root",
        "script_content": b64(script), "target_server": {"host_id_list": ids}})
    assert answer["result"], answer
    return answer["data"]["job_instance_id"], answer["data"]["step_instance_id"]


async def check_every_host_once(wire: Wire, job_id: int, step_id: int, ips: dict[int, str],
                                expect: str) -> None:
    """Every host ends with one result, status 9, and its whole output exactly once."""
    data = await wire.wait(job_id, timeout=120)
    results = data["step_instance_list"][0]["step_ip_result_list"]
    assert len(results) == len(ips)
    assert {r["status"] for r in results} == {9}, [r for r in results if r["status"] != 9][:5]
    assert data["job_instance"]["status"] == 3
    ids = sorted(ips)
    for i in range(0, len(ids), 200):
        logs = await wire.v3("batch_get_job_instance_ip_log", {
            "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
            "host_id_list": ids[i:i + 200]})
        for item in logs["data"]["script_task_logs"]:
            assert item["log_content"] == expect.format(ip=ips[item["bk_host_id"]]), item


async def test_one_job_reaches_agents_on_every_node(tmp_path: Path, database_url: str) -> None:
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url) as c, agents_of(c, tmp_path, 30):
        ids, ips = await hosts_by_node(c.wires[1])
        assert len(ids) == 30
        job_id, step_id = await run(c.wires[0], 'echo "hi $JOBFLEET_HOST_IP"', ids)
        await check_every_host_once(c.wires[2], job_id, step_id, ips, "hi {ip}\n")
        # every node answers the same
        answers = [await w.status(job_id) for w in c.wires]
        assert all(a["job_instance"]["status"] == 3 for a in answers)


async def all_started(wire: Wire, job_id: int, step_id: int, ids: list[int]) -> None:
    """Wait until every host's script printed ``started``."""

    async def started() -> bool:
        logs = await wire.v3("batch_get_job_instance_ip_log", {
            "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
            "host_id_list": ids})
        return all(i["log_content"] == "started\n" for i in logs["data"]["script_task_logs"])
    await eventually(started, timeout=30)


async def test_terminate_through_a_node_that_neither_drives_nor_holds(
        tmp_path: Path, database_url: str) -> None:
    needs_cluster(database_url)
    # agents that never confirmed would end 404 only after this wait: 403 below is the
    # kill that reached them
    # the agents know node 2 only; node 0 drives; node 1 takes the terminate
    async with cluster(tmp_path, database_url, engine={"terminate_wait": 60.0}) as c, \
            agents_of(c, tmp_path, 10, on=[2]):
        ids, _ips = await hosts_by_node(c.wires[0])
        job_id, step_id = await run(c.wires[0], "echo started; sleep 300", ids)
        await all_started(c.wires[0], job_id, step_id, ids)
        began = time.monotonic()
        answer = await c.wires[1].v3("operate_job_instance", {
            "bk_biz_id": 2, "job_instance_id": job_id, "operation_code": 1})
        assert answer["result"], answer

        async def stopped() -> dict[str, Any] | None:
            data = await c.wires[1].status(job_id)
            return data if data["job_instance"]["status"] == 11 else None
        data = await eventually(stopped, timeout=20, interval=0.05)
        took = time.monotonic() - began
        results = data["step_instance_list"][0]["step_ip_result_list"]
        assert {r["status"] for r in results} == {403}, results
        # the kill went from node 0 through Redis to node 2 and its agents, long
        # before the termination's wait
        assert took < 30.0, took


async def test_a_file_uploaded_to_one_node_reaches_agents_of_another(
        tmp_path: Path, database_url: str) -> None:
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url) as c, agents_of(c, tmp_path, 3, on=[2]):
        ids, _ips = await hosts_by_node(c.wires[0])
        content = b"cluster file\n" * 100_000
        # uploaded to node 0
        url = await c.wires[0].v3("generate_local_file_upload_url", {
            "bk_biz_id": 2, "file_name_list": ["payload.bin"]})
        assert url["result"], url
        item = url["data"]["url_map"]["payload.bin"]
        put = await c.wires[0].http.put(item["upload_url"], content=content)
        assert put.status_code == 200, put.text
        # a job driven by node 1, to agents connected to node 2
        target = tmp_path / "target"
        answer = await c.wires[1].v3("fast_transfer_file", {
            "bk_biz_id": 2, "account_alias": "root", "file_target_path": str(target) + "/",
            "file_source_list": [{"file_type": 2, "file_list": [item["path"]]}],
            "target_server": {"host_id_list": ids}})
        assert answer["result"], answer
        data = await c.wires[1].wait(answer["data"]["job_instance_id"], timeout=60)
        assert data["job_instance"]["status"] == 3, data
        assert (target / "payload.bin").read_bytes() == content


async def spread_job(c: Cluster, tmp_path: Path, count: int, script: str, driver: int,
                     on: list[int] | None = None,
                     ) -> tuple[Proc, list[int], dict[int, str], int, int]:
    """A job driven by node ``driver`` on hosts spread over the nodes ``on`` (all)."""
    urls = c.urls if on is None else [c.urls[i] for i in on]
    agents = swarm(urls, c.boot["enroll_token"], count, tmp_path / "swarm")
    await agents.start()
    await wait_ready(agents, count)
    ids, ips = await hosts_by_node(c.wires[driver])
    assert len(ids) == count
    job_id, step_id = await run(c.wires[driver], script, ids)
    return agents, ids, ips, job_id, step_id


async def some_running(wire: Wire, job_id: int, at_least: int) -> bool:
    data = await wire.status(job_id)
    statuses = [r["status"] for r in data["step_instance_list"][0]["step_ip_result_list"]]
    return statuses.count(7) + statuses.count(9) >= at_least


@pytest.mark.parametrize("role", ["driver and holder", "holder", "driver only"])
async def test_kill_9_of_a_node_mid_job_loses_and_duplicates_nothing(
        tmp_path: Path, database_url: str, role: str) -> None:
    """Node 0 drives the job; the victim is node 0 holding agents too (300 hosts over
    three nodes), node 1 holding agents only, or node 0 holding none. Its agents move
    to the other nodes, its job is taken over, and every host ends with one result
    and its whole output once."""
    needs_cluster(database_url)
    count = 300 if role == "driver and holder" else 90
    async with cluster(tmp_path, database_url) as c:
        agents, _ids, ips, job_id, step_id = await spread_job(
            c, tmp_path, count, 'echo "start $JOBFLEET_HOST_IP"; sleep 4; echo end', driver=0,
            on=[1, 2] if role == "driver only" else None)
        try:
            await eventually(lambda: some_running(c.wires[2], job_id, count // 2), timeout=60,
                             interval=0.05)
            victim = c.nodes[1 if role == "holder" else 0]
            victim.kill()
            await check_every_host_once(c.wires[2], job_id, step_id, ips, "start {ip}\nend\n")
        finally:
            await agents.stop()


async def test_a_redis_restart_mid_job_loses_nothing(tmp_path: Path, database_url: str) -> None:
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url) as c:
        agents, _ids, ips, job_id, step_id = await spread_job(
            c, tmp_path, 60, 'echo "a $JOBFLEET_HOST_IP"; sleep 3; echo b', driver=0)
        try:
            await eventually(lambda: some_running(c.wires[1], job_id, 30), timeout=60)
            await c.redis.stop()
            down = time.monotonic()
            await asyncio.sleep(2.0)
            # a new, empty Redis on the same port: streams, groups and presence are gone
            await c.redis.start()
            back = time.monotonic()
            await check_every_host_once(c.wires[1], job_id, step_id, ips, "a {ip}\nb\n")
            print(f"redis down {back - down:.1f}s; job finished {time.monotonic() - back:.1f}s "
                  "after it came back")
            # and the cluster works on: a second job reaches every node's agents
            second, second_step = await run(c.wires[2], 'echo "again $JOBFLEET_HOST_IP"',
                                            sorted(ips))
            await check_every_host_once(c.wires[0], second, second_step, ips, "again {ip}\n")
        finally:
            await agents.stop()


async def test_cron_slots_fire_once_while_a_node_dies(tmp_path: Path, database_url: str) -> None:
    """A cron minute lasts a second here; three nodes race for every slot, one of them
    is killed on the way, and each slot still becomes exactly one job."""
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, engine={"cron_time_scale": 60}) as c:
        db = Database(database_url)
        try:
            added = await c.wires[0].post("/api/jobfleet/v1/hosts", {"bk_biz_id": 2, "ip": A},
                                          headers=c.wires[0].headers())
            assert added["result"], added
            plan_id = await make_plan(db, Cipher.from_data_dir(c.nodes[0].data_dir))
            cron = await saved(c.wires[1], name="each second", job_plan_id=plan_id,
                               expression="* * * * *",
                               global_var_list=[{"name": "token", "value": "k"}])
            assert (await set_status(c.wires[2], cron["id"], 1))["result"]
            await asyncio.sleep(4)
            c.nodes[0].kill()
            await asyncio.sleep(6)
            assert (await set_status(c.wires[1], cron["id"], 2))["result"]
            await asyncio.sleep(1)
            rows = await firings(db, cron["id"])
            fired = [r for r in rows if r.outcome == "fired"]
            assert len(fired) >= 6, rows
            assert [r for r in rows if r.outcome == "failed"] == [], rows
            assert len({r.slot for r in rows}) == len(rows)
            jobs = await cron_jobs(c.wires[2], cron["id"])
            assert sorted(j["job_instance_id"] for j in jobs) == sorted(
                r.job_instance_id for r in fired
            )
        finally:
            await db.close()


async def test_skip_of_a_termination_through_a_node_that_does_not_drive(
        tmp_path: Path, database_url: str) -> None:
    """Behind a load balancer a skip (operation 12) lands on any node: node 1 takes it
    for the job node 0 drives, whose agent, frozen, cannot confirm the termination."""
    needs_cluster(database_url)
    # a long termination wait and heartbeat: neither ends the termination by itself
    async with cluster(tmp_path, database_url, size=2, engine={"terminate_wait": 120.0},
                       heartbeat=120.0) as c:
        agents = swarm([c.urls[0]], c.boot["enroll_token"], 1, tmp_path / "swarm")
        await agents.start()
        assert agents.proc is not None
        try:
            await wait_ready(agents, 1)
            ids, _ips = await hosts_by_node(c.wires[0])
            job_id, step_id = await run(c.wires[0], "echo started; sleep 300", ids)
            await all_started(c.wires[0], job_id, step_id, ids)
            agents.proc.send_signal(signal.SIGSTOP)
            answer = await c.wires[0].v3("operate_job_instance", {
                "bk_biz_id": 2, "job_instance_id": job_id, "operation_code": 1})
            assert answer["result"], answer

            async def stopping() -> bool:
                data = await c.wires[1].status(job_id)
                return bool(data["step_instance_list"][0]["status"] == 10)
            await eventually(stopping, timeout=30, interval=0.2)
            answer = await c.wires[1].v3("operate_step_instance", {
                "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
                "operation_code": 12})
            assert answer["result"], answer
            # answered once applied: the step has ended
            data = await c.wires[1].status(job_id)
            assert data["step_instance_list"][0]["status"] == 11, data
            results = data["step_instance_list"][0]["step_ip_result_list"]
            assert [r["status"] for r in results] == [404], results
        finally:
            agents.proc.send_signal(signal.SIGCONT)
            await agents.stop()


async def test_skip_of_a_termination_in_a_cluster_without_redis(
        tmp_path: Path, database_url: str) -> None:
    """Two nodes share the database and nothing else: node 1 takes the skip for the job
    node 0 drives; node 0 learns of it from the store, as it learns of a terminate."""
    needs_cluster(database_url, redis=False)
    async with cluster(tmp_path, database_url, size=2, engine={"terminate_wait": 120.0},
                       heartbeat=120.0, with_redis=False) as c:
        agents = swarm([c.urls[0]], c.boot["enroll_token"], 1, tmp_path / "swarm")
        await agents.start()
        assert agents.proc is not None
        try:
            await wait_ready(agents, 1)
            ids, _ips = await hosts_by_node(c.wires[0])
            job_id, step_id = await run(c.wires[0], "echo started; sleep 300", ids)
            await all_started(c.wires[0], job_id, step_id, ids)
            agents.proc.send_signal(signal.SIGSTOP)
            answer = await c.wires[1].v3("operate_job_instance", {
                "bk_biz_id": 2, "job_instance_id": job_id, "operation_code": 1})
            assert answer["result"], answer

            async def stopping() -> bool:
                data = await c.wires[1].status(job_id)
                return bool(data["step_instance_list"][0]["status"] == 10)
            await eventually(stopping, timeout=30, interval=0.2)
            began = time.monotonic()
            answer = await c.wires[1].v3("operate_step_instance", {
                "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
                "operation_code": 12})
            assert answer["result"], answer
            # answered once the step has ended; the job ends right after it
            data = await c.wires[1].status(job_id)
            assert data["step_instance_list"][0]["status"] == 11, data
            results = data["step_instance_list"][0]["step_ip_result_list"]
            assert [r["status"] for r in results] == [404], results
            # within the driving node's look at the store (every second), not the
            # termination's wait (120 s)
            assert time.monotonic() - began < 60, time.monotonic() - began

            async def job_ended() -> bool:
                return bool((await c.wires[1].status(job_id))["job_instance"]["status"] == 11)
            await eventually(job_ended, timeout=10, interval=0.1)
            again = await c.wires[0].v3("operate_step_instance", {
                "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
                "operation_code": 12})
            assert again["code"] == 1241003, again
        finally:
            agents.proc.send_signal(signal.SIGCONT)
            await agents.stop()


async def test_a_termination_under_way_when_its_node_dies_ends_on_the_node_that_takes_over(
        tmp_path: Path, database_url: str) -> None:
    """Node 0 drives the job and dies (SIGKILL) while its step is terminating (10), its
    agent frozen so it cannot confirm: node 1 takes the job over and ends that step as a
    terminate ends it (the task killed again, or the host ended after the wait)."""
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=2, engine={"terminate_wait": 60.0},
                       heartbeat=120.0) as c:
        # the agent knows node 1 only, so it stays connected when node 0 dies
        agents = swarm([c.urls[1]], c.boot["enroll_token"], 1, tmp_path / "swarm")
        await agents.start()
        assert agents.proc is not None
        try:
            await wait_ready(agents, 1)
            ids, _ips = await hosts_by_node(c.wires[0])
            job_id, step_id = await run(c.wires[0], "echo started; sleep 300", ids)
            await all_started(c.wires[0], job_id, step_id, ids)
            agents.proc.send_signal(signal.SIGSTOP)
            answer = await c.wires[0].v3("operate_job_instance", {
                "bk_biz_id": 2, "job_instance_id": job_id, "operation_code": 1})
            assert answer["result"], answer

            async def stopping() -> bool:
                data = await c.wires[1].status(job_id)
                return bool(data["step_instance_list"][0]["status"] == 10)
            await eventually(stopping, timeout=30, interval=0.2)
            c.nodes[0].kill()
            agents.proc.send_signal(signal.SIGCONT)

            async def ended() -> dict[str, Any] | None:
                data = await c.wires[1].status(job_id)
                step = data["step_instance_list"][0]
                return data if step["status"] != 10 and data["finished"] else None
            data = await eventually(ended, timeout=60, interval=0.2)
            assert (data["job_instance"]["status"],
                    data["step_instance_list"][0]["status"]) == (11, 11), data
            results = data["step_instance_list"][0]["step_ip_result_list"]
            assert [r["status"] for r in results] == [403], results
        finally:
            agents.proc.send_signal(signal.SIGCONT)
            await agents.stop()


async def test_a_slow_upload_from_an_agent_of_another_node_completes(
        tmp_path: Path, database_url: str) -> None:
    """The source's agent is connected to node 1, the job driven by node 0: an upload
    that lasts seconds is asked for once and its answer taken, not asked again every
    second (each time dropping the answer to the request before) until the step's end."""
    import hashlib
    import os

    from tests.integration.harness import agent_proc
    from tests.integration.test_file_transfer import transfer_body

    needs_cluster(database_url)
    ip = "127.0.31.9"
    async with cluster(tmp_path, database_url, size=2) as c:
        source = agent_proc(c.urls[1], c.boot["enroll_token"], tmp_path / "agent", ip)
        await source.start()
        try:
            async def online() -> bool:
                answer = await c.wires[0].http.get("/api/jobfleet/v1/hosts",
                                                   headers=c.wires[0].headers())
                return any(h["ip"] == ip and h["alive"] for h in answer.json()["data"])
            await eventually(online, timeout=30)
            content = os.urandom(3 * 1024 * 1024)
            (tmp_path / "src.bin").write_bytes(content)
            # 1 MB/s: the upload to the server lasts ~3 s
            answer = await c.wires[0].v3("fast_transfer_file", transfer_body(
                [str(tmp_path / "src.bin")], [ip], [ip], f"{tmp_path}/out/",
                upload_speed_limit=1, timeout=40))
            assert answer["result"], answer
            data = await c.wires[0].wait(answer["data"]["job_instance_id"], timeout=90)
            assert data["job_instance"]["status"] == 3, data
            out = (tmp_path / "out" / "src.bin").read_bytes()
            assert hashlib.sha256(out).digest() == hashlib.sha256(content).digest()
        finally:
            await source.stop()
