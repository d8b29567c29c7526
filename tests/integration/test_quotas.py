"""Running-job quotas of businesses (1244032) and apps (1244033), and the audit search
that shows who changed them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from tests.integration.harness import Running, Wire, b64

ADMIN = "/api/jobfleet/v1"
IP = "127.0.0.2"


async def admin(
    wire: Wire, method: str, path: str, body: Any = None, **params: Any
) -> dict[str, Any]:
    resp = await wire.http.request(
        method, ADMIN + path, json=body, params=params, headers=wire.headers()
    )
    return dict(resp.json())


def script(command: str, **extra: Any) -> dict[str, Any]:
    return {
        "bk_scope_type": "biz",
        "bk_scope_id": "2",
        "script_content": b64(command),
        "script_language": 1,
        "account_alias": "root",
        "target_server": {"ip_list": [{"ip": IP, "bk_cloud_id": 0}]},
        **extra,
    }


async def test_business_quota_refuses_a_second_running_job(running: Running) -> None:
    wire = running.wire
    await running.start_agents([IP])
    answer = await admin(wire, "PUT", "/businesses/2/quota", {"max_running_jobs": 1})
    assert answer["data"] == {"bk_biz_id": 2, "max_running_jobs": 1, "running_jobs": 0}
    first = await wire.run_script("sleep 3", [IP])
    refused = await wire.v3("fast_execute_script", script("echo second"))
    assert (refused["result"], refused["code"]) == (False, 1244032), refused
    assert "Business 2" in refused["message"]
    shown = await admin(wire, "GET", "/businesses/2/quota")
    assert shown["data"]["running_jobs"] == 1
    # a job that does not start yet fits, and is refused when it is started
    waiting = await wire.v3("fast_execute_script", script("echo later", start_task=False))
    assert waiting["result"], waiting
    start = await wire.v3(
        "operate_job_instance",
        {
            "bk_biz_id": 2,
            "job_instance_id": waiting["data"]["job_instance_id"],
            "operation_code": 2,
        },
    )
    assert start["code"] == 1244032
    data = await wire.wait(first["job_instance_id"])
    assert data["job_instance"]["status"] == 3
    again = await wire.run_script("echo third", [IP])
    assert (await wire.wait(again["job_instance_id"]))["job_instance"]["status"] == 3
    start = await wire.v3(
        "operate_job_instance",
        {
            "bk_biz_id": 2,
            "job_instance_id": waiting["data"]["job_instance_id"],
            "operation_code": 2,
        },
    )
    assert start["result"], start
    await wire.wait(waiting["data"]["job_instance_id"])
    lifted = await admin(wire, "DELETE", "/businesses/2/quota")
    assert lifted["data"]["max_running_jobs"] is None


async def test_concurrent_submissions_never_exceed_the_quota(running: Running) -> None:
    wire = running.wire
    await running.start_agents([IP])
    assert (await admin(wire, "PUT", "/businesses/2/quota", {"max_running_jobs": 2}))["result"]
    answers = await asyncio.gather(
        *[wire.v3("fast_execute_script", script("sleep 2")) for _ in range(8)]
    )
    accepted = [a["data"]["job_instance_id"] for a in answers if a["result"]]
    assert len(accepted) == 2, answers
    assert {a["code"] for a in answers if not a["result"]} == {1244032}
    for job_id in accepted:
        await wire.wait(job_id)


async def test_app_quota(running: Running) -> None:
    wire = running.wire
    await running.start_agents([IP])
    made = await admin(wire, "POST", "/apps", {"app_code": "ci-bot", "is_admin": True})
    bot = Wire(running.url, "ci-bot", made["data"]["app_secret"])
    try:
        answer = await admin(wire, "PUT", "/apps/ci-bot/quota", {"max_running_jobs": 1})
        assert answer["data"] == {"app_code": "ci-bot", "max_running_jobs": 1, "running_jobs": 0}
        first = await bot.run_script("sleep 3", [IP])
        refused = await bot.v3("fast_execute_script", script("echo again"))
        assert (refused["result"], refused["code"]) == (False, 1244033), refused
        assert "ci-bot" in refused["message"]
        # the business has no limit: another app runs
        other = await wire.run_script("echo other", [IP])
        await wire.wait(other["job_instance_id"])
        # only admins see or set app quotas
        assert (await admin(bot, "GET", "/apps/ci-bot/quota"))["result"]  # acts as admin
        await admin(wire, "POST", "/users", {"username": "bob"})
        await admin(wire, "POST", "/users/bob/grants", {"scope_type": "biz", "scope_id": "2"})
        bob = Wire(running.url, running.boot["bk_app_code"], running.boot["bk_app_secret"], "bob")
        try:
            for method, body in (("GET", None), ("PUT", {"max_running_jobs": 5})):
                answer = await admin(bob, method, "/apps/ci-bot/quota", body)
                assert answer["code"] == 9900403, answer
            # a holder of the business may read and set its quota
            assert (await admin(bob, "GET", "/businesses/2/quota"))["result"]
            assert (await admin(bob, "GET", "/businesses/3/quota"))["code"] in (1243049, 9900403)
        finally:
            await bob.close()
        await bot.wait(first["job_instance_id"])
        again = await bot.run_script("echo after", [IP])
        await bot.wait(again["job_instance_id"])
        lifted = await admin(wire, "DELETE", "/apps/ci-bot/quota")
        assert lifted["data"]["max_running_jobs"] is None
    finally:
        await bot.close()


async def test_quota_input_errors(running: Running) -> None:
    wire = running.wire
    for method, path, body, code in (
        ("PUT", "/businesses/2/quota", {}, 1241004),
        ("PUT", "/businesses/2/quota", {"max_running_jobs": -1}, 1241010),
        ("PUT", "/businesses/2/quota", {"max_running_jobs": "many"}, 1241010),
        ("PUT", "/businesses/77/quota", {"max_running_jobs": 1}, 1243049),
        ("PUT", "/apps/nobody/quota", {"max_running_jobs": 1}, 1249404),
        ("GET", "/apps/nobody/quota", None, 1249404),
    ):
        answer = await admin(wire, method, path, body)
        assert (answer["result"], answer["code"]) == (False, code), (path, body, answer)
    bad = await wire.http.put(ADMIN + "/businesses/2/quota", content=b"[1]", headers=wire.headers())
    assert bad.json()["code"] == 1240003


async def test_audit_search_filters_and_scopes(running: Running) -> None:
    wire = running.wire
    before = int(time.time() * 1000) - 1
    await admin(wire, "PUT", "/businesses/2/quota", {"max_running_jobs": 5})
    await admin(wire, "POST", "/businesses", {"bk_biz_id": 3, "name": "three"})
    await admin(wire, "PUT", "/businesses/3/quota", {"max_running_jobs": 7})
    await admin(wire, "POST", "/users", {"username": "bob"})
    await admin(wire, "POST", "/users/bob/grants", {"scope_type": "biz", "scope_id": "3"})

    async def search(who: Wire = wire, **params: Any) -> dict[str, Any]:
        answer = await admin(who, "GET", "/audit/entries", **params)
        assert answer["result"], answer
        return dict(answer["data"])

    found = await search(action="set_business_quota")
    assert found["total"] == 2
    assert [e["resource_id"] for e in found["data"]] == ["3", "2"]  # newest first
    assert found["data"][0]["detail"] == {"max_running_jobs": 7}
    assert found["data"][0]["scope_type"] == "biz" and found["data"][0]["username"] == "admin"
    assert (await search(action="set_business_quota", bk_biz_id=2))["total"] == 1
    # administration actions are audited by name, with their resource
    assert [
        e["action"] for e in (await search(resource_type="business", resource_id="3"))["data"]
    ] == ["set_business_quota", "create_business"]
    assert (await search(action="create_user", resource_id="bob"))["total"] == 1
    assert (await search(action="grant_user", resource_id="bob"))["total"] == 1
    assert (await search(action="create_*"))["total"] >= 2
    assert (await search(username="nobody"))["total"] == 0
    assert (await search(create_time_start=before, create_time_end=before + 1))["total"] == 0
    page = await search(create_time_start=before, start=1, length=2)
    everything = await search(create_time_start=before, length=100)
    assert page["data"] == everything["data"][1:3] and page["total"] == everything["total"]
    bad = await admin(wire, "GET", "/audit/entries", length=0)
    assert bad["code"] == 1241010
    bad = await admin(wire, "GET", "/audit/entries", create_time_start=5, create_time_end=1)
    assert bad["code"] == 1241010

    bob = Wire(running.url, running.boot["bk_app_code"], running.boot["bk_app_secret"], "bob")
    try:
        mine = await search(bob)
        assert {(e["scope_type"], e["scope_id"]) for e in mine["data"]} == {("biz", "3")}
        assert (await search(bob, bk_biz_id=3))["total"] == mine["total"]
        denied = await admin(bob, "GET", "/audit/entries", bk_biz_id=2)
        assert denied["code"] == 9900403
    finally:
        await bob.close()

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jobfleet",
        "--server",
        running.url,
        "--bootstrap",
        str(running.data_dir / "server" / "bootstrap.json"),
        "audit",
        "--action",
        "set_business_quota",
        "--since",
        "1h",
        "--biz",
        "3",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "set_business_quota" in text and "business:3" in text and "biz:3" in text
    assert "business:2" not in text and "1 entry" in text
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jobfleet",
        "--server",
        running.url,
        "--bootstrap",
        str(running.data_dir / "server" / "bootstrap.json"),
        "audit",
        "--resource",
        "business:2",
        "--json",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    (entry,) = json.loads(out)
    assert entry["action"] == "set_business_quota" and entry["detail"] == {"max_running_jobs": 5}


async def test_a_retried_job_counts_against_the_quota(running: Running) -> None:
    await running.start_agents([IP])
    wire = running.wire
    failed = await wire.run_script("exit 1", [IP])
    assert (await wire.wait(failed["job_instance_id"]))["job_instance"]["status"] == 4
    assert (await admin(wire, "PUT", "/businesses/2/quota", {"max_running_jobs": 1}))["result"]
    busy = await wire.run_script("sleep 3", [IP])
    retry = {
        "bk_biz_id": 2,
        "job_instance_id": failed["job_instance_id"],
        "step_instance_id": failed["step_instance_id"],
        "operation_code": 2,
    }
    refused = await wire.v3("operate_step_instance", retry)
    assert refused["code"] == 1244032, refused
    await wire.wait(busy["job_instance_id"])
    assert (await wire.v3("operate_step_instance", retry))["result"]
    assert (await wire.wait(failed["job_instance_id"]))["step_instance_list"][0][
        "execute_count"
    ] == 1
