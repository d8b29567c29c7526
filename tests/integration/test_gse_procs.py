"""GSE process management, list_agent_info and dispatch_message on real agents."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from tests.integration.harness import Running, Wire, agent_proc, eventually, free_port, run_server
from tests.integration.test_agent_messages import raw_agent
from tests.integration.test_durability import start_server

from jobfleet.domain import protocol
from jobfleet.server import read_bootstrap

V2 = "/api/bk-gse/prod/api/v2"
V1 = "/api/c/compapi/v2/gse"
IPS = ["127.0.0.2", "127.0.0.3"]

DAEMON = """#!/bin/sh
while true; do sleep 0.2; done
"""


def proc_request(setup: Path, op_type: int, ips: list[str],
                 user: str = "root") -> dict[str, Any]:
    pid_file = setup / "daemon.pid"
    return {
        "meta": {"namespace": "nodeman", "name": "daemon", "labels": {"proc_name": "daemon"}},
        "op_type": op_type,
        "agent_id_list": [f"0:{ip}" for ip in ips],
        "spec": {
            "identity": {"proc_name": "daemon.sh", "setup_path": str(setup),
                         "pid_path": str(pid_file), "user": user},
            "control": {"start_cmd": f"./daemon.sh >/dev/null 2>&1 & echo $! > {pid_file}",
                        "stop_cmd": "", "restart_cmd": "", "reload_cmd": ""},
            "alive_monitor_policy": {"auto_type": 1, "start_check_secs": 5},
        },
    }


async def finished(wire: Wire, task_id: str, *, timeout: float = 30,
                   path: str = f"{V2}/proc/get_proc_operate_result_v2") -> dict[str, Any]:
    """An operation's results once no host is still handling it (115)."""

    async def done() -> dict[str, Any] | None:
        result = await wire.post(path, {"task_id": task_id})
        assert result["result"], result
        data = dict(result["data"])
        return data if all(v["error_code"] != 115 for v in data.values()) else None

    return dict(await eventually(done, timeout=timeout))


async def operate(running: Running, body: dict[str, Any]) -> dict[str, Any]:
    answer = await running.wire.post(f"{V2}/proc/operate_proc_multi",
                                     {"proc_operate_req": [body]})
    assert answer["result"], answer
    return await finished(running.wire, answer["data"]["task_id"])


