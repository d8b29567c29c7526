"""GSE calls on a cluster: the agent holds a connection to one node, the calls reach
another, and still operate its processes, deliver its messages and report its load."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from tests.integration.cluster import cluster, needs_cluster, swarm, wait_ready
from tests.integration.harness import Wire, eventually
from tests.integration.test_cluster_bus import hosts_by_node
from tests.integration.test_gse_procs import V2, daemon_dir, finished, proc_request


async def operate(wire: Wire, body: dict[str, Any]) -> dict[str, Any]:
    answer = await wire.post(f"{V2}/proc/operate_proc_multi", {"proc_operate_req": [body]})
    assert answer["result"], answer
    return await finished(wire, answer["data"]["task_id"], timeout=60)


async def start_in_flight(wire: Wire, setup: Path, ip: str) -> tuple[dict[str, Any], str]:
    """A start whose process never writes its pid file: the agent checks for a minute, so
    the operation stays in flight; its task and the key of its one result."""
    body = proc_request(setup, 0, [ip])
    body["spec"]["control"]["start_cmd"] = "true"
    body["spec"]["alive_monitor_policy"]["start_check_secs"] = 60
    answer = await wire.post(f"{V2}/proc/operate_proc_multi", {"proc_operate_req": [body]})
    assert answer["result"], answer
    return {"task_id": answer["data"]["task_id"]}, f"0:{ip}:nodeman:daemon"


async def answered(wire: Wire, task: dict[str, Any], key: str, timeout: float) -> dict[str, Any]:
    """The operation's result once it is no longer "handling" (115)."""

    async def result() -> dict[str, Any] | None:
        got = await wire.post(f"{V2}/proc/get_proc_operate_result_v2", task)
        assert got["result"], got
        return got["data"][key] if got["data"][key]["error_code"] != 115 else None
    found: dict[str, Any] = await eventually(result, timeout=timeout)
    return found


async def test_gse_calls_reach_an_agent_held_by_another_node(
        tmp_path: Path, database_url: str) -> None:
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=2) as c:
        state = tmp_path / "swarm"
        agents = swarm([c.urls[0]], c.boot["enroll_token"], 1, state)
        await agents.start()
        setup = daemon_dir()
        try:
            await wait_ready(agents, 1)
            _ids, ips = await hosts_by_node(c.wires[1])
            [ip] = ips.values()
            wire = c.wires[1]  # the node that does not hold the agent

            # the load the agent reported to node 0, read through node 1
            async def load() -> dict[str, Any] | None:
                info = await wire.post(f"{V2}/cluster/list_agent_info",
                                       {"agent_id_list": [f"0:{ip}"]})
                assert info["result"], info
                item = info["data"][0]
                return item if item["mem_rate"] > 0 and item["start_time"] > 0 else None

            item = await eventually(load, timeout=30)
            assert item["status_code"] == 2, item

            # a daemon started, kept alive and stopped through node 1
            key = f"0:{ip}:nodeman:daemon"
            started = await operate(wire, proc_request(setup, 0, [ip]))
            assert started[key]["error_code"] == 0, started
            instance = json.loads(started[key]["content"])["value"][0]["process"][0][
                "instance"][0]
            os.kill(instance["pid"], signal.SIGKILL)

            async def restarted() -> dict[str, Any] | None:
                status = await wire.post(f"{V2}/proc/get_proc_status_v2", {
                    "meta": {"namespace": "nodeman", "name": "daemon"},
                    "agent_id_list": [f"0:{ip}"]})
                assert status["result"], status
                [info] = status["data"]["proc_infos"]
                return info if info["status"] == 1 and info["pid"] != instance["pid"] else None

            info = await eventually(restarted, timeout=30)
            assert info["restarts"] >= 1, info
            stopped = await operate(wire, proc_request(setup, 1, [ip]))
            assert stopped[key]["error_code"] == 0, stopped

            sent = await wire.post(f"{V2}/cluster/dispatch_message", {
                "message_id": "m-1", "agent_id_list": [f"0:{ip}"], "slot_id": 3,
                "content": "reload"})
            assert sent["result"] and sent["data"]["results"][0]["error_code"] == 0, sent
            delivered = state / ip / "messages" / "3" / "m-1.json"
            assert json.loads(delivered.read_text())["content"] == "reload"
        finally:
            await agents.stop()
            pid = setup / "daemon.pid"
            if pid.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid.read_text().split()[0]), signal.SIGKILL)
            shutil.rmtree(setup, ignore_errors=True)


async def test_a_dead_nodes_operation_in_flight_is_answered_by_a_live_node(
        tmp_path: Path, database_url: str) -> None:
    """The node that asks an agent for a process operation is killed (SIGKILL) before the
    agent answered, and never comes back: once the cluster holds it gone, a live node
    answers the operation (65535, the server stopped), not left "handling" (115) for
    ever."""
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=2) as c:
        agents = swarm([c.urls[0]], c.boot["enroll_token"], 1, tmp_path / "swarm")
        await agents.start()
        setup = daemon_dir()
        try:
            await wait_ready(agents, 1)
            _ids, ips = await hosts_by_node(c.wires[0])
            [ip] = ips.values()

            async def online() -> bool:
                state = await c.wires[0].post(f"{V2}/cluster/list_agent_state",
                                              {"agent_id_list": [f"0:{ip}"]})
                return bool(state["result"]) and state["data"][0]["status_code"] == 2
            await eventually(online, timeout=30)
            task, key = await start_in_flight(c.wires[0], setup, ip)
            handling = await c.wires[1].post(f"{V2}/proc/get_proc_operate_result_v2", task)
            assert handling["data"][key]["error_code"] == 115, handling
            c.nodes[0].kill()
            result = await answered(c.wires[1], task, key, timeout=45)
            assert result["error_code"] == 65535, result
            assert "stopped" in result["error_msg"], result
        finally:
            await agents.stop()
            shutil.rmtree(setup, ignore_errors=True)


async def test_a_node_that_died_while_redis_restarted_empty_is_still_found_gone(
        tmp_path: Path, database_url: str) -> None:
    """Node 0 is killed and Redis restarts empty before the others held it gone: the new
    Redis has no record of node 0 at all. Node 1 still finds it gone (it knew node 0
    alive), so GSE answers through node 1 say its agent is not running, and the process
    operation node 0 had in flight is answered, instead of "running" and "handling"
    for ever."""
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=2) as c:
        agents = swarm([c.urls[0]], c.boot["enroll_token"], 1, tmp_path / "swarm")
        await agents.start()
        setup = daemon_dir()
        try:
            await wait_ready(agents, 1)
            _ids, ips = await hosts_by_node(c.wires[0])
            [ip] = ips.values()

            async def status_code() -> int:
                state = await c.wires[1].post(f"{V2}/cluster/list_agent_state",
                                              {"agent_id_list": [f"0:{ip}"]})
                assert state["result"], state
                return int(state["data"][0]["status_code"])

            async def running() -> bool:
                return await status_code() == 2
            await eventually(running, timeout=30)
            task, key = await start_in_flight(c.wires[0], setup, ip)
            c.nodes[0].kill()
            await c.redis.stop()
            await c.redis.start()

            async def stopped() -> bool:
                return await status_code() == 0
            await eventually(stopped, timeout=60, interval=0.5)
            result = await answered(c.wires[1], task, key, timeout=30)
            assert result["error_code"] == 65535, result
        finally:
            await agents.stop()
            shutil.rmtree(setup, ignore_errors=True)
