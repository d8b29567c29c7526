"""The console's administration pages in a real browser, against a real server and
real agents: hosts (topology, groups, agent state, revoke), accounts, dangerous-statement
rules with "try it", and notification channels with a test message to a loopback
receiver."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from tests.integration.harness import Running, eventually, run_server, serve_on
from tests.integration.test_console import browser, login
from tests.integration.test_console import pytestmark as console_mark
from tests.integration.test_notifications import ALLOW_LOOPBACK, Hook

from jobfleet import __version__
from jobfleet.store.tables import hosts as hosts_table

__all__ = ["browser"]
pytestmark = console_mark
WEB, DB = "127.0.31.1", "127.0.31.2"
AGENTS = {WEB: {"hostname": "web-1", "labels": {"role": "web"}},
          DB: {"hostname": "db-1", "labels": {"role": "db"}}}
ADMIN = "/api/jobfleet/v1"
USER, USER_PASSWORD = "operator", "operator-pass-1"


@pytest.fixture
async def running(tmp_path: Path, database_url: str) -> AsyncIterator[Running]:
    # the notification receiver of these tests lives on loopback
    async with run_server(tmp_path, database_url, server=ALLOW_LOOPBACK) as run:
        yield run


async def ok(running: Running, method: str, path: str, body: dict[str, Any]) -> Any:
    answer = await running.wire.http.request(method, ADMIN + path, json=body,
                                            headers=running.wire.headers())
    data = answer.json()
    assert data["result"], data
    return data["data"]


async def operator(running: Running) -> None:
    """A user of business 2 who is not an administrator."""
    assert (await running.wire.post(ADMIN + "/users", {"username": USER}))["result"]
    assert (await running.wire.post(f"{ADMIN}/users/{USER}/grants",
                                    {"scope_type": "biz", "scope_id": "2"}))["result"]
    assert (await running.wire.post(f"{ADMIN}/users/{USER}/password",
                                    {"password": USER_PASSWORD}))["result"]


async def agents_with_facts(running: Running) -> dict[str, int]:
    await running.start_agents(list(AGENTS), settings_of=AGENTS)

    async def reported() -> bool:
        found = {h.ip: h for h in await running.server.inventory.list()}
        return all(found[ip].labels == AGENTS[ip]["labels"] and found[ip].os_name
                   for ip in AGENTS)
    await eventually(reported)
    return {h.ip: h.bk_host_id for h in await running.server.inventory.list()}


async def shown_ips(page: Any) -> list[str]:
    return sorted(await page.locator("tr.hostrow").evaluate_all(
        "rows => rows.map(r => r.dataset.ip)"))


async def test_hosts_page_topology_groups_and_filters(running: Running, browser: Any) -> None:
    ids = await agents_with_facts(running)
    backend = await ok(running, "POST", "/topology/sets", {"bk_biz_id": 2, "name": "backend"})
    nginx = await ok(running, "POST", "/topology/modules",
                     {"bk_biz_id": 2, "set_id": backend["id"], "name": "nginx"})
    await ok(running, "POST", "/topology/hosts/move",
             {"bk_biz_id": 2, "bk_host_ids": [ids[WEB]], "module_ids": [nginx["id"]]})
    await ok(running, "POST", "/dynamic-groups", {
        "bk_biz_id": 2, "name": "databases", "id": "dbs",
        "filter": [{"field": "labels.role", "op": "equal", "value": "db"}]})
    page = await login(browser, running)
    await page.goto(running.url + "/hosts")
    assert await shown_ips(page) == sorted(AGENTS)
    row = page.locator(f"tr.hostrow[data-ip='{WEB}']")
    assert await row.get_attribute("data-state") == "alive"
    assert await row.locator(".version").inner_text() == __version__
    assert (await row.locator(".os").inner_text()).strip()
    assert "role=web" in await row.inner_text() and "web-1" in await row.inner_text()
    assert await page.inner_text("#state-counts [data-state=alive] .count") == "2"
    # clicking a module of the tree shows its hosts only, and so does its set
    await page.click(f"#topology a[data-module='{nginx['id']}']")
    await page.wait_for_url(f"**module={nginx['id']}*")
    assert await shown_ips(page) == [WEB]
    await page.click(f"#topology a[data-set='{backend['id']}']")
    await page.wait_for_url(f"**set={backend['id']}*")
    assert await shown_ips(page) == [WEB]
    # a dynamic group lists its members
    await page.click("#groups a[data-group='dbs']")
    await page.wait_for_url("**group=dbs*")
    assert await shown_ips(page) == [DB]
    # filters: label, address text, state
    await page.goto(running.url + "/hosts?label=role%3Dweb")
    assert await shown_ips(page) == [WEB]
    await page.goto(running.url + "/hosts?q=31.2")
    assert await shown_ips(page) == [DB]
    await page.goto(running.url + "/hosts?state=dead")
    assert await shown_ips(page) == []
    # in Chinese
    await page.goto(running.url + "/lang/zh")
    await page.goto(running.url + "/hosts")
    assert "在线" in await row.inner_text()
    assert "业务拓扑" in await page.content()


async def test_an_admin_revokes_an_agent_and_an_operator_cannot(
        running: Running, browser: Any) -> None:
    await agents_with_facts(running)
    await operator(running)
    # the operator sees the hosts, no revoke button, and the API refuses them
    page = await login(browser, running, USER, USER_PASSWORD)
    await page.goto(running.url + "/hosts")
    assert await shown_ips(page) == sorted(AGENTS)
    assert await page.locator("button.revoke").count() == 0
    agent = running.agents[WEB][0]
    assert agent.credential is not None
    answer = await page.evaluate(f"""() => fetch('{ADMIN}/agents/{agent.credential.agent_id}',
        {{method: 'DELETE', headers: {{'X-CSRF-Token': document.querySelector(
        'meta[name="csrf-token"]').content}}}}).then(r => r.json())""")
    assert not answer["result"] and answer["code"] != 0, answer
    assert "administrator" in answer["message"]
    assert agent.connected.is_set()
    # the administrator revokes it after a confirmation
    page = await login(browser, running)
    await page.goto(running.url + "/hosts")
    asked: list[str] = []

    async def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        await dialog.accept()
    page.on("dialog", accept)
    # the page reloads itself once the revocation is answered: a navigation of the
    # test's own would race that reload
    async with page.expect_navigation(timeout=15_000):
        await page.click(f"tr.hostrow[data-ip='{WEB}'] button.revoke")

    async def cut() -> bool:
        return not agent.connected.is_set() and not any(
            h.ip == WEB and h.alive for h in await running.server.inventory.list())
    await eventually(cut, timeout=15)
    assert asked and WEB in asked[0]
    await page.goto(running.url + "/hosts")
    revoked = page.locator(f"tr.hostrow[data-ip='{WEB}']")
    assert await revoked.get_attribute("data-state") == "dead"
    assert await revoked.locator(".revoked").count() == 1
    assert await revoked.locator("button.revoke").count() == 0
    assert await page.locator(f"tr.hostrow[data-ip='{DB}'] button.revoke").count() == 1
    entries = await running.server.audit.recent(100)
    assert any(e["action"] == "revoke_agent" and e["username"] == "admin" for e in entries)


async def test_create_edit_and_delete_accounts(running: Running, browser: Any) -> None:
    page = await login(browser, running)
    await page.goto(running.url + "/accounts")
    # a system account
    await page.fill("#account-form input[name=account]", "deploy")
    await page.fill("#account-form input[name=alias]", "deploy-user")
    await page.click("#save")
    await page.wait_for_selector("tr.account[data-alias='deploy-user']")
    # a database account: its password is never shown
    secret = "db-Pass-never-shown-42"
    await page.select_option("#account-form select[name=category]", "2")
    await page.fill("#account-form input[name=account]", "reporter")
    await page.fill("#account-form input[name=alias]", "reports-db")
    await page.select_option("#account-form select[name=db_system_account_id]",
                             label="deploy-user")
    await page.fill("#account-form input[name=db_host]", "127.0.0.1")
    await page.fill("#account-form input[name=db_port]", "3306")
    await page.fill("#account-form input[name=db_name]", "reports")
    await page.fill("#account-form input[name=password]", secret)
    await page.click("#save")
    await page.wait_for_selector("tr.account[data-alias='reports-db']")
    row = page.locator("tr.account[data-alias='reports-db']")
    assert "127.0.0.1:3306/reports" in await row.inner_text()
    assert secret not in await page.content()
    listed = await running.wire.v3("get_account_list", {"bk_scope_type": "biz",
                                                        "bk_scope_id": "2", "length": 100})
    assert secret not in json.dumps(listed)
    # edit the alias
    await row.locator("button.edit").click()
    await page.fill("#account-form input[name=alias]", "reports-ro")
    await page.click("#save")
    await page.wait_for_selector("tr.account[data-alias='reports-ro']")
    # delete, after a confirmation
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.locator("tr.account[data-alias='reports-ro'] button.delete").click()
    await page.wait_for_selector("tr.account[data-alias='reports-ro']", state="detached")
    actions = {e["action"] for e in await running.server.audit.recent(100)}
    assert {"create_account", "update_account", "delete_account"} <= actions
    # a bad input says why, with the API's message
    await page.select_option("#account-form select[name=category]", "2")
    await page.fill("#account-form input[name=account]", "nopass")
    await page.fill("#account-form input[name=password]", "")
    await page.click("#save")
    await page.wait_for_function("() => document.getElementById('result').textContent.length > 0")
    assert "db_password" in await page.inner_text("#result")


async def test_dangerous_rule_and_try_it(running: Running, browser: Any) -> None:
    page = await login(browser, running)
    await page.goto(running.url + "/dangerous-rules")
    await page.fill("#rule-form input[name=expression]", r"rm\s+-rf\s+/")
    await page.select_option("#rule-form select[name=action]", "2")
    await page.fill("#rule-form input[name=description]", "wipes a tree")
    await page.click("#save")
    await page.wait_for_selector("tr.rule")
    script = "echo start\nrm -rf /data\necho end\n"
    await page.fill("#try-form textarea[name=script]", script)
    await page.click("#try")
    await page.wait_for_selector("#verdict[data-blocked='1']")
    finding = await page.locator("tr.finding").inner_text()
    assert "2" in finding and "rm -rf /data" in finding and "Block" in finding
    # turned off, it blocks nothing
    await page.click("tr.rule button.disable")
    await page.wait_for_selector("tr.rule button.enable")
    await page.fill("#try-form textarea[name=script]", script)
    await page.click("#try")
    await page.wait_for_selector("#verdict[data-blocked='0']")
    assert await page.locator("tr.finding").count() == 0
    # a launch agrees with the page once it is on again
    await page.click("tr.rule button.enable")
    await page.wait_for_selector("tr.rule button.disable")
    refused = await running.wire.v3("fast_execute_script", {
        "bk_scope_type": "biz", "bk_scope_id": "2", "script_language": 1,
        "script_content": base64.b64encode(script.encode()).decode(), "account_alias": "root",
        "target_server": {"ip_list": [{"ip": "127.0.0.1", "bk_cloud_id": 0}]}})
    assert refused["code"] == 1244019, refused
    actions = {e["action"] for e in await running.server.audit.recent(100)}
    assert {"create_dangerous_rule", "disable_dangerous_rule", "enable_dangerous_rule"} <= actions
    # an operator reads the rules and tries scripts, but has no form to change them
    await operator(running)
    page = await login(browser, running, USER, USER_PASSWORD)
    await page.goto(running.url + "/dangerous-rules")
    assert await page.locator("tr.rule").count() == 1
    assert await page.locator("#rule-form").count() == 0
    assert await page.locator("tr.rule button").count() == 0
    await page.fill("#try-form textarea[name=script]", script)
    await page.click("#try")
    await page.wait_for_selector("#verdict[data-blocked='1']")


async def test_rule_that_backtracks_in_the_console(running: Running, browser: Any) -> None:
    """The form refuses an expression the probes catch; the try-it box shows a rule that
    ran out of time on a crafted line (and that the script would be refused)."""
    page = await login(browser, running)
    await page.goto(running.url + "/dangerous-rules")
    await page.fill("#rule-form input[name=expression]", r"^(a|aa)+$")
    await page.click("#save")
    await page.wait_for_function("() => document.getElementById('result').textContent.length > 0")
    assert "backtracks" in await page.inner_text("#result")
    assert await page.locator("tr.rule").count() == 0
    await page.fill("#rule-form input[name=expression]", r"^rm (a|aa)+$")
    await page.select_option("#rule-form select[name=action]", "2")
    await page.click("#save")
    await page.wait_for_selector("tr.rule")
    await page.fill("#try-form textarea[name=script]", "echo a\nrm " + "a" * 60 + "!\n")
    await page.click("#try")
    await page.wait_for_selector("#verdict[data-blocked='1']", timeout=30_000)
    finding = await page.locator("tr.finding").inner_text()
    assert "took too long to check" in finding and "Block" in finding


async def test_notification_channel_and_test_message(running: Running, browser: Any) -> None:
    hook = Hook()
    server = hook.server()
    task = await serve_on(server, hook.sock)
    try:
        page = await login(browser, running)
        await page.goto(running.url + "/notifications")
        await page.select_option("#notify-form select[name=channel]", "webhook")
        await page.fill("#notify-form input[name=target]", hook.url)
        await page.fill("#notify-form input[name=secret]", "hook-key-0123456789")
        await page.check("#notify-form input[name=status][value='3']")
        await page.click("#save")
        await page.wait_for_selector("tr.channel")
        assert hook.url in await page.inner_text("tr.channel .target")
        assert "hook-key-0123456789" not in await page.content()
        await page.click("tr.channel button.test")
        await page.wait_for_selector(".test-state[data-state='done']", timeout=30000)
        assert len(hook.accepted) == 1
        headers, body = hook.accepted[0]
        message = json.loads(body)
        assert message["event"] == "test" and message["bk_biz_id"] == 2
        expected = hmac.new(b"hook-key-0123456789", body, hashlib.sha256).hexdigest()
        assert headers["x-jobfleet-signature"] == "sha256=" + expected
        assert headers["x-jobfleet-event"] == "test"
        # edit: listen for failures only, then delete
        await page.click("tr.channel button.edit")
        await page.uncheck("#notify-form input[name=status][value='3']")
        await page.click("#save")

        async def failures_only() -> bool:
            configs = await running.wire.get(ADMIN + "/businesses/2/notify-configs", {})
            return bool(configs["data"][0]["statuses"] == [4])
        await eventually(failures_only)
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.click("tr.channel button.delete")
        await page.wait_for_selector("tr.channel", state="detached")
        actions = {e["action"] for e in await running.server.audit.recent(100)}
        assert {"create_notify_config", "test_notify_config", "update_notify_config",
                "delete_notify_config"} <= actions
    finally:
        server.should_exit = True
        await asyncio.wait({task}, timeout=10)


async def test_notifications_page_of_a_server_without_a_mail_relay(
        running: Running, browser: Any) -> None:
    """The page says no mail goes out and how to set a relay up; an email channel saved
    through it is refused with the server's reason."""
    page = await login(browser, running)
    await page.goto(running.url + "/notifications")
    assert "--smtp-host" in await page.inner_text("#no-mail-relay")
    await page.select_option("#notify-form select[name=channel]", "email")
    await page.fill("#notify-form input[name=target]", "ops@example.org")
    await page.click("#save")
    await page.wait_for_function("() => document.getElementById('result').textContent.length > 0")
    assert "no mail relay configured" in await page.inner_text("#result")
    assert await page.locator("tr.channel").count() == 0


