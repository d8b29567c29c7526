"""The published BlueKing client (bkapi-component-open) drives jobfleet unchanged."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest
from bkapi_component.open.client import Client
from tests.integration.harness import Running

IPS = ["127.0.0.2", "127.0.0.3"]
# a client of the API, whose own tests run on every backend (as the CLI and SDK tests)
pytestmark = pytest.mark.one_backend


def flow(url: str, boot: dict[str, Any], bk_api_ver: str) -> dict[str, Any]:
    client = Client(endpoint=url, bk_api_ver=bk_api_ver)
    client.update_bkapi_authorization(bk_app_code=boot["bk_app_code"],
                                      bk_app_secret=boot["bk_app_secret"], bk_username="admin")
    targets = [{"ip": ip, "bk_cloud_id": 0} for ip in IPS]
    sub = client.jobv3.fast_execute_script({
        "bk_biz_id": 2, "script_language": 1, "account_alias": "root",
        "script_content": base64.b64encode(b"echo hi from $JOBFLEET_HOST_IP").decode(),
        "target_server": {"ip_list": targets}})
    assert sub["result"] is True, sub
    job_id, step_id = sub["data"]["job_instance_id"], sub["data"]["step_instance_id"]
    for _ in range(200):
        status = client.jobv3.get_job_instance_status(
            {"bk_biz_id": 2, "job_instance_id": job_id, "return_ip_result": True})
        if status["data"]["finished"]:
            break
        time.sleep(0.1)
    logs = client.jobv3.batch_get_job_instance_ip_log({
        "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
        "ip_list": targets})
    agents = client.gse.get_agent_status({"bk_supplier_account": "0", "hosts": targets})
    return {"status": status["data"], "logs": logs["data"], "agents": agents["data"],
            "step_id": step_id}


@pytest.mark.parametrize("bk_api_ver", ["", "v2"])
async def test_published_client_runs_a_script(running: Running, bk_api_ver: str) -> None:
    await running.start_agents(IPS)
    out = await asyncio.to_thread(flow, running.url, running.boot, bk_api_ver)
    assert out["status"]["finished"] is True
    job = out["status"]["job_instance"]
    assert {"job_instance_id", "name", "status", "create_time", "start_time", "end_time",
            "total_time", "bk_scope_type", "bk_scope_id"} <= set(job)
    assert job["status"] == 3 and (job["bk_scope_type"], job["bk_scope_id"]) == ("biz", "2")
    # epoch milliseconds, in order
    assert 10**12 < job["create_time"] <= job["start_time"] <= job["end_time"]
    [step] = out["status"]["step_instance_list"]
    assert {"step_instance_id", "type", "name", "status", "execute_count"} <= set(step)
    assert (step["step_instance_id"], step["type"], step["status"]) == (out["step_id"], 1, 3)
    results = step["step_ip_result_list"]
    assert sorted((r["ip"], r["status"], r["exit_code"]) for r in results) == [
        (ip, 9, 0) for ip in IPS]
    assert {i["ip"]: i["log_content"] for i in out["logs"]["script_task_logs"]} == {
        ip: f"hi from {ip}\n" for ip in IPS}
    assert all(v["bk_agent_alive"] == 1 for v in out["agents"].values())


def healing_flow(url: str, boot: dict[str, Any], plan_name: str) -> dict[str, Any]:
    """bk-monitor's job action (bk-clients.md §3.1-3.2) through the published client."""
    client = Client(endpoint=url, bk_api_ver="v2")
    client.update_bkapi_authorization(bk_app_code=boot["bk_app_code"],
                                      bk_app_secret=boot["bk_app_secret"], bk_username="admin")
    probe = client.jobv3.get_public_script_list({})  # bk-log's health probe
    assert probe["result"] is True, probe
    # the plan list, paged as bk-monitor's batch_request pages it
    first = client.jobv3.get_job_plan_list({"bk_biz_id": 2, "start": 0, "length": 1})
    total = first["data"]["total"]
    plans = []
    for start in range(0, total + 1, 1000):
        page = client.jobv3.get_job_plan_list({"bk_biz_id": 2, "start": start, "length": 1000})
        plans.extend(page["data"]["data"])
    plan_id = next(p["id"] for p in plans if p["name"] == plan_name)
    detail = client.jobv3.get_job_plan_detail({"bk_biz_id": 2, "job_plan_id": plan_id})
    # the action's form: one key "<id>_<type>" per variable, rendered values
    rendered = {}
    for var in detail["data"]["global_var_list"]:
        key = f"{var['id']}_{var['type']}"
        rendered[key] = ";".join(f"0:{ip}" for ip in IPS) if var["type"] == 3 else "disk full"
    global_vars: list[dict[str, Any]] = []
    for key, value in rendered.items():
        var_id, var_type = key.split("_")
        if var_type == "3":
            for part in value.split(";"):
                cloud, _, ip = part.partition(":")
                global_vars.append({"id": int(var_id),
                                    "server": {"ip_list": [{"bk_cloud_id": cloud, "ip": ip}]}})
        else:
            global_vars.append({"id": int(var_id), "value": value})
    started = client.jobv3.execute_job_plan({"bk_biz_id": 2, "job_plan_id": plan_id,
                                             "global_var_list": global_vars})
    assert started["result"] is True, started
    job_id = started["data"]["job_instance_id"]
    for _ in range(30):
        status = client.jobv3.get_job_instance_status({"job_instance_id": job_id,
                                                       "bk_biz_id": 2})
        if status["data"]["job_instance"]["status"] not in (1, 2, 7):
            break
        time.sleep(2)
    values = client.jobv3.get_job_instance_global_var_value({"bk_biz_id": 2,
                                                             "job_instance_id": job_id})
    return {"status": status["data"], "values": values["data"], "job_id": job_id}


