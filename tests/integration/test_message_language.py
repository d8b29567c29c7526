"""Failure messages in the client's language: bk-job's Chinese for zh callers, else English."""

from __future__ import annotations

import asyncio
from typing import Any

from bkapi_component.open.client import Client
from tests.integration.harness import Running, b64


def refusals(running: Running, language: str | None) -> dict[str, Any]:
    client = Client(endpoint=running.url, bk_api_ver="v2")
    client.update_bkapi_authorization(bk_app_code=running.boot["bk_app_code"],
                                      bk_app_secret=running.boot["bk_app_secret"],
                                      bk_username="admin")
    if language:
        client.update_headers({"blueking-language": language})
    sql = client.jobv3.fast_execute_sql({
        "bk_biz_id": 2, "script_content": b64("SELECT 1;"),
        "target_server": {"ip_list": [{"ip": "127.0.0.2", "bk_cloud_id": 0}]}})
    status = client.jobv3.get_job_instance_status({"bk_biz_id": 2, "job_instance_id": 10**9})
    return {"sql": sql, "status": status}


async def test_messages_follow_the_language(running: Running) -> None:
    chinese = await asyncio.to_thread(refusals, running, "zh-cn")
    assert chinese["sql"]["code"] == 1241004
    assert chinese["sql"]["message"] == "请求参数[db_account_id]缺失"
    assert chinese["status"]["code"] == 1244006
    assert chinese["status"]["message"] == "作业实例不存在"
    english = await asyncio.to_thread(refusals, running, None)
    assert english["sql"]["message"] == "Missing parameter [db_account_id]"
    assert english["status"]["message"].startswith("Job instance 1000000000 does not exist")
    # Accept-Language works too, and an English first choice stays English
    headers = {**running.wire.headers(), "Accept-Language": "zh-CN,zh;q=0.9"}
    answer = await running.wire.post("/api/bk-job/prod/api/v3/get_job_plan_detail",
                                     {"bk_biz_id": 2, "job_plan_id": 999}, headers=headers)
    assert answer["code"] == 1243009 and answer["message"] == "执行方案不存在", answer
    headers["Accept-Language"] = "en-US,zh;q=0.5"
    answer = await running.wire.post("/api/bk-job/prod/api/v3/get_job_plan_detail",
                                     {"bk_biz_id": 2, "job_plan_id": 999}, headers=headers)
    assert "执行" not in answer["message"]