async def test_test_message_errors(running: Running) -> None:
    wire = running.wire
    base = ADMIN + "/businesses/2/notify-configs"
    missing = await wire.post(base + "/999/tests", {})
    assert missing["code"] != 0 and "999" in missing["message"], missing
    made = await wire.post(base, {"channel": "webhook", "target": "http://127.0.0.1:9/x",
                                  "secret": "hook-key-0123456789", "statuses": [4]})
    config = made["data"]["id"]
    too_long = await wire.post(f"{base}/{config}/tests", {"note": "x" * 501})
    assert too_long["code"] != 0 and "note" in too_long["message"], too_long
    sent = await wire.post(f"{base}/{config}/tests", {"note": "from the runbook"})
    assert sent["result"], sent
    delivery = sent["data"]["delivery_id"]
    # nothing listens on port 9: the delivery fails and says why
    async def failed() -> dict[str, Any] | None:
        state = await wire.get(f"{base}/{config}/tests/{delivery}", {})
        return state["data"] if state["data"]["state"] == "failed" else None
    final = await eventually(failed, timeout=30)
    assert final["attempts"] == 3 and final["last_error"], final
    unknown = await wire.get(f"{base}/{config}/tests/{delivery + 100}", {})
    assert unknown["code"] != 0 and "does not exist" in unknown["message"]
    bad = await wire.get(f"{base}/{config}/tests/abc", {})
    assert bad["code"] != 0 and "delivery_id" in bad["message"], bad
    check = await wire.post(ADMIN + "/dangerous-rules/check",
                            {"script_language": 9, "content": "ZWNobw=="})
    assert check["code"] != 0 and "script_language" in check["message"]


