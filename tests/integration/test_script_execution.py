"""Scripts run on real agents through the bk-job v3 wire API."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from pathlib import Path

import pytest
from tests.integration.harness import Running, b64, eventually

IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


async def test_success_reports_every_host_with_raw_output(running: Running) -> None:
    await running.start_agents(IPS)
    script = ('echo \'{"status": true, "data": []}\'\n'
              'echo "<BKLOG>path:/var/log/$JOBFLEET_HOST_IP</BKLOG>"\n'
              'echo "<SOPS_VAR>disk:80%</SOPS_VAR> to stderr" >&2\n')
    sub = await running.wire.run_script(script, IPS)
    assert set(sub) >= {"job_instance_id", "step_instance_id", "job_instance_name"}
    data = await running.wire.wait(sub["job_instance_id"])
    assert data["job_instance"]["status"] == 3
    step = data["step_instance_list"][0]
    assert step["step_instance_id"] == sub["step_instance_id"]
    assert step["status"] == 3
    results = step["step_ip_result_list"]
    assert sorted(r["ip"] for r in results) == IPS
    for r in results:
        assert r["status"] == 9 and r["exit_code"] == 0 and r["error_code"] == 0
        assert r["tag"] == "" and r["bk_cloud_id"] == 0 and r["bk_host_id"]
        assert r["start_time"] and r["end_time"] and r["total_time"] is not None
    logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"], IPS)
    for ip in IPS:
        lines = logs[ip].split("\n")
        assert json.loads(lines[0]) == {"status": True, "data": []}
        assert lines[1] == f"<BKLOG>path:/var/log/{ip}</BKLOG>"
        # stderr joins stdout in order, with no prefix
        assert lines[2] == "<SOPS_VAR>disk:80%</SOPS_VAR> to stderr"
        assert logs[ip].endswith("\n") and len(lines) == 4


async def test_non_zero_exit_fails_job_with_real_exit_code(running: Running) -> None:
    await running.start_agents(IPS[:2])
    sub = await running.wire.run_script(
        'if [ "$JOBFLEET_HOST_IP" = 127.0.0.3 ]; then echo broken; exit 3; fi; echo fine', IPS[:2])
    seen = set()
    while True:
        data = await running.wire.status(sub["job_instance_id"])
        seen.add(data["job_instance"]["status"])
        if data["finished"]:
            break
        await asyncio.sleep(0.02)
    # at no time a success (3), nor 9: at job level that is "state abnormal"
    assert seen <= {1, 2, 4}, seen
    assert data["job_instance"]["status"] == 4
    assert data["step_instance_list"][0]["status"] == 4
    by_ip = {r["ip"]: r for r in data["step_instance_list"][0]["step_ip_result_list"]}
    assert by_ip["127.0.0.2"]["status"] == 9
    assert by_ip["127.0.0.3"]["status"] == 104 and by_ip["127.0.0.3"]["exit_code"] == 3


async def test_params_are_decoded_once_and_split_into_argv(running: Running) -> None:
    await running.start_agents(IPS[:1])
    script = 'for a in "$@"; do echo "[$a]"; done'
    sub = await running.wire.run_script(
        script, IPS[:1], script_param=b64("--subscription_id=1 --gse_path='/usr/local/gse/' "
                                          "--name \"a b\""))
    await running.wire.wait(sub["job_instance_id"])
    logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"], IPS[:1])
    assert logs[IPS[0]] == "[--subscription_id=1]\n[--gse_path=/usr/local/gse/]\n[--name]\n[a b]\n"
    # base64 without its padding, in the URL-safe alphabet: bk-job's decoder takes it
    raw = "--q=~?> x"
    sub = await running.wire.run_script(
        script, IPS[:1], script_content=b64(script).rstrip("="),
        script_param=b64(raw).replace("+", "-").replace("/", "_").rstrip("="))
    await running.wire.wait(sub["job_instance_id"])
    logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"], IPS[:1])
    assert logs[IPS[0]] == "[--q=~?>]\n[x]\n"


LANGUAGES = [
    (4, "import sys\nprint('py', sys.argv[1:])\n", "py ['x', 'y']\n"),
    (3, 'print "pl @ARGV\\n";\n', "pl x y\n"),
]


# both on one server and agent, which cost more to start than the two jobs
async def test_languages(running: Running) -> None:
    await running.start_agents(IPS[:1])
    for language, script, expected in LANGUAGES:
        sub = await running.wire.run_script(script, IPS[:1], script_language=language,
                                            script_param=b64("x y"))
        data = await running.wire.wait(sub["job_instance_id"])
        assert data["job_instance"]["status"] == 3, (language, data)
        logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"], IPS[:1])
        assert logs[IPS[0]] == expected, (language, logs)


@pytest.mark.skipif(shutil.which("pwsh") is not None, reason="this host has PowerShell")
async def test_missing_interpreter_fails_the_host_not_the_request(running: Running) -> None:
    await running.start_agents(IPS[:1])
    sub = await running.wire.run_script("Write-Output hi", IPS[:1], script_language=5)
    data = await running.wire.wait(sub["job_instance_id"])
    result = data["step_instance_list"][0]["step_ip_result_list"][0]
    assert data["job_instance"]["status"] == 4 and result["status"] == 101
    logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"], IPS[:1])
    assert "no interpreter for powershell" in logs[IPS[0]]


async def test_account_that_is_not_an_os_user_fails_with_311(running: Running) -> None:
    await running.start_agents(IPS[:1])
    await running.server.identity.create_account(2, "jobfleet-no-such-user", "ghost")
    sub = await running.wire.run_script("id", IPS[:1], account_alias="ghost")
    data = await running.wire.wait(sub["job_instance_id"])
    assert data["step_instance_list"][0]["step_ip_result_list"][0]["status"] == 311
    assert data["job_instance"]["status"] == 4


@pytest.mark.skipif(os.geteuid() != 0, reason="switching accounts needs a root agent")
async def test_root_agent_runs_script_as_the_account(running: Running) -> None:
    await running.start_agents(IPS[:1])
    await running.server.identity.create_account(2, "nobody")
    sub = await running.wire.run_script("id -un", IPS[:1], account_alias="nobody")
    await running.wire.wait(sub["job_instance_id"])
    logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"], IPS[:1])
    assert logs[IPS[0]] == "nobody\n"


def sleep_marker(seconds: str) -> str:
    """A ``sleep`` argument only this test's processes carry: the same test on another
    backend may run beside it in another worker."""
    return f"{seconds}{secrets.randbelow(10**6):06d}"


def tree_alive(marker: str) -> list[str]:
    alive = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            alive.append(cmd)
    return alive


async def test_timeout_kills_the_whole_tree(running: Running) -> None:
    await running.start_agents(IPS[:1])
    marker = sleep_marker("4242.123")
    script = f"sleep {marker} &\nsetsid sleep {marker} &\nsleep {marker}\n"
    sub = await running.wire.run_script(script, IPS[:1], timeout=1)
    data = await running.wire.wait(sub["job_instance_id"], timeout=30)
    result = data["step_instance_list"][0]["step_ip_result_list"][0]
    assert result["status"] == 102 and data["job_instance"]["status"] == 4
    assert tree_alive(marker) == []


async def test_terminate_stops_processes_and_ends_in_stop_success(running: Running) -> None:
    await running.start_agents(IPS[:2])
    marker = sleep_marker("4243.5")
    sub = await running.wire.run_script(f"echo started; sleep {marker} & sleep {marker}", IPS[:2])
    job_id = sub["job_instance_id"]

    async def both_running() -> bool:
        data = await running.wire.status(job_id)
        results = data["step_instance_list"][0]["step_ip_result_list"]
        return len(tree_alive(marker)) >= 4 and all(r["status"] == 7 for r in results)
    await eventually(both_running)
    answer = await running.wire.v3("operate_job_instance", {
        "bk_biz_id": 2, "job_instance_id": job_id, "operation_code": 1})
    assert answer["result"] and answer["data"]["job_instance_id"] == job_id
    data = await running.wire.wait(job_id, timeout=30)
    assert data["job_instance"]["status"] == 11
    assert data["step_instance_list"][0]["status"] == 11
    assert {(r["status"], r["error_code"])
            for r in data["step_instance_list"][0]["step_ip_result_list"]} == {(403, 126)}
    assert tree_alive(marker) == []
    again = await running.wire.v3("operate_job_instance", {
        "bk_biz_id": 2, "job_instance_id": job_id, "operation_code": 1})
    assert again["code"] == 1241003


async def test_start_task_false_waits_for_operate_start(running: Running) -> None:
    await running.start_agents(IPS[:1])
    sub = await running.wire.run_script("echo later", IPS[:1], start_task=False)
    job_id = sub["job_instance_id"]
    await asyncio.sleep(0.3)
    data = await running.wire.status(job_id)
    assert data["finished"] is False and data["job_instance"]["status"] == 1
    assert data["step_instance_list"][0]["step_ip_result_list"][0]["status"] == 5
    start = await running.wire.v3("operate_job_instance", {
        "bk_biz_id": 2, "job_instance_id": job_id, "operation_code": 2})
    assert start["result"]
    data = await running.wire.wait(job_id)
    assert data["job_instance"]["status"] == 3
    repeat = await running.wire.v3("operate_job_instance", {
        "bk_biz_id": 2, "job_instance_id": job_id, "operation_code": 2})
    assert repeat["code"] == 1241015


def until_touched(path: Path) -> str:
    """Shell that waits for ``path`` to exist: the script runs until the test lets it end,
    however slow the machine is to start it or to answer."""
    return f"while [ ! -e {path} ]; do sleep 0.05; done"


async def test_running_job_reports_unfinished_states(running: Running) -> None:
    await running.start_agents(IPS[:1])
    go = running.data_dir / "go"
    sub = await running.wire.run_script(f"{until_touched(go)}; echo done", IPS[:1])
    data = await running.wire.status(sub["job_instance_id"])
    assert data["finished"] is False
    assert data["job_instance"]["status"] in (1, 2)
    assert data["step_instance_list"][0]["step_ip_result_list"][0]["status"] in (5, 7)
    go.touch()
    data = await running.wire.wait(sub["job_instance_id"])
    assert data["finished"] is True and data["job_instance"]["status"] == 3


async def test_finished_only_once_every_host_is_final(running: Running) -> None:
    await running.start_agents(IPS[:2])
    go = running.data_dir / "go"
    script = f'if [ "$JOBFLEET_HOST_IP" = {IPS[1]} ]; then {until_touched(go)}; fi; echo done'
    sub = await running.wire.run_script(script, IPS[:2])

    async def first_host_done() -> dict[str, object] | None:
        data = await running.wire.status(sub["job_instance_id"])
        hosts = {r["ip"]: r["status"] for r in data["step_instance_list"][0]["step_ip_result_list"]}
        return data if hosts[IPS[0]] == 9 else None
    data = await eventually(first_host_done)
    hosts = {r["ip"]: (r["status"], r["error_code"])
             for r in data["step_instance_list"][0]["step_ip_result_list"]}
    # bk-nodeman reads error_code beside the status: 115 while the task runs on the host
    assert hosts[IPS[0]] == (9, 0) and hosts[IPS[1]] in ((5, 0), (7, 115))
    assert data["finished"] is False
    assert data["job_instance"]["status"] == 2 and data["step_instance_list"][0]["status"] == 2
    go.touch()
    data = await running.wire.wait(sub["job_instance_id"])
    assert data["job_instance"]["status"] == 3


async def test_output_streams_while_the_script_runs(running: Running) -> None:
    await running.start_agents(IPS[:1])
    go = running.data_dir / "go"
    sub = await running.wire.run_script(f"echo first; {until_touched(go)}; echo second",
                                        IPS[:1])

    async def first_line_seen() -> bool:
        logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"], IPS[:1])
        return logs[IPS[0]] == "first\n"
    # the script goes on only once the first line is seen
    await eventually(first_line_seen, timeout=60, interval=0.05)
    go.touch()
    await running.wire.wait(sub["job_instance_id"])
    logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"], IPS[:1])
    assert logs[IPS[0]] == "first\nsecond\n"