async def status(running: Running, setup: Path, ips: list[str]) -> list[dict[str, Any]]:
    body = proc_request(setup, 2, ips)
    answer = await running.wire.post(f"{V2}/proc/get_proc_status_v2",
                                     {k: body[k] for k in ("meta", "agent_id_list")})
    assert answer["result"], answer
    return list(answer["data"]["proc_infos"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] != "Z"


async def test_a_delegated_daemon_is_kept_alive_and_stopped(running: Running,
                                                            tmp_path: Path) -> None:
    await running.start_agents(IPS[:1])
    setup = tmp_path / "daemon"
    setup.mkdir()
    script = setup / "daemon.sh"
    script.write_text(DAEMON)
    script.chmod(0o755)

    started = await operate(running, proc_request(setup, 0, IPS[:1]))
    key = f"0:{IPS[0]}:nodeman:daemon"
    assert started[key]["error_code"] == 0, started
    content = json.loads(started[key]["content"])
    instance = content["value"][0]["process"][0]["instance"][0]
    assert instance["pid"] > 0 and instance["isAuto"] is True
    first = instance["pid"]

    [info] = await status(running, setup, IPS[:1])
    assert (info["status"], info["isauto"], info["pid"], info["restarts"]) == (1, True, first, 0)

    # killed behind the agent's back: the agent starts it again and counts the restart
    os.kill(first, signal.SIGKILL)

    async def restarted() -> dict[str, Any] | None:
        [info] = await status(running, setup, IPS[:1])
        return info if info["status"] == 1 and info["pid"] != first else None

    info = await eventually(restarted, timeout=15)
    assert info["restarts"] == 1

    stopped = await operate(running, proc_request(setup, 1, IPS[:1]))
    assert stopped[key]["error_code"] == 0, stopped
    await eventually(lambda: asyncio.sleep(0, not alive(info["pid"])), timeout=10)
    [info] = await status(running, setup, IPS[:1])
    assert (info["status"], info["isauto"]) == (2, False)
    await asyncio.sleep(2)  # not delegated any more: nothing starts it again
    [info] = await status(running, setup, IPS[:1])
    assert info["status"] == 2

    # stopping what is not running says so (GSE's 829)
    again = await operate(running, proc_request(setup, 1, IPS[:1]))
    assert again[key]["error_code"] == 829


async def test_proc_requests_are_checked_and_audited(running: Running, tmp_path: Path) -> None:
    await running.start_agents(IPS[:1])
    wire = running.wire
    bad = await wire.post(f"{V2}/proc/operate_proc_multi", {"proc_operate_req": [
        {**proc_request(tmp_path, 5, IPS[:1])}]})
    assert (bad["result"], bad["code"]) == (False, 1241010), bad
    # an unknown agent is answered in the task (GSE's 117), as GSE answers it
    unknown = await operate(running, proc_request(tmp_path, 0, ["127.9.9.9"]))
    assert unknown["0:127.9.9.9:nodeman:daemon"]["error_code"] == 117, unknown
    relative = proc_request(tmp_path, 0, IPS[:1])
    relative["spec"]["identity"]["setup_path"] = "relative/dir"
    refused = await wire.post(f"{V2}/proc/operate_proc_multi", {"proc_operate_req": [relative]})
    assert refused["result"] is False and refused["code"] == 1241010, refused
    missing = await wire.post(f"{V2}/proc/get_proc_operate_result_v2", {"task_id": "GSETASK:x"})
    assert missing["result"] is False
    # GSE 1.0 (bk-log's SDK): a session, then a command, then its result by id
    session = await wire.post(f"{V1}/proc_create_session/", {"bk_biz_id": 2})
    assert session["result"] and session["data"]["session_id"]
    setup = tmp_path / "d1"
    setup.mkdir()
    (setup / "daemon.sh").write_text(DAEMON)
    (setup / "daemon.sh").chmod(0o755)
    body = proc_request(setup, 2, IPS[:1])
    body["hosts"] = [{"ip": IPS[0], "bk_cloud_id": 0}]
    del body["agent_id_list"]
    run = await wire.post(f"{V1}/proc_run_command/", {**body, "session_id": "x"})
    assert run["result"], run

    async def result() -> dict[str, Any] | None:
        got = await wire.get(f"{V1}/proc_get_task_result_by_id/",
                             {"task_id": run["data"]["task_id"]})
        assert got["result"], got
        items = list(got["data"].values())
        return got["data"] if items and items[0]["error_code"] != 115 else None

    data = await eventually(result)
    assert next(iter(data.values()))["error_code"] == 0
    entries = await wire.get("/api/jobfleet/v1/audit/entries", {"action": "gse_operate_proc"})
    assert entries["result"] and entries["data"]["total"] >= 1, entries


async def test_list_agent_info_and_dispatch_message(running: Running) -> None:
    await running.start_agents(IPS)
    wire = running.wire
    info = await wire.post(f"{V2}/cluster/list_agent_info",
                           {"agent_id_list": [f"0:{ip}" for ip in IPS] + ["0:127.1.1.1"]})
    assert info["result"], info
    items = {i["bk_agent_id"]: i for i in info["data"]}
    assert set(items) == {f"0:{ip}" for ip in IPS}
    for ip in IPS:
        item = items[f"0:{ip}"]
        assert item["bk_host_ip"] == ip and item["status_code"] == 2 and item["code"] == 0
        assert {"bk_cloud_id", "bk_os_type", "report_time", "parent_ip", "parent_port",
                "version", "cpu_rate", "mem_rate", "start_time", "run_mode", "status",
                "last_status_code", "last_status", "remark", "message"} <= set(item)
    none = await wire.post(f"{V2}/cluster/list_agent_info", {"agent_id_list": ["0:127.1.1.1"]})
    assert (none["result"], none["code"]) == (False, 1011003)

    sent = await wire.post(f"{V2}/cluster/dispatch_message", {
        "message_id": "m-1", "agent_id_list": [f"0:{ip}" for ip in IPS] + ["0:127.1.1.1"],
        "content": json.dumps({"action": "reload"}), "slot_id": 7, "token": "t"})
    assert sent["result"], sent
    codes = {r["bk_agent_id"]: r["error_code"] for r in sent["data"]["results"]}
    assert codes == {f"0:{IPS[0]}": 0, f"0:{IPS[1]}": 0, "0:127.1.1.1": 117}
    for ip in IPS:
        delivered = running.data_dir / f"agent-{ip}" / "messages" / "7" / "m-1.json"
        assert json.loads(json.loads(delivered.read_text())["content"]) == {"action": "reload"}
    no_id = await wire.post(f"{V2}/cluster/dispatch_message", {
        "agent_id_list": [f"0:{IPS[0]}"], "content": "x", "slot_id": 1})
    assert no_id["result"] is False and no_id["code"] == 1241004, no_id
    too_long = await wire.post(f"{V2}/cluster/dispatch_message", {
        "message_id": "m" * 65, "agent_id_list": [f"0:{IPS[0]}"], "content": "x", "slot_id": 1})
    assert too_long["result"] is False, too_long


async def test_agent_ids_past_any_cloud_id_are_unknown(running: Running,
                                                      tmp_path: Path) -> None:
    """An agent id ``<cloud>:<ip>`` whose cloud is past any row's id names no agent: each
    call answers as for an unknown agent, never with an internal error."""
    await running.start_agents(IPS[:1])
    wire = running.wire
    huge = f"{'9' * 30}:{IPS[0]}"
    longest = f"{'9' * 5000}:{IPS[0]}"
    for name in ("list_agent_info", "list_agent_state"):
        for agent_id in (huge, longest):
            answer = await wire.post(f"{V2}/cluster/{name}", {"agent_id_list": [agent_id]})
            assert (answer["result"], answer["code"]) == (False, 1011003), answer
    sent = await wire.post(f"{V2}/cluster/dispatch_message", {
        "message_id": "m-2", "agent_id_list": [huge], "content": "x", "slot_id": 1})
    assert sent["result"], sent
    assert [r["error_code"] for r in sent["data"]["results"]] == [117]
    body = {**proc_request(tmp_path, 0, []), "agent_id_list": [huge]}
    results = await operate(running, body)
    assert [(k, v["error_code"]) for k, v in results.items()] == [
        (f"{huge}:nodeman:daemon", 117)], results


async def test_processes_of_another_business_are_refused(running: Running,
                                                         tmp_path: Path) -> None:
    """Operations are authorized by the hosts' business: a user of business 3 (or an app
    limited to it) neither operates nor sees the agents of business 2."""
    await running.start_agents(IPS[:1])
    wire = running.wire
    admin = "/api/jobfleet/v1"
    assert (await wire.post(f"{admin}/businesses", {"bk_biz_id": 3, "name": "three"}))["result"]
    assert (await wire.post(f"{admin}/users", {"username": "bob"}))["result"]
    granted = await wire.post(f"{admin}/users/bob/grants", {"scope_type": "biz", "scope_id": "3"})
    assert granted["result"], granted
    made = await wire.post(f"{admin}/apps", {"app_code": "three", "allowed_users": ["bob"],
                                             "allowed_biz": [3]})
    assert made["result"], made
    other = Wire(running.url, "three", made["data"]["app_secret"], "bob")
    try:
        # answered as an unknown agent, in a task only the app that asked may read
        for body in (proc_request(tmp_path, 0, IPS[:1]), proc_request(tmp_path, 2, IPS[:1])):
            refused = await other.post(f"{V2}/proc/operate_proc_multi",
                                       {"proc_operate_req": [body]})
            assert refused["result"], refused
            task = {"task_id": refused["data"]["task_id"]}
            answered = await other.post(f"{V2}/proc/get_proc_operate_result_v2", task)
            assert answered["result"], answered
            [result] = answered["data"].values()
            assert (result["error_code"], result["bk_agent_id"]) == (117, f"0:{IPS[0]}")
            assert "not found" in result["error_msg"], result
            seen = await wire.post(f"{V2}/proc/get_proc_operate_result_v2", task)
            assert (seen["result"], seen["code"]) == (False, 1249404), seen
        assert not (tmp_path / "daemon.pid").exists()  # no agent was asked
        status = await other.post(f"{V2}/proc/get_proc_status_v2", {
            "meta": {"namespace": "n", "name": "x"}, "agent_id_list": [f"0:{IPS[0]}"]})
        assert status["result"] and status["data"] == {"proc_infos": []}, status
        sent = await other.post(f"{V2}/cluster/dispatch_message", {
            "message_id": "m", "agent_id_list": [f"0:{IPS[0]}"], "content": "x", "slot_id": 1})
        assert sent["data"]["results"][0]["error_code"] == 117, sent
        # a task of business 2 is not theirs to read
        mine = await wire.post(f"{V2}/proc/operate_proc_multi",
                               {"proc_operate_req": [proc_request(tmp_path, 2, IPS[:1])]})
        task = {"task_id": mine["data"]["task_id"]}
        assert (await wire.post(f"{V2}/proc/get_proc_operate_result_v2", task))["result"]
        theirs = await other.post(f"{V2}/proc/get_proc_operate_result_v2", task)
        assert (theirs["result"], theirs["code"]) == (False, 1249404), theirs
    finally:
        await other.close()


def daemon_dir() -> Path:
    """A daemon's setup directory another account can reach (pytest's are root's own)."""
    setup = Path(tempfile.mkdtemp(prefix="jobfleet-proc-"))
    setup.chmod(0o777)
    script = setup / "daemon.sh"
    script.write_text(DAEMON)
    script.chmod(0o755)
    return setup


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


async def test_a_process_runs_only_as_an_account_of_the_business(running: Running) -> None:
    """``spec.identity.user`` must be an execution account of the hosts' business: others
    are refused host by host (65535, saying why) before any agent is asked; an account
    runs the process as it."""
    if os.geteuid() != 0:
        pytest.skip("switching to another account needs a root agent")
    await running.start_agents(IPS[:1])
    wire = running.wire
    setup = daemon_dir()
    key = f"0:{IPS[0]}:nodeman:daemon"
    try:
        # nobody is no account of business 2; nor is root once its account is deleted
        refused = (await operate(running, proc_request(setup, 0, IPS[:1], "nobody")))[key]
        assert refused["error_code"] == 65535, refused
        assert "nobody" in refused["error_msg"] and "business [2]" in refused["error_msg"]
        nameless = await wire.post(f"{V2}/proc/operate_proc_multi", {
            "proc_operate_req": [proc_request(setup, 0, IPS[:1], "")]})
        assert (nameless["result"], nameless["code"]) == (False, 1241004), nameless
        listed = await wire.v3("get_account_list", {"bk_biz_id": 2, "category": 1},
                               method="GET")
        [root] = [a for a in listed["data"]["data"] if a["account"] == "root"]
        gone = await wire.v3("delete_account", {"bk_biz_id": 2, "id": root["id"]})
        assert gone["result"], gone
        as_root = (await operate(running, proc_request(setup, 0, IPS[:1], "root")))[key]
        assert as_root["error_code"] == 65535 and "root" in as_root["error_msg"], as_root
        assert not (setup / "daemon.pid").exists()  # no agent was asked

        made = await wire.v3("create_account", {"bk_biz_id": 2, "account": "nobody",
                                                "alias": "nobody", "category": 1, "type": 1})
        assert made["result"], made
        started = await operate(running, proc_request(setup, 0, IPS[:1], "nobody"))
        assert started[key]["error_code"] == 0, started
        instance = json.loads(started[key]["content"])["value"][0]["process"][0]["instance"][0]
        assert uid_of(instance["pid"]) == pwd.getpwnam("nobody").pw_uid
        stopped = await operate(running, proc_request(setup, 1, IPS[:1], "nobody"))
        assert stopped[key]["error_code"] == 0, stopped
        entries = await wire.get("/api/jobfleet/v1/audit/entries", {"action": "gse_operate_proc"})
        # the two refused operations too: their tasks say why
        assert entries["result"] and entries["data"]["total"] == 4, entries
    finally:
        shutil.rmtree(setup, ignore_errors=True)


def memory_in_use() -> float:
    info = {line.split(":")[0]: int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()}
    return 100.0 * (info["MemTotal"] - info["MemAvailable"]) / info["MemTotal"]


async def agent_info(running: Running, ip: str) -> dict[str, Any]:
    info = await running.wire.post(f"{V2}/cluster/list_agent_info",
                                   {"agent_id_list": [f"0:{ip}"]})
    assert info["result"], info
    return dict(info["data"][0])


async def test_list_agent_info_reports_the_hosts_load(running: Running) -> None:
    """CPU, memory and the agent's start come from what the agent read in /proc; an older
    agent (no load in its hello) is answered with zeros and may report later; a load
    that does not fit the protocol is refused and changes nothing."""
    await running.start_agents(IPS[:1])
    boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))

    async def reported() -> dict[str, Any] | None:
        item = await agent_info(running, IPS[0])
        return item if item["mem_rate"] > 0 else None

    item = await eventually(reported, timeout=15)
    assert abs(item["mem_rate"] - memory_in_use()) < 15, item
    assert 0 <= item["cpu_rate"] <= 100
    now = time.time()
    # seconds, as GSE: when this process (the in-process agent) started
    assert boot <= item["start_time"] <= now, item
    assert item["report_time"] <= now * 1000 + 1000

    async with raw_agent(running, IPS[1], load={"cpu": "a lot"}) as old:
        await asyncio.sleep(1.5)
        item = await agent_info(running, IPS[1])
        assert (item["cpu_rate"], item["mem_rate"], item["start_time"]) == (0, 0, 0), item
        await old.send({"t": "stats", "load": {"cpu": 300, "mem": 10, "started": 5000}})
        await old.send({"t": "stats", "load": {"cpu": 12.5, "mem": 34.25,
                                               "started": 1_700_000_000_000}})

        async def stats() -> dict[str, Any] | None:
            item = await agent_info(running, IPS[1])
            return item if item["cpu_rate"] else None

        item = await eventually(stats, timeout=15)
        assert (item["cpu_rate"], item["mem_rate"], item["start_time"]) == (
            12.5, 34.25, 1_700_000_000), item