async def test_ten_thousand_hosts_page(running: Running, browser: Any) -> None:
    """The counts and the first page of a business of 10,000 hosts, paged on the
    server; the timing printed here is measured in bench/host_pages.py."""
    count = 10_000
    now = int(time.time() * 1000)
    rows = [{"bk_biz_id": 2, "bk_cloud_id": 0, "ip": str(ipaddress.IPv4Address("127.50.0.1") + i),
             "agent_id": f"swarm-{i}" if i % 4 else None, "alive": 1 if i % 2 else 0,
             "labels": {"shard": str(i % 10)}, "agent_version": "1.0", "os_name": "Linux",
             "hostname": f"h{i}", "last_seen": now, "create_time": now} for i in range(count)]
    async with running.server.db.begin() as conn:
        await conn.execute(insert(hosts_table), rows)
    page = await login(browser, running)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        await page.goto(running.url + "/hosts", wait_until="domcontentloaded")
        await page.wait_for_selector("#hosts tr.hostrow")
        timings.append(time.perf_counter() - started)
    print(f"10000-host hosts page: {', '.join(f'{t:.3f}' for t in timings)} s")
    assert min(timings) < 10, timings
    assert await page.inner_text("#total") == str(count)
    assert await page.locator("tr.hostrow").count() == 100
    counts = {s: await page.inner_text(f"#state-counts [data-state={s}] .count")
              for s in ("alive", "dead", "none")}
    assert counts == {"alive": "5000", "dead": "2500", "none": "2500"}, counts
    await page.click("#next")
    await page.wait_for_url("**offset=100*")
    assert await page.locator("tr.hostrow").first.get_attribute("data-ip") == "127.50.0.101"
    await page.goto(running.url + "/hosts?label=shard%3D3&state=alive")
    assert await page.inner_text("#total") == "1000"


