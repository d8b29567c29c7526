"""The published BlueKing client (bkapi-component-open) drives jobfleet unchanged."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest
from bkapi_component.open.client import Client
from tests.integration.harness import Running

IPS = ["127.0.0.2", "127.0.0.3"]


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
    return {"status": status["data"], "logs": logs["data"], "agents": agents["data"]}


@pytest.mark.parametrize("bk_api_ver", ["", "v2"])
async def test_published_client_runs_a_script(running: Running, bk_api_ver: str) -> None:
    await running.start_agents(IPS)
    out = await asyncio.to_thread(flow, running.url, running.boot, bk_api_ver)
    assert out["status"]["job_instance"]["status"] == 3
    results = out["status"]["step_instance_list"][0]["step_ip_result_list"]
    assert sorted((r["ip"], r["status"], r["exit_code"]) for r in results) == [
        (ip, 9, 0) for ip in IPS]
    assert {i["ip"]: i["log_content"] for i in out["logs"]["script_task_logs"]} == {
        ip: f"hi from {ip}\n" for ip in IPS}
    assert all(v["bk_agent_alive"] == 1 for v in out["agents"].values())