async def test_an_account_signals_and_writes_only_what_it_may(running: Running) -> None:
    """The agent may run as root while a process runs as a lesser account: a pid file
    naming another user's process does not make the agent stop, kill or reload it, and
    the pid file of a process started without a start command is written as the account
    (a file only root may write is left alone)."""
    if os.geteuid() != 0:
        pytest.skip("switching to another account needs a root agent")
    await running.start_agents(IPS[:1])
    wire = running.wire
    made = await wire.v3("create_account", {"bk_biz_id": 2, "account": "nobody",
                                            "alias": "nobody", "category": 1, "type": 1})
    assert made["result"], made
    setup = daemon_dir()
    key = f"0:{IPS[0]}:nodeman:daemon"
    victim = await asyncio.create_subprocess_exec("sleep", "120")
    try:
        # root's process, named by a pid file the account could have written
        pid_file = setup / "daemon.pid"
        pid_file.write_text(f"{victim.pid}\n")
        for op in (1, 9, 8):  # stop, kill, reload: no command of their own
            body = proc_request(setup, op, IPS[:1], "nobody")
            body["spec"]["control"] = {"start_cmd": "", "stop_cmd": "", "reload_cmd": ""}
            answer = await operate(running, body)
            assert answer[key]["error_code"] != 0, (op, answer)
            assert alive(victim.pid), op
        # no start command: the executable is run and its pid file written, as nobody
        precious = setup / "precious"
        precious.write_text("root's own\n")
        precious.chmod(0o644)
        body = proc_request(setup, 0, IPS[:1], "nobody")
        body["spec"]["identity"].update(proc_name="daemon.sh", pid_path=str(precious))
        body["spec"]["control"] = {"start_cmd": ""}
        answer = await operate(running, body)
        assert answer[key]["error_code"] != 0, answer
        assert precious.read_text() == "root's own\n"
        # where the account may write, it works as before
        body["spec"]["identity"]["pid_path"] = str(setup / "own.pid")
        started = await operate(running, body)
        assert started[key]["error_code"] == 0, started
        pid = int((setup / "own.pid").read_text())
        assert uid_of(pid) == pwd.getpwnam("nobody").pw_uid
        assert (setup / "own.pid").stat().st_uid == pwd.getpwnam("nobody").pw_uid
        body["op_type"] = 1
        stopped = await operate(running, body)
        assert stopped[key]["error_code"] == 0, stopped
        await eventually(lambda: asyncio.sleep(0, not alive(pid) or None))
    finally:
        with contextlib.suppress(ProcessLookupError):
            victim.kill()
        await victim.wait()
        shutil.rmtree(setup, ignore_errors=True)