async def test_pages_in_chinese_and_for_a_user_without_the_business(
        running: Running, browser: Any) -> None:
    await agents_with_facts(running)
    assert (await running.wire.post(ADMIN + "/users", {"username": "outsider"}))["result"]
    assert (await running.wire.post(ADMIN + "/users/outsider/password",
                                    {"password": "outsider-pass-1"}))["result"]
    admin = await login(browser, running)
    outsider = await login(browser, running, "outsider", "outsider-pass-1")
    for page in (admin, outsider):
        await page.goto(running.url + "/lang/zh")
    words = {"/hosts": "业务拓扑", "/accounts": "新建或编辑账号",
             "/dangerous-rules": "试一试", "/notifications": "新增或编辑通知渠道"}
    for path, word in words.items():
        answer = await admin.goto(running.url + path)
        assert answer is not None and answer.status == 200, path
        assert word in await admin.content(), path
        answer = await outsider.goto(running.url + path)
        assert answer is not None and answer.status == 200, path
    # the outsider sees nothing of business 2
    await outsider.goto(running.url + "/hosts")
    assert await outsider.locator("tr.hostrow").count() == 0
    await outsider.goto(running.url + "/accounts")
    assert await outsider.locator("tr.account").count() == 0


async def test_audit_page_says_whose_entries_it_shows(running: Running, browser: Any) -> None:
    """A user who is not an administrator reads the entries of the scopes they hold, as
    `jobfleet audit` shows them, and the page says so; one who holds none is told why
    the page is empty rather than shown a bare table."""
    await operator(running)
    assert (await running.wire.post(ADMIN + "/users", {"username": "outsider"}))["result"]
    assert (await running.wire.post(ADMIN + "/users/outsider/password",
                                    {"password": "outsider-pass-1"}))["result"]
    for biz in ("2", "3"):
        await running.server.audit.record(
            app_code="ops", username="admin", action=f"probe_in_{biz}",
            resource_type="job_instance", resource_id=biz, scope_type="biz", scope_id=biz)

    async def audit_page(user: str, password: str | None = None) -> tuple[str, list[str]]:
        page = await login(browser, running, user, password)
        await page.click("nav a[href='/audit']")
        await page.wait_for_url("**/audit")
        said = await page.inner_text("#audit-scope")
        actions = await page.locator("table.list tr td:nth-child(4)").all_inner_texts()
        await page.close()
        return said, actions

    said, actions = await audit_page(USER, USER_PASSWORD)
    assert said.startswith("The newest entries of the scopes you hold: biz 2."), said
    assert "probe_in_2" in actions and "probe_in_3" not in actions, actions
    said, actions = await audit_page("outsider", "outsider-pass-1")
    assert said.startswith("You hold no business scope, so no entry is shown."), said
    assert actions == []
    said, actions = await audit_page("admin")
    assert said == "The newest entries of every scope.", said
    assert {"probe_in_2", "probe_in_3"} <= set(actions), actions