async def test_published_client_runs_a_healing_plan(running: Running) -> None:
    await running.start_agents(IPS)
    own = "/api/jobfleet/v1"
    tpl = await running.wire.post(f"{own}/templates?bk_biz_id=2", {
        "name": "heal disk", "global_var_list": [
            {"name": "target", "type": 3, "required": 1},
            {"name": "alarm", "type": 1, "value": "none", "changeable": 1}],
        "step_list": [{"name": "clean", "type": 1, "script_info": {
            "script_content": 'echo "cleaning: $alarm"; alarm="cleaned on $JOBFLEET_HOST_IP"',
            "script_language": 1, "account": "root", "server": {"variable": "target"}}}]})
    assert tpl["result"], tpl
    plan = await running.wire.post(f"{own}/templates/{tpl['data']['id']}/plans?bk_biz_id=2",
                                   {"name": "heal disk now"})
    assert plan["result"], plan
    out = await asyncio.to_thread(healing_flow, running.url, running.boot, "heal disk now")
    assert out["status"]["job_instance"]["status"] == 3
    step = out["status"]["step_instance_list"][0]
    logs = await running.wire.logs(out["job_id"], step["step_instance_id"], IPS)
    assert logs == {ip: "cleaning: disk full\n" for ip in IPS}
    last = out["values"]["step_instance_var_list"][-1]["global_var_list"]
    alarm = next(v for v in last if v["name"] == "alarm")
    assert alarm["value"] == f"cleaned on {min(IPS)}" or alarm["value"].startswith("cleaned on")


def missing_source_flow(url: str, boot: dict[str, Any], target: str) -> dict[str, Any]:
    """bk-log's distribution step (bk-clients.md §2.4) of a file that is gone."""
    client = Client(endpoint=url, bk_api_ver="v2")
    client.update_bkapi_authorization(bk_app_code=boot["bk_app_code"],
                                      bk_app_secret=boot["bk_app_secret"], bk_username="admin")
    started = client.jobv3.fast_transfer_file({
        "bk_biz_id": 2, "account_alias": "root", "file_target_path": target,
        "file_source_list": [{"file_list": ["/nonexistent/packed.tar.gz"],
                              "account": {"alias": "root"},
                              "server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}}],
        "target_server": {"ip_list": [{"ip": IPS[1], "bk_cloud_id": 0}]}})
    assert started["result"] is True, started
    job_id, step_id = started["data"]["job_instance_id"], started["data"]["step_instance_id"]
    for _ in range(200):
        status = client.jobv3.get_job_instance_status({"bk_biz_id": 2, "job_instance_id": job_id})
        if status["data"]["finished"]:
            break
        time.sleep(0.1)
    log = client.jobv3.get_job_instance_ip_log({"bk_biz_id": 2, "job_instance_id": job_id,
                                                "step_instance_id": step_id,
                                                "ip": IPS[1], "bk_cloud_id": 0})
    source = client.jobv3.batch_get_job_instance_ip_log({
        "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
        "ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]})
    return {"status": status["data"], "log": log["data"], "source": source["data"]}


async def test_a_failed_transfer_names_its_source_and_target(running: Running,
                                                             tmp_path: Path) -> None:
    await running.start_agents(IPS)
    target = f"{tmp_path}/transit/[FILESRCIP]"
    out = await asyncio.to_thread(missing_source_flow, running.url, running.boot, target)
    assert out["status"]["job_instance"]["status"] == 4
    # as bk-job, the target's log holds its download, then the source's upload
    entry, upload = out["log"]["file_logs"]
    assert entry["mode"] == 1 and entry["status"] == 5
    assert (upload["mode"], upload["status"]) == (0, 5)
    assert "/nonexistent/packed.tar.gz" in entry["log_content"]
    # the download never began: the path it was bound for, not "." (no path at all)
    assert entry["dest_path"] == target
    # from the host that lacked the file, not from 0.0.0.0 (bk-job's name for local files)
    assert (entry["src_ip"]["ip"], entry["src_ip"]["bk_cloud_id"]) == (IPS[0], 0)
    assert entry["src_ip"]["bk_host_id"] is not None
    # the source shows its upload of the missing file failed, with the reason (as bk-job)
    [source] = out["source"]["file_task_logs"]
    assert source["ip"] == IPS[0]
    [upload] = source["file_logs"]
    assert (upload["mode"], upload["status"]) == (0, 5)
    assert upload["src_path"] == "/nonexistent/packed.tar.gz"
    assert "/nonexistent/packed.tar.gz" in upload["log_content"]
    assert (upload["src_ip"]["ip"], upload["src_ip"]["bk_cloud_id"]) == (IPS[0], 0)
    assert "dest_ip" not in upload