async def test_a_host_named_twice_is_operated_on_once(running: Running, tmp_path: Path) -> None:
    """Two agent ids of one host ("0:ip", "00:ip") are one target; the same process on one
    host in two operations of a request is refused, never an internal error."""
    await running.start_agents(IPS[:1])
    twice = proc_request(tmp_path, 2, IPS[:1])
    twice["agent_id_list"] = [f"0:{IPS[0]}", f"00:{IPS[0]}"]
    results = await operate(running, twice)
    assert list(results) == [f"0:{IPS[0]}:nodeman:daemon"], results
    assert next(iter(results.values()))["error_code"] == 0, results
    again = await running.wire.post(f"{V2}/proc/operate_proc_multi", {"proc_operate_req": [
        proc_request(tmp_path, 2, IPS[:1]), proc_request(tmp_path, 1, IPS[:1])]})
    assert (again["result"], again["code"]) == (False, 1241010), again
    assert "proc_operate_req[1]" in again["message"], again
    status = await running.wire.post(f"{V2}/proc/get_proc_status_v2", {
        "meta": twice["meta"], "agent_id_list": twice["agent_id_list"]})
    assert [i["bk_agent_id"] for i in status["data"]["proc_infos"]] == [f"0:{IPS[0]}"], status


async def test_an_unknown_agent_is_answered_on_its_own(running: Running,
                                                       tmp_path: Path) -> None:
    """An agent id naming no host the caller may use holds back no other: the request is
    answered with a task, the other hosts are operated on, and each unknown agent gets
    GSE's per-agent 117 with a message saying it is not found (as GSE answers an agent
    it does not know), under the key it was named by."""
    await running.start_agents(IPS)
    wire = running.wire
    mixed = proc_request(tmp_path, 2, IPS[:1])
    mixed["agent_id_list"] = [f"0:{IPS[0]}", "0:127.9.9.9", "no-such-agent", "0:127.9.9.9"]
    alone = proc_request(tmp_path, 2, IPS[1:])
    only_unknown = {**proc_request(tmp_path, 2, []), "agent_id_list": ["0:127.9.9.8"],
                    "meta": {"namespace": "nodeman", "name": "other"}}
    answer = await wire.post(f"{V2}/proc/operate_proc_multi",
                             {"proc_operate_req": [mixed, alone, only_unknown]})
    assert answer["result"], answer
    results = await finished(wire, answer["data"]["task_id"])
    assert {k: v["error_code"] for k, v in results.items()} == {
        f"0:{IPS[0]}:nodeman:daemon": 0,
        f"0:{IPS[1]}:nodeman:daemon": 0,
        "0:127.9.9.9:nodeman:daemon": 117,
        "no-such-agent:nodeman:daemon": 117,
        "0:127.9.9.8:nodeman:other": 117,
    }, results
    for key in ("0:127.9.9.9:nodeman:daemon", "no-such-agent:nodeman:daemon"):
        assert results[key]["bk_agent_id"] == key.split(":nodeman:")[0], results
        assert "not found" in results[key]["error_msg"], results
        assert results[key]["content"] == "", results
    entries = await wire.get("/api/jobfleet/v1/audit/entries", {"action": "gse_operate_proc"})
    [entry] = [e for e in entries["data"]["data"]
               if e["resource_id"] == answer["data"]["task_id"]]
    refused = [[(r["agent_id"], r["code"]) for r in o["refused"]]
               for o in entry["detail"]["operations"]]
    assert refused == [[("0:127.9.9.9", 117), ("no-such-agent", 117)], [],
                       [("0:127.9.9.8", 117)]], entry

    # GSE 1.0 by hosts, as bk-nodeman's 1.0 adapter sends it: the same
    hosts = [{"ip": IPS[0], "bk_cloud_id": 0}, {"ip": "127.9.9.7", "bk_cloud_id": 0}]
    single = await wire.post(f"{V1}/operate_proc_v2/", {"meta": mixed["meta"], "op_type": 2,
                                                       "hosts": hosts})
    assert single["result"], single
    results = await finished(wire, single["data"]["task_id"])
    assert {k: v["error_code"] for k, v in results.items()} == {
        f"0:{IPS[0]}:nodeman:daemon": 0, "0:127.9.9.7:nodeman:daemon": 117}, results


