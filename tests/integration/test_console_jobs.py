"""The console's launch forms and job page in a real browser (Debian's chromium driven
by Playwright) against a real server and real agents: targets by topology and dynamic
group with live alive/dead counts, the dangerous-statement check before launch,
variables per step, approvers notified through a webhook, status names in Chinese."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from tests.integration.harness import Running, eventually, listening, run_server
from tests.integration.test_console import CHROMIUM, browser, job_id_of, login, pytestmark
from tests.integration.test_notifications import SECRET, Hook, add_config, signed
from tests.integration.test_plans import hosts, make_plan, script
from tests.integration.test_topology import ok

from jobfleet.store.tables import hosts as hosts_table

__all__ = ["CHROMIUM", "browser", "pytestmark"]

IPS = [f"127.0.9.{i}" for i in range(1, 5)]
PUBLIC = "https://console.example.test"


async def count_shown(page: Any) -> dict[str, str]:
    """The count the form shows once it answered for the current selection."""
    await page.wait_for_function(
        "() => (() => { const d = document.getElementById('target-count').dataset;"
        " return d.total !== '' && d.total !== undefined; })()"
    )
    shown = "Object.assign({}, document.getElementById('target-count').dataset)"
    return dict(await page.evaluate(shown))


async def test_targets_by_topology_and_dynamic_group_with_counts(
    running: Running, browser: Any
) -> None:
    await running.start_agents(IPS)
    now = int(time.time() * 1000)
    async with running.server.db.begin() as conn:
        await conn.execute(insert(hosts_table), [{
            "bk_biz_id": 2, "bk_cloud_id": 0, "ip": "127.77.0.1", "labels": {}, "alive": 0,
            "hostname": "", "create_time": now}])
    ids = {h.ip: h.bk_host_id for h in await running.server.inventory.list()}
    web = await ok(running, "POST", "/topology/sets", {"bk_biz_id": 2, "name": "web"})
    nginx = await ok(running, "POST", "/topology/modules",
                     {"bk_biz_id": 2, "set_id": web["id"], "name": "nginx"})
    await ok(running, "POST", "/topology/hosts/move", {
        "bk_biz_id": 2, "bk_host_ids": [ids[IPS[0]], ids[IPS[1]], ids["127.77.0.1"]],
        "module_ids": [nginx["id"]]})
    group = await ok(running, "POST", "/dynamic-groups", {
        "bk_biz_id": 2, "name": "last two", "id": "last-two",
        "filter": [{"field": "ip", "op": "in", "value": IPS[2:]}]})

    page = await login(browser, running)
    await page.goto(running.url + "/execute")
    await page.check(f"input.topo[data-type=module][value='{nginx['id']}']")
    assert await count_shown(page) == {"total": "3", "alive": "2", "dead": "1"}
    assert "127.77.0.1" in (await page.get_attribute("#target-count", "title") or "")
    await page.check(f"input.dgroup[value='{group['id']}']")
    await page.wait_for_function(
        "() => document.getElementById('target-count').dataset.total === '5'")
    assert await count_shown(page) == {"total": "5", "alive": "4", "dead": "1"}
    # pasted addresses count too, each host once; an unknown one is named
    await page.fill("textarea[name=ips]", f"{IPS[0]}\n127.77.0.99")
    await page.wait_for_function(
        "() => document.getElementById('target-count').dataset.total === 'error'")
    assert "127.77.0.99" in await page.inner_text("#target-count")
    await page.fill("textarea[name=ips]", IPS[0])
    await page.wait_for_function(
        "() => document.getElementById('target-count').dataset.total === '5'")
    # the host without an agent fails at once; the job targets the set and the group
    await page.uncheck(f"input.topo[data-type=module][value='{nginx['id']}']")
    await page.check(f"input.topo[data-type=set][value='{web['id']}']")
    await page.wait_for_function(
        "() => document.getElementById('target-count').dataset.total === '5'")
    await page.fill("textarea[name=script]", "echo hi from $JOBFLEET_HOST_IP")
    await page.click("#run")
    job = await job_id_of(page)
    final = await running.wire.wait(job)
    results = final["step_instance_list"][0]["step_ip_result_list"]
    assert sorted(r["ip"] for r in results) == sorted([*IPS, "127.77.0.1"])
    assert sorted(r["status"] for r in results) == [9, 9, 9, 9, 18]  # no agent: 18
    # the count endpoint answers bad input with the envelope
    bad = await page.evaluate("""() => fetch('/api/jobfleet/v1/targets/count', {method: 'POST',
        headers: {'Content-Type': 'application/json',
                  'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},
        body: JSON.stringify({bk_scope_type: 'biz', bk_scope_id: '2',
                              target_server: {topo_node_list: [{id: 'x'}]}})})
        .then(r => r.json())""")
    assert bad["result"] is False and bad["code"] != 0 and "topo_node_list" in bad["message"]


async def test_dangerous_check_blocks_and_warns(running: Running, browser: Any) -> None:
    await running.start_agents(IPS[:1])
    for expression, action, description in ((r"rm\s+-rf\s+/", 2, "wipes the disk"),
                                            ("shutdown", 1, "stops the host")):
        made = await running.wire.v3("create_dangerous_rule", {
            "expression": expression, "script_language_list": [1], "action": action,
            "description": description})
        assert made["result"], made
    page = await login(browser, running)
    await page.goto(running.url + "/execute")
    await page.fill("textarea[name=ips]", IPS[0])
    await page.fill("textarea[name=script]", "echo start\nrm -rf /tmp/x/../../\necho end")
    await page.click("#run")
    await page.wait_for_selector("#danger:not([hidden]) li.danger-line")
    assert await page.get_attribute("#danger", "data-blocked") == "1"
    line = await page.inner_text("li.danger-line")
    assert line.startswith("⛔ 2:") and "wipes the disk" in line
    assert await page.is_hidden("#danger-confirm-row")
    assert "/execute" in page.url
    assert "blocks" in await page.inner_text("#result")

    await page.fill("textarea[name=script]", "echo bye\nshutdown -h +60 || true\n")
    await page.click("#run")
    await page.wait_for_function("() => document.getElementById('danger').dataset.blocked === '0'")
    assert (await page.inner_text("li.danger-line")).startswith("⚠ 2:")
    assert await page.is_visible("#danger-confirm-row")
    await asyncio.sleep(0.5)
    assert "/execute" in page.url, "a warning launched without a confirmation"
    await page.check("#danger-confirm")
    await page.click("#run")
    job = await job_id_of(page)
    assert (await running.wire.wait(job))["job_instance"]["status"] in (3, 4)


async def test_variables_per_step_with_passwords_masked(running: Running, browser: Any) -> None:
    await running.start_agents(IPS[:1])
    plan_id, _ids = await make_plan(
        running,
        [script("first", "echo first ${who}\nwho=changed\n", hosts(IPS[0])),
         script("second", "echo second ${who}\n", hosts(IPS[0]))],
        [{"name": "who", "type": 1, "value": "world", "changeable": 1},
         {"name": "token", "type": 4, "value": "pa55-w0rd-secret", "changeable": 0}],
        name="vars plan",
    )
    answer = await running.wire.v3("execute_job_plan", {"bk_biz_id": 2, "job_plan_id": plan_id})
    assert answer["result"], answer
    job = answer["data"]["job_instance_id"]
    final = await running.wire.wait(job)
    assert final["job_instance"]["status"] == 3, final
    steps = [s["step_instance_id"] for s in final["step_instance_list"]]
    page = await login(browser, running)
    await page.goto(f"{running.url}/api_execute/{job}?step={steps[0]}")
    values = await page.eval_on_selector_all(
        "#variables tr.var", "rows => rows.map(r => [r.dataset.name,"
        " r.querySelector('.value').textContent, r.querySelector('.after').textContent])")
    assert values[0][:2] == ["who", "world"] and "changed" in values[0][2]
    assert values[1][0] == "token" and values[1][1] != "pa55-w0rd-secret"
    assert values[1][1].strip("*") == ""
    await page.goto(f"{running.url}/api_execute/{job}?step={steps[1]}")
    values = await page.eval_on_selector_all(
        "#variables tr.var", "rows => rows.map(r => [r.dataset.name,"
        " r.querySelector('.value').textContent])")
    assert values[0] == ["who", "changed"]
    assert "pa55-w0rd-secret" not in await page.content()


@pytest.fixture
async def public_server(tmp_path: Path, database_url: str) -> AsyncIterator[Running]:
    """A server whose webhooks may reach loopback and which knows its public address."""
    async with run_server(tmp_path, database_url,
                          server={"callback_allow": ["127.0.0.0/8"], "public_url": PUBLIC}) as run:
        yield run


async def test_approvers_notified_and_shown_on_home(public_server: Running,
                                                     browser: Any) -> None:
    running = public_server
    await running.start_agents(IPS[:1])
    wire = running.wire
    for name in ("carol", "dave"):
        assert (await wire.post("/api/jobfleet/v1/users", {"username": name}))["result"]
        assert (await wire.post(f"/api/jobfleet/v1/users/{name}/grants",
                                {"scope_type": "biz", "scope_id": "2"}))["result"]
        assert (await wire.post(f"/api/jobfleet/v1/users/{name}/password",
                                {"password": f"{name}-pass-123"}))["result"]
    plan_id, _ = await make_plan(running, [
        script("before", "echo before\n", hosts(IPS[0])),
        {"name": "go ahead?", "type": 3, "approval_info": {
            "approval_user": {"user_list": ["carol"]}, "approval_message": "check the canary"}},
    ], [], name="canary")
    async with listening(Hook()) as hook:
        await add_config(wire, channel="webhook", target=hook.url, secret=SECRET,
                         statuses=[3])
        answer = await wire.v3("execute_job_plan", {"bk_biz_id": 2, "job_plan_id": plan_id})
        job = answer["data"]["job_instance_id"]
        await eventually(lambda: asyncio.sleep(0, hook.accepted), timeout=30)
        headers, body = hook.accepted[0]
        assert headers["x-jobfleet-event"] == "confirm_waiting" and signed(headers, body)
        event = json.loads(body)
        assert event["job_instance_id"] == job and event["approvers"] == ["carol"]
        assert event["url"] == f"{PUBLIC}/api_execute/{job}"
        assert event["approval_message"] == "check the canary"
        assert event["url"] in event["summary"]

        carol = await login(browser, running, "carol", "carol-pass-123")
        await carol.wait_for_selector("#waiting tr.waiting")
        assert "go ahead?" in await carol.inner_text("#waiting")
        await carol.click(f"#waiting a[href^='/api_execute/{job}']")
        await carol.wait_for_url(f"**/api_execute/{job}*")
        assert await carol.inner_text("#approvers") == "Approvers: carol"
        dave = await login(browser, running, "dave", "dave-pass-123")
        assert await dave.locator("#waiting").count() == 0

        # carol confirms from the page; the job goes on and ends
        await carol.click("text=Confirm")
        final = await wire.wait(job)
        assert final["job_instance"]["status"] == 3
        # the job-end notification follows the approval request through the same channel
        await eventually(lambda: asyncio.sleep(0, len(hook.accepted) >= 2), timeout=30)
        assert hook.accepted[1][0]["x-jobfleet-event"] == "job_finished"
        await carol.goto(running.url + "/")
        assert await carol.locator("#waiting").count() == 0


async def test_status_names_in_chinese(running: Running, browser: Any) -> None:
    await running.start_agents(IPS[:2])
    job = (await running.wire.run_script(
        f'[ "$JOBFLEET_HOST_IP" = "{IPS[1]}" ] && exit 3; echo ok', IPS[:2]))["job_instance_id"]
    await running.wire.wait(job)
    page = await login(browser, running)
    await page.goto(running.url + "/lang/zh")
    await page.goto(f"{running.url}/api_execute/{job}")
    assert await page.inner_text("#job-status") == "执行失败"
    groups = await page.locator("#groups .group a").all_inner_texts()
    assert sorted(groups) == sorted(["执行成功", "脚本返回码非零"]), groups
    cells = await page.locator("#hosts tr.host td:nth-child(2)").all_inner_texts()
    assert sorted(cells) == sorted(["执行成功", "脚本返回码非零"]), cells
    assert "执行失败" in await page.inner_text(".st")  # the step row
    await page.goto(running.url + "/jobs")
    assert "执行失败" in await page.inner_text("tr.job")
    options = await page.locator("select[name=status] option").all_inner_texts()
    assert "正在执行" in options and "RUNNING" not in options
    # the live stream's names are Chinese too
    names = await page.evaluate("jf.runNames")
    assert names["3"] == "执行成功"
