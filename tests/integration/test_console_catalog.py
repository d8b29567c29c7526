"""The console's scripts, templates and crons in a real browser (Debian's chromium driven
by Playwright) against a real server: edit a draft, publish it, disable the old version,
compare two versions; export a template as YAML and import it under a new name, sync a
plan; create a cron and see it fire; a user without the business sees none of it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from tests.integration.harness import Running, eventually, run_server
from tests.integration.test_console import IPS, browser, login, pytestmark
from tests.integration.test_plans import hosts, script

__all__ = ["browser", "pytestmark"]

BIZ = {"bk_scope_type": "biz", "bk_scope_id": "2"}
V1 = "/api/jobfleet/v1"
OLD = "#!/bin/bash\necho first line\necho version one\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def ok(answer: dict[str, Any]) -> Any:
    assert answer["result"], answer
    return answer["data"]


async def outsider(running: Running, name: str = "outsider") -> tuple[str, str]:
    password = f"{name}-pass-1"
    ok(await running.wire.post(f"{V1}/users", {"username": name}))
    ok(await running.wire.post(f"{V1}/users/{name}/password", {"password": password}))
    return name, password


async def row_status(page: Any, version: str) -> str:
    return str(await page.get_attribute(f"tr.version[data-version='{version}']", "data-status"))


async def test_edit_publish_disable_and_compare_script_versions(
    running: Running, browser: Any
) -> None:
    created = ok(await running.wire.v3("create_script", {
        **BIZ, "name": "rotate logs", "script_language": 1, "content": b64(OLD),
        "version": "1.0"}))
    script_id = created["script_id"]
    ok(await running.wire.v3("publish_script_version", {
        **BIZ, "script_id": script_id, "script_version_id": created["id"]}))
    page = await login(browser, running)
    await page.goto(running.url + "/scripts")
    row = page.locator("tr.script", has_text="rotate logs")
    assert "1.0" in await row.inner_text()
    await row.locator("a").click()
    await page.wait_for_url(f"**/scripts/{script_id}")
    assert await row_status(page, "1.0") == "online"
    # a new version from the online one: a draft
    await page.fill("#new-version input[name=version]", "1.1")
    await page.fill("#new-version textarea[name=content]", OLD)
    await page.click("#create-version")
    await page.wait_for_url("**?version=*")
    await page.wait_for_selector("#draft")
    assert await row_status(page, "1.1") == "draft"
    # edit the draft: one line changes, one comes in
    edited = OLD.replace("version one", "version <two> & more") + "echo added\n"
    await page.fill("#draft textarea[name=content]", edited)
    await page.fill("#draft input[name=version_desc]", "escaped <b>text</b>")
    # the save reloads the page once the draft is stored: the box shows what was stored
    async with page.expect_navigation():
        await page.click("#save")
    assert "echo added" in await page.input_value("#draft textarea")
    # publish the draft: the old version goes offline; then disable the old one
    await page.click("tr.version[data-version='1.1'] button.publish")
    await page.wait_for_selector("tr.version[data-version='1.1'][data-status='online']")
    assert await row_status(page, "1.0") == "offline"
    await page.click("tr.version[data-version='1.0'] button.disable")
    await page.wait_for_selector("tr.version[data-version='1.0'][data-status='disabled']")
    assert await page.locator("tr.version[data-version='1.0'] button").count() == 0
    # compare the two versions: the changed line, escaped, side by side then unified
    versions = {v["version"]: v["id"] for v in ok(await running.wire.v3(
        "get_script_version_list", {**BIZ, "script_id": script_id}, method="GET"))["data"]}
    await page.select_option("select[name=a]", str(versions["1.0"]))
    await page.select_option("select[name=b]", str(versions["1.1"]))
    await page.click("#compare")
    await page.wait_for_selector("table#diff")
    changed = page.locator("table#diff tr.d-replace")
    assert await changed.count() == 1
    assert "echo version one" in await changed.locator("td.old").inner_text()
    assert "echo version <two> & more" in await changed.locator("td.new").inner_text()
    assert "echo added" in await page.locator("table#diff tr.d-insert td.new").inner_text()
    assert "<two>" not in await page.content()  # escaped, not markup
    await page.select_option("select[name=mode]", "unified")
    await page.click("#compare")
    await page.wait_for_selector("pre#diff")
    assert "-echo version one" in await page.locator("pre#diff .d-delete").all_inner_texts()
    # tags: set on the script's page, shown in the list and a filter of it
    await page.fill("#tag-form input[name=tags]", "ops, nightly")
    await page.click("#save-tags")
    await page.wait_for_selector("#tags a.tag:has-text('nightly')")
    await page.goto(running.url + "/scripts?tag=ops")
    assert await page.locator("tr.script", has_text="rotate logs").count() == 1
    assert "nightly" in await page.locator("tr.script td.tags").inner_text()
    await page.goto(running.url + "/scripts?tag=none")
    assert await page.locator("tr.script").count() == 0
    # every change went through the API and is in the audit log
    actions = [e["action"] for e in await running.server.audit.recent(100)]
    for action in ("update_script_basic", "create_script_version", "update_script_version",
                   "publish_script_version", "disable_script_version"):
        assert action in actions, actions
    # the page in Chinese
    await page.goto(running.url + "/lang/zh")
    await page.goto(f"{running.url}/scripts/{script_id}")
    assert "已禁用" in await page.inner_text("#versions")
    assert "脚本管理" in await page.inner_text("nav")


async def test_public_scripts_are_changed_by_administrators_only(
    running: Running, browser: Any
) -> None:
    admin = await login(browser, running)
    await admin.goto(running.url + "/public-scripts")
    await admin.fill("#new-script input[name=name]", "shared check")
    await admin.fill("#new-script input[name=version]", "1")
    await admin.fill("#new-script textarea[name=content]", "#!/bin/bash\necho shared\n")
    await admin.click("#create")
    await admin.wait_for_url("**/public-scripts/*")
    script_id = admin.url.rsplit("/", 1)[-1]
    assert await admin.locator("#draft").count() == 1
    name, password = await outsider(running)
    page = await login(browser, running, name, password)
    await page.goto(running.url + "/public-scripts")
    assert await page.locator("tr.script", has_text="shared check").count() == 1
    assert await page.locator("#new-script").count() == 0
    await page.goto(f"{running.url}/public-scripts/{script_id}")
    assert await page.locator("#draft, #new-version, button.publish").count() == 0
    answer = await page.evaluate(
        "jf.api('create_public_script_version', {script_id: '" + script_id
        + "', version: '2', content: btoa('echo 2')})")
    assert answer["code"] != 0 and "administrator" in answer["message"]


async def test_a_templates_host_variable_shows_its_hosts(
        running: Running, browser: Any) -> None:
    """The value of a host variable on the template page is the hosts it names."""
    steps = [script("greet", "echo hello\n", {"variable": "targets"})]
    variables = [{"name": "targets", "type": 3, "server": hosts(*IPS[:2])}]
    tpl = ok(await running.wire.post(f"{V1}/templates?bk_biz_id=2", {
        "name": "hosts shown", "step_list": steps, "global_var_list": variables}))
    page = await login(browser, running)
    await page.goto(f"{running.url}/templates/{tpl['id']}")
    row = (await page.locator("#variables tr.variable").all_inner_texts())[0].split("\t")
    assert row[:3] == ["targets", "host_list", f"{IPS[0]}, {IPS[1]}"], row


async def test_export_a_template_import_it_under_a_new_name_and_sync_a_plan(
    running: Running, browser: Any, tmp_path: Path
) -> None:
    wire = running.wire
    steps = [script("greet", "echo hello ${who}\n", hosts(IPS[0]))]
    variables = [{"name": "who", "type": 1, "value": "world"}]
    tpl = ok(await wire.post(f"{V1}/templates?bk_biz_id=2", {
        "name": "greeting", "description": "says hello", "step_list": steps,
        "global_var_list": variables}))
    plan = ok(await wire.post(f"{V1}/templates/{tpl['id']}/plans?bk_biz_id=2",
                              {"name": "greet all"}))
    page = await login(browser, running)
    await page.goto(running.url + "/templates")
    await page.click(f"a[href='/templates/{tpl['id']}']")
    assert "greet" in await page.inner_text("#steps")
    assert "who" in await page.inner_text("#variables")
    assert await page.locator(f"tr.plan[data-plan='{plan['id']}'] .needs-sync").count() == 0
    async with page.expect_download() as info:
        await page.click("#export")
    download = await info.value
    saved = tmp_path / "greeting.yaml"
    await download.save_as(str(saved))
    text = saved.read_text()
    assert "greeting" in text and "greet all" in text and "hello ${who}" in text
    # import it back under another name: a new template with its plan
    await page.goto(running.url + "/templates")
    await page.set_input_files("#import input[name=file]", str(saved))
    await page.fill("#import input[name=name]", "greeting copy")
    await page.click("#import-run")
    await page.wait_for_function(
        "() => document.getElementById('template-name') && "
        "document.getElementById('template-name').textContent === 'greeting copy'")
    assert "greet all" in await page.inner_text("#plans")
    copy_id = int(page.url.rsplit("/", 1)[-1])
    assert copy_id != tpl["id"]
    # the original template changes: its plan needs a sync, and the button syncs it
    changed = await wire.http.put(
        f"{V1}/templates/{tpl['id']}", params={"bk_biz_id": 2}, headers=wire.headers(),
        json={"name": "greeting", "global_var_list": variables,
              "step_list": [script("greet", "echo hi ${who}\n", hosts(IPS[0]))]})
    ok(changed.json())
    await page.goto(f"{running.url}/api_plan/{plan['id']}")
    assert await page.locator("#plan-template .needs-sync").count() == 1
    # the plan's page syncs it too
    await page.click("#plan-template button.sync")
    await page.wait_for_function("() => !document.querySelector('#plan-template .needs-sync')")
    changed = await wire.http.put(
        f"{V1}/templates/{tpl['id']}", params={"bk_biz_id": 2}, headers=wire.headers(),
        json={"name": "greeting", "global_var_list": variables,
              "step_list": [script("greet", "echo hey ${who}\n", hosts(IPS[0]))]})
    ok(changed.json())
    await page.goto(f"{running.url}/templates/{tpl['id']}")
    await page.click(f"tr.plan[data-plan='{plan['id']}'] button.sync")
    await page.wait_for_selector(f"tr.plan[data-plan='{plan['id']}'] .ok")
    detail = ok(await wire.get(f"{V1}/plans/{plan['id']}", {"bk_biz_id": 2}))
    assert detail["need_update"] is False
    actions = [e["action"] for e in await running.server.audit.recent(100)]
    assert "import_job_template" in actions and "sync_job_plan" in actions


async def test_plans_of_one_name_are_told_apart_by_their_template(
        running: Running, browser: Any) -> None:
    """Plans are named within their template, so two templates' "canary" plans are two
    choices of the new-cron form: each says its template."""
    made = []
    for name in ("web", "db"):
        tpl = ok(await running.wire.post(f"{V1}/templates?bk_biz_id=2", {
            "name": name, "step_list": [script("tick", "echo tick\n", hosts(IPS[0]))]}))
        plan = ok(await running.wire.post(
            f"{V1}/templates/{tpl['id']}/plans?bk_biz_id=2", {"name": "canary"}))
        made.append((plan["id"], tpl["id"]))
    page = await login(browser, running)
    await page.goto(f"{running.url}/crons")
    options = await page.locator("#new-cron select[name=job_plan_id] option").all_inner_texts()
    assert sorted(options) == sorted(
        f"{plan} canary · Template {tpl}" for plan, tpl in made), options


async def test_create_a_cron_and_see_it_fire(tmp_path: Path, database_url: str,
                                             browser: Any) -> None:
    # the cron clock runs 60 times faster: "* * * * *" fires every second
    async with run_server(tmp_path, database_url, engine={"cron_time_scale": 60}) as running:
        await running.start_agents(IPS[:1])
        tpl = ok(await running.wire.post(f"{V1}/templates?bk_biz_id=2", {
            "name": "tick", "step_list": [script("tick", "echo tick\n", hosts(IPS[0]))]}))
        for name in ("another plan", "tick plan"):
            plan = ok(await running.wire.post(
                f"{V1}/templates/{tpl['id']}/plans?bk_biz_id=2", {"name": name}))
        page = await login(browser, running)
        # from the plan's row of its template: the new-cron form with the plan chosen
        await page.goto(f"{running.url}/templates/{tpl['id']}")
        await page.click(f"tr.plan[data-plan='{plan['id']}'] a.new-cron")
        await page.wait_for_url("**/crons?plan=*")
        chosen = await page.eval_on_selector("#new-cron select[name=job_plan_id]",
                                             "el => el.value")
        assert chosen == str(plan["id"])
        await page.fill("#new-cron input[name=name]", "every minute")
        await page.fill("#new-cron input[name=expression]", "* * * * *")
        await page.click("#create-cron")
        await page.wait_for_url("**/crons/*")
        cron_id = int(page.url.rsplit("/", 1)[-1])
        assert await page.inner_text("#next-run") != ""
        # the cron's page disables and enables it; its delete asks first (declined here)
        await page.click("#cron button.pause")
        await page.wait_for_selector("#cron button.start")
        await page.click("#cron button.start")
        await page.wait_for_selector("#cron button.pause")
        asked: list[str] = []

        async def decline(dialog: Any) -> None:
            asked.append(dialog.message)
            await dialog.dismiss()
        page.once("dialog", decline)
        await page.click("#cron button.delete")

        async def was_asked() -> bool:
            return bool(asked)
        await eventually(was_asked, timeout=10)
        assert await page.locator("#cron").count() == 1

        async def fired() -> bool:
            await page.reload()
            return await page.locator("#firings tr.firing a[href^='/api_execute/']").count() > 0
        await eventually(fired, timeout=30, interval=0.5)
        link = page.locator("#firings tr.firing a[href^='/api_execute/']").first
        job_id = int(str(await link.get_attribute("href")).rsplit("/", 1)[-1])
        final = await running.wire.wait(job_id)
        assert final["job_instance"]["status"] == 3, final
        # the history through the API, and the list with the last run
        history = ok(await running.wire.get(f"{V1}/crons/{cron_id}/firings", BIZ))
        assert history["total"] >= 1 and history["data"][0]["outcome"] == "fired"
        await page.goto(running.url + "/crons")
        row = page.locator(f"tr.cron[data-cron='{cron_id}']")
        assert "tick plan" in await row.inner_text()
        assert await row.locator("td.last-run a").count() == 1
        assert await row.locator("td.next-run").inner_text() != ""
        # disable, then delete
        await row.locator("button.pause").click()
        await page.wait_for_selector(f"tr.cron[data-cron='{cron_id}'] button.start")
        assert await row.locator("td.next-run").inner_text() == ""
        page.on("dialog", lambda dialog: dialog.accept())
        await row.locator("button.delete").click()
        await page.wait_for_function(
            f"() => !document.querySelector(\"tr.cron[data-cron='{cron_id}']\")")
        actions = [e["action"] for e in await running.server.audit.recent(200)]
        for action in ("create_cron", "start_cron", "pause_cron", "delete_cron"):
            assert action in actions, actions


async def test_a_user_without_the_business_sees_none_of_it(
    running: Running, browser: Any
) -> None:
    created = ok(await running.wire.v3("create_script", {
        **BIZ, "name": "secret script", "script_language": 1, "content": b64(OLD),
        "version": "1.0"}))
    tpl = ok(await running.wire.post(f"{V1}/templates?bk_biz_id=2", {
        "name": "secret template", "step_list": [script("s", "echo s\n", hosts(IPS[0]))]}))
    plan = ok(await running.wire.post(f"{V1}/templates/{tpl['id']}/plans?bk_biz_id=2",
                                      {"name": "secret plan"}))
    cron = ok(await running.wire.v3("save_cron", {
        **BIZ, "name": "secret cron", "job_plan_id": plan["id"], "expression": "0 3 * * *"}))
    name, password = await outsider(running)
    page = await login(browser, running, name, password)
    for path in ("/scripts", "/templates", "/crons", "/plans"):
        await page.goto(running.url + path)
        assert "secret" not in await page.content(), path
    for path in (f"/scripts/{created['script_id']}", f"/templates/{tpl['id']}",
                 f"/crons/{cron['id']}", f"/api_plan/{plan['id']}"):
        await page.goto(running.url + path)
        assert await page.locator("#missing").count() == 1, path
        assert "secret" not in await page.content(), path
    # nor through the API with the session
    for url in (f"{V1}/crons/{cron['id']}/firings?bk_scope_type=biz&bk_scope_id=2",
                f"{V1}/templates/{tpl['id']}/export?bk_scope_type=biz&bk_scope_id=2"):
        answer = await page.evaluate(f"fetch('{url}').then(r => r.json())")
        assert answer["code"] != 0 and "secret" not in str(answer), answer
    answer = await page.evaluate(
        "jf.api('publish_script_version', {bk_scope_type: 'biz', bk_scope_id: '2', "
        f"script_id: '{created['script_id']}', script_version_id: {created['id']}}})")
    assert answer["code"] != 0


async def test_a_script_that_starts_with_a_newline_keeps_it(
    running: Running, browser: Any
) -> None:
    """HTML drops one newline right after ``<textarea>`` and ``<pre>``: a script whose
    content starts with one is shown, and saved from its draft, as it is."""
    content = "\n\necho after two blank lines\n"
    draft = ok(await running.wire.v3("create_script", {
        **BIZ, "name": "leading newline", "script_language": 1, "content": b64(content),
        "version": "1.0"}))
    page = await login(browser, running)
    await page.goto(f"{running.url}/scripts/{draft['script_id']}?version={draft['id']}")
    assert await page.input_value("#draft textarea") == content
    assert await page.input_value("#new-version textarea") == content
    async with page.expect_navigation():
        await page.click("#save")
    stored = ok(await running.wire.v3("get_script_version_detail", {
        **BIZ, "id": draft["id"]}, method="GET"))
    assert stored["content"] == content
    ok(await running.wire.v3("publish_script_version", {
        **BIZ, "script_id": draft["script_id"], "script_version_id": draft["id"]}))
    await page.reload()
    assert await page.text_content("pre#content") == content