async def test_a_status_query_answers_the_agents_it_knows(running: Running,
                                                          tmp_path: Path) -> None:
    """``get_proc_status_v2`` naming unknown agents among known ones answers the known ones
    and leaves the others out, as GSE does (bk-nodeman asks 500 hosts a call and counts a
    host missing from ``proc_infos`` as unregistered): one unknown agent never costs the
    answer for the others."""
    await running.start_agents(IPS)
    wire = running.wire
    meta = proc_request(tmp_path, 2, [])["meta"]
    ids = ["0:127.9.9.9", f"0:{IPS[0]}", "no-such-agent", f"0:{IPS[1]}"]
    answer = await wire.post(f"{V2}/proc/get_proc_status_v2",
                             {"meta": meta, "agent_id_list": ids})
    assert answer["result"], answer
    assert [i["bk_agent_id"] for i in answer["data"]["proc_infos"]] == [
        f"0:{IPS[0]}", f"0:{IPS[1]}"], answer
    hosts = [{"ip": "127.9.9.9", "bk_cloud_id": 0}, {"ip": IPS[0], "bk_cloud_id": 0}]
    answer = await wire.post(f"{V1}/get_proc_status/", {"meta": meta, "hosts": hosts})
    assert answer["result"], answer
    assert [i["host"]["ip"] for i in answer["data"]["proc_infos"]] == [IPS[0]], answer
    none = await wire.post(f"{V2}/proc/get_proc_status_v2",
                           {"meta": meta, "agent_id_list": ["0:127.9.9.9"]})
    assert none["result"] and none["data"] == {"proc_infos": []}, none


async def test_an_account_one_business_lacks_holds_back_no_other(running: Running,
                                                                 tmp_path: Path) -> None:
    """``spec.identity.user`` that is an execution account of one host's business and not of
    another's: the other host is answered on its own (GSE's 65535, a message naming the
    account and business, no agent asked) and the rest of the request runs."""
    wire = running.wire
    made = await wire.post("/api/jobfleet/v1/businesses", {"bk_biz_id": 3, "name": "three"})
    assert made["result"], made
    await running.start_agents(IPS[:1])
    await running.start_agents(IPS[1:], biz=3)
    account = await wire.v3("create_account", {"bk_biz_id": 2, "account": "nobody",
                                                "alias": "nobody", "category": 1, "type": 1})
    assert account["result"], account
    undelegate = proc_request(tmp_path, 4, IPS, "nobody")
    status = {**proc_request(tmp_path, 2, IPS[1:]), "meta": {"namespace": "n", "name": "s"}}
    answer = await wire.post(f"{V2}/proc/operate_proc_multi",
                             {"proc_operate_req": [undelegate, status]})
    assert answer["result"], answer
    results = await finished(wire, answer["data"]["task_id"])
    refused = results[f"0:{IPS[1]}:nodeman:daemon"]
    assert refused["error_code"] == 65535, results
    assert "nobody" in refused["error_msg"] and "business [3]" in refused["error_msg"], refused
    assert results[f"0:{IPS[0]}:nodeman:daemon"]["error_code"] not in (115, 65535), results
    assert results[f"0:{IPS[1]}:n:s"]["error_code"] == 0, results


async def test_an_operation_in_flight_when_its_server_stops_is_answered(
        tmp_path: Path, database_url: str) -> None:
    """A process operation whose agent has not answered when its server stops is answered
    (GSE's 65535, saying why) once the server is back, not left "handling" (115) for ever:
    the task that waited for the agent went with the server, and bk-nodeman would poll
    it until its own timeout."""
    setup = tmp_path / "slow"
    setup.mkdir()
    body = proc_request(setup, 0, IPS[:1])
    # a start whose process never writes its pid file: the agent checks for a minute
    body["spec"]["control"]["start_cmd"] = "true"
    body["spec"]["alive_monitor_policy"]["start_check_secs"] = 60
    key = f"0:{IPS[0]}:nodeman:daemon"
    async with run_server(tmp_path, database_url) as run:
        await run.start_agents(IPS[:1])
        answer = await run.wire.post(f"{V2}/proc/operate_proc_multi",
                                     {"proc_operate_req": [body]})
        assert answer["result"], answer
        task = {"task_id": answer["data"]["task_id"]}
        handling = await run.wire.post(f"{V2}/proc/get_proc_operate_result_v2", task)
        assert handling["data"][key]["error_code"] == 115, handling
        await asyncio.sleep(1)  # the agent is checking
    async with run_server(tmp_path, database_url) as run:
        result = await run.wire.post(f"{V2}/proc/get_proc_operate_result_v2", task)
        assert result["result"], result
        assert result["data"][key]["error_code"] == 65535, result
        assert "stopped" in result["data"][key]["error_msg"], result


async def test_a_status_query_is_not_queued_behind_slow_operations(running: Running,
                                                                  tmp_path: Path) -> None:
    """Operations whose agents take long (a start checked for its pid file for a minute)
    fill every slot the server asks agents in: a status query or a message meanwhile is
    asked at once, not after them (bk-nodeman syncs process states while it deploys)."""
    await running.start_agents(IPS[:1])
    wire = running.wire
    setup = tmp_path / "slow"
    setup.mkdir()
    entries = []
    for i in range(70):  # more than the slots operations share
        body = proc_request(setup, 0, IPS[:1])
        body["meta"] = {"namespace": "nodeman", "name": f"slow{i}"}
        body["spec"]["control"]["start_cmd"] = "true"
        body["spec"]["alive_monitor_policy"]["start_check_secs"] = 60
        entries.append(body)
    started = await wire.post(f"{V2}/proc/operate_proc_multi", {"proc_operate_req": entries})
    assert started["result"], started
    task = {"task_id": started["data"]["task_id"]}
    await asyncio.sleep(1)  # the agent is checking
    status = await wire.post(f"{V2}/proc/get_proc_status_v2", {
        "meta": {"namespace": "nodeman", "name": "other"}, "agent_id_list": [f"0:{IPS[0]}"]})
    assert status["result"], status
    [info] = status["data"]["proc_infos"]
    assert info["message"] == "", info  # the agent answered
    sent = await wire.post(f"{V2}/cluster/dispatch_message", {
        "message_id": "m-busy", "agent_id_list": [f"0:{IPS[0]}"], "content": "x", "slot_id": 1})
    assert [r["error_code"] for r in sent["data"]["results"]] == [0], sent
    # and all this while every operation was still waiting for its agent
    results = await wire.post(f"{V2}/proc/get_proc_operate_result_v2", task)
    assert {v["error_code"] for v in results["data"].values()} == {115}, results


async def test_a_start_is_waited_for_as_long_as_its_check(running: Running,
                                                         tmp_path: Path) -> None:
    """A start's agent looks for the pid file ``start_check_secs`` (up to 600) after the
    start command: the server waits for its answer that much longer than for any other
    operation, instead of answering "not reachable" (117) while the start goes on and
    succeeds."""
    procs = running.server.services.procs
    assert procs is not None
    procs.timeout = 3.0  # what the server waits for an operation that checks nothing
    await running.start_agents(IPS[:1])
    setup = tmp_path / "late"
    setup.mkdir()
    (setup / "daemon.sh").write_text(DAEMON)
    (setup / "daemon.sh").chmod(0o755)
    body = proc_request(setup, 0, IPS[:1])
    pid_file = body["spec"]["identity"]["pid_path"]
    # the process comes up (its pid file written) 5 s after the start command returns
    body["spec"]["control"]["start_cmd"] = (
        f"(sleep 5; ./daemon.sh >/dev/null 2>&1 & echo $! > {pid_file}) >/dev/null 2>&1 &")
    body["spec"]["alive_monitor_policy"]["start_check_secs"] = 10
    started = await operate(running, body)
    key = f"0:{IPS[0]}:nodeman:daemon"
    assert started[key]["error_code"] == 0, started
    stopped = await operate(running, proc_request(setup, 1, IPS[:1]))
    assert stopped[key]["error_code"] == 0, stopped


async def test_only_a_start_is_waited_for_past_the_timeout(running: Running,
                                                           tmp_path: Path) -> None:
    """The longer wait is a start's (or restart's), which checks its pid file: a stop sent
    to an agent that never answers is answered "not reachable" at the server's timeout,
    not that plus the entry's ``start_check_secs``."""
    procs = running.server.services.procs
    assert procs is not None
    procs.timeout = 2.0
    ip = "127.5.9.1"
    # an agent of this release (it announces that it manages processes), wedged
    async with raw_agent(running, ip, caps=list(protocol.AGENT_CAPS)):
        async def connected() -> bool:
            return any(h.alive for h in await running.server.inventory.list())
        await eventually(connected, timeout=30)
        body = proc_request(tmp_path, 1, [ip])
        body["spec"]["alive_monitor_policy"]["start_check_secs"] = 30
        started = time.monotonic()
        stopped = await operate(running, body)
        waited = time.monotonic() - started
    assert {r["error_code"] for r in stopped.values()} == {117}, stopped
    assert waited < 15, waited


async def test_agents_that_never_answer_hold_a_status_query_once(running: Running) -> None:
    """Connected agents that never answer (wedged) are waited for once, together: a
    status query or a message naming more of them than the server asks at a time is
    answered within its one timeout ("not reachable"), not after a timeout for each
    turn of them in the slots (bk-nodeman asks 500 hosts a call)."""
    procs = running.server.services.procs
    assert procs is not None
    procs.status_timeout = 2.0
    silent = [f"127.5.{i // 200}.{i % 200 + 1}" for i in range(200)]
    async with contextlib.AsyncExitStack() as stack:
        # enrolled and connected some at a time: one after another, the 200 took most
        # of the test, none of which is what it checks. A task group, not gather: when
        # one fails the others are cancelled and done before the stack unwinds, so none
        # registers its exit on a stack that has already closed
        for i in range(0, len(silent), 20):
            async with asyncio.TaskGroup() as tg:
                for ip in silent[i:i + 20]:
                    tg.create_task(stack.enter_async_context(
                        raw_agent(running, ip, caps=list(protocol.AGENT_CAPS))))

        async def connected() -> bool:
            hosts = await running.server.inventory.list()
            return sum(1 for h in hosts if h.alive) == len(silent)
        await eventually(connected, timeout=60)
        ids = [f"0:{ip}" for ip in silent]
        started = time.monotonic()
        status = await running.wire.post(f"{V2}/proc/get_proc_status_v2", {
            "meta": {"namespace": "nodeman", "name": "x"}, "agent_id_list": ids})
        asked = time.monotonic() - started
        assert status["result"], status
        assert {i["message"] for i in status["data"]["proc_infos"]} == {
            "the agent is not reachable"}, status
        started = time.monotonic()
        sent = await running.wire.post(f"{V2}/cluster/dispatch_message", {
            "message_id": "m-silent", "agent_id_list": ids, "content": "x", "slot_id": 1})
        messaged = time.monotonic() - started
        assert {r["error_code"] for r in sent["data"]["results"]} == {117}, sent
    # 200 agents are four turns of the 64 slots: four timeouts one after another
    assert asked < 3 * procs.status_timeout, asked
    assert messaged < 3 * procs.status_timeout, messaged


async def test_an_operation_in_flight_when_its_server_dies_is_answered(
        tmp_path: Path, database_url: str) -> None:
    """A process operation whose server is killed (SIGKILL) before the agent answered is
    answered (65535, the server stopped) as soon as that server is back, not left
    "handling" (115) for ever."""
    port, agent_port = free_port(), free_port()
    data_dir = tmp_path / "server"
    server = await start_server(data_dir, port, database_url, agent_port)
    url = f"http://127.0.0.1:{port}"
    boot = read_bootstrap(data_dir)
    agent = agent_proc(url, boot["enroll_token"], tmp_path / "agent", IPS[0])
    wire = Wire(url, boot["bk_app_code"], boot["bk_app_secret"])
    setup = tmp_path / "slow"
    setup.mkdir()
    body = proc_request(setup, 0, IPS[:1])
    body["spec"]["control"]["start_cmd"] = "true"
    body["spec"]["alive_monitor_policy"]["start_check_secs"] = 60
    key = f"0:{IPS[0]}:nodeman:daemon"
    try:
        await agent.start()

        async def online() -> bool:
            state = await wire.post(f"{V2}/cluster/list_agent_state",
                                    {"agent_id_list": [f"0:{IPS[0]}"]})
            return bool(state["result"]) and state["data"][0]["status_code"] == 2
        await eventually(online, timeout=30)
        answer = await wire.post(f"{V2}/proc/operate_proc_multi", {"proc_operate_req": [body]})
        assert answer["result"], answer
        task = {"task_id": answer["data"]["task_id"]}
        await asyncio.sleep(1)  # the agent is checking
        server.kill()
        assert server.proc is not None
        await server.proc.wait()
        server = await start_server(data_dir, port, database_url, agent_port)
        result = await wire.post(f"{V2}/proc/get_proc_operate_result_v2", task)
        assert result["result"], result
        assert result["data"][key]["error_code"] == 65535, result
        assert "stopped" in result["data"][key]["error_msg"], result
    finally:
        await wire.close()
        await agent.stop()
        await server.stop()
