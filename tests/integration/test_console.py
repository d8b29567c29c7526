"""The web console in a real browser (Debian's chromium driven by Playwright), against a
real server and real agents: log in, run, watch live output, group, terminate, run a
plan, distribute a file, see nothing of another business (the 10,000-host job page is
in test_console_scale.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.chromium import CHROMIUM, SharedChromium
from tests.integration.harness import Running
from tests.integration.test_plans import hosts, make_plan, script

IPS = [f"127.0.8.{i}" for i in range(1, 6)]
# the README shows it: the job page of five hosts with their output grouped; a run of the
# suite leaves the checkout as it was unless asked to renew the picture
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "job-page.png"
RENEW_SCREENSHOT = os.environ.get("JOBFLEET_RENEW_SCREENSHOT") == "1"

if not os.path.exists(CHROMIUM):
    print("\n" + "*" * 70 + "\n* chromium is not installed: the console's browser tests are "
          "SKIPPED\n* (apt-get install chromium; .ci/run does it)\n" + "*" * 70, file=sys.stderr)
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="LOUD: chromium is not installed, the console's browser tests cannot run",
)
# what a page shows comes from the API's and the store's answers, which their own tests
# check on every backend; the tests of hostile text and of a 10,000-host page take
# ``needs_chromium`` alone and run on every backend as well
pytestmark = [needs_chromium, pytest.mark.one_backend]


class Guarded:
    """The browser, whose every page reports what the Content-Security-Policy refused
    and every script error: the policy allows no inline script, so a control whose
    handler were still inline would be refused when its event fires."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.refused: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.browser, name)

    def watch(self, page: Any) -> None:
        page.on("console", lambda m: self.refused.append(f"{page.url}: {m.text}")
                if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda e: self.refused.append(f"{page.url}: {e}"))

    def take(self, part: str) -> list[str]:
        """Takes off the list, as expected, what names ``part``."""
        taken = [r for r in self.refused if part in r]
        self.refused[:] = [r for r in self.refused if part not in r]
        return taken

    async def new_page(self, **options: Any) -> Any:
        page = await self.browser.new_page(**options)
        self.watch(page)
        return page

    async def new_context(self, **options: Any) -> Any:
        context = await self.browser.new_context(**options)
        context.on("page", self.watch)
        return context


@pytest.fixture
async def browser(shared_chromium: SharedChromium) -> AsyncIterator[Any]:
    """The worker's Chromium, in which each page or context a test opens is a fresh
    browser context of its own (cookies, storage), closed with the test."""
    from playwright.async_api import async_playwright

    pw = await async_playwright().start()
    try:
        b = await pw.chromium.connect_over_cdp(shared_chromium.usable())
        guarded = Guarded(b)
        try:
            yield guarded
        finally:
            # closes the contexts this test made and leaves the browser running
            await b.close()
        assert guarded.refused == [], guarded.refused
    finally:
        # a driver that does not end must not hold the suite; it ends with its pipes
        # once the loop closes
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pw.stop(), 5)


async def login(browser: Any, run: Running, user: str = "admin",
                password: str | None = None) -> Any:
    page = await browser.new_page()
    await page.goto(run.url + "/")
    assert "/login" in page.url
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", password or run.boot["admin_password"])
    await page.click("button[type=submit]")
    await page.wait_for_url(run.url + "/")
    return page


async def job_id_of(page: Any) -> int:
    await page.wait_for_url("**/api_execute/*")
    return int(page.url.rsplit("/", 1)[-1].split("?")[0])


async def quick_execute(page: Any, run: Running, script: str, ips: list[str]) -> int:
    await page.goto(run.url + "/execute")
    await page.fill("textarea[name=script]", script)
    await page.fill("textarea[name=ips]", "\n".join(ips))
    await page.click("#run")
    return await job_id_of(page)


async def test_login_logout_and_wrong_password(running: Running, browser: Any) -> None:
    page = await browser.new_page()
    await page.goto(running.url + "/login")
    await page.fill("input[name=username]", "admin")
    await page.fill("input[name=password]", "not the password")
    await page.click("button[type=submit]")
    await page.wait_for_url("**/login?error=1*")
    page = await login(browser, running)
    await page.click("#logout")
    await page.wait_for_url("**/login")
    await page.goto(running.url + "/jobs")
    assert "/login" in page.url
    # a change through the API with the cookie but without the CSRF token is refused
    page = await login(browser, running)
    answer = await page.evaluate("""() => fetch('/api/bk-job/prod/api/v3/operate_job_instance',
        {method: 'POST', body: '{}', headers: {'Content-Type': 'application/json'}})
        .then(r => r.json())""")
    assert answer["code"] != 0 and "CSRF" in answer["message"]


async def test_pages_load_without_a_missing_resource(running: Running, browser: Any) -> None:
    """Nothing a console page asks for is missing, the browser's icon included: a 404
    in the browser's console sends an operator looking for what broke."""
    missing: list[str] = []
    page = await browser.new_page()
    page.on("console", lambda m: missing.append(f"{page.url}: {m.text}")
            if "Failed to load resource" in m.text else None)
    await page.goto(running.url + "/login")
    await page.fill("input[name=username]", "admin")
    await page.fill("input[name=password]", running.boot["admin_password"])
    await page.click("button[type=submit]")
    await page.wait_for_url(running.url + "/")
    for path in ("/jobs", "/hosts"):
        await page.goto(running.url + path)
    await page.wait_for_timeout(500)
    assert missing == []


async def test_live_output_groups_and_screenshot(running: Running, browser: Any,
                                                 tmp_path: Path) -> None:
    await running.start_agents(IPS)
    page = await login(browser, running)
    go = running.data_dir / "go"
    # the scripts end only once the test has seen their first lines
    script = (f"echo start on $JOBFLEET_HOST_IP\nwhile [ ! -e {go} ]; do sleep 0.05; done\n"
              "echo done $RANDOM\n")
    job = await quick_execute(page, running, script, IPS)
    # output arrives while the job still runs
    await page.wait_for_function(
        "() => document.getElementById('log').textContent.includes('start')", timeout=60000)
    status = await running.wire.status(job)
    assert status["job_instance"]["status"] == 2, "the output came only after the job"
    go.touch()
    await page.wait_for_selector("#job-status[data-ended='1']", timeout=30000)
    await page.reload()
    await page.wait_for_selector(".ogroup")
    counts = sorted(int(x) for x in await page.locator(".ogroup .ocount").all_inner_texts())
    assert sum(counts) == 5
    # outputs that differ only in addresses and numbers share one group
    assert counts == [5], counts
    await page.fill("#log-search", "done")
    assert "done" in await page.inner_text("#log mark")
    await page.set_viewport_size({"width": 1280, "height": 800})
    shot = SCREENSHOT if RENEW_SCREENSHOT else tmp_path / SCREENSHOT.name
    shot.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG")


async def test_two_output_groups(running: Running, browser: Any) -> None:
    await running.start_agents(IPS)
    page = await login(browser, running)
    script = (f'if [ "$JOBFLEET_HOST_IP" = "{IPS[-1]}" ]; then echo "disk full on /data"\n'
              'else echo "ok on $JOBFLEET_HOST_IP, load $RANDOM.$$"; fi\n')
    job = await quick_execute(page, running, script, IPS)
    await running.wire.wait(job)
    await page.reload()
    await page.wait_for_selector(".ogroup")
    counts = [int(x) for x in await page.locator(".ogroup .ocount").all_inner_texts()]
    assert counts == [1, 4], counts  # the outlier first
    assert "disk full" in await page.locator(".ogroup pre").first.inner_text()
    # the IPs of a group, from the button that copies them
    ips = await page.evaluate(
        f"fetch('/console/jobs/{job}/steps/' + jf.job().step + '/ips?status=9')"
        ".then(r => r.text())")
    assert sorted(ips.split()) == sorted(IPS)


async def test_terminate_from_the_page(running: Running, browser: Any) -> None:
    await running.start_agents(IPS[:2])
    page = await login(browser, running)
    job = await quick_execute(page, running, "echo begun; sleep 60", IPS[:2])
    await page.wait_for_function(
        "() => document.getElementById('log').textContent.includes('begun')")
    await page.click("#terminate")
    final = await running.wire.wait(job, timeout=30)
    assert final["job_instance"]["status"] in (8, 11, 4), final
    await page.wait_for_selector("#job-status[data-ended='1']", timeout=60000)
    entries = await running.server.audit.recent(50)
    assert any(e["action"] == "operate_job_instance" or "terminate" in e["action"]
               for e in entries) or entries


async def test_user_without_the_business_sees_nothing(running: Running, browser: Any) -> None:
    await running.start_agents(IPS[:1])
    job = (await running.wire.run_script("echo secret-output", IPS[:1]))["job_instance_id"]
    await running.wire.wait(job)
    assert (await running.wire.post("/api/jobfleet/v1/users",
                                    {"username": "outsider"}))["result"]
    assert (await running.wire.post("/api/jobfleet/v1/users/outsider/password",
                                    {"password": "outsider-pass-1"}))["result"]
    page = await login(browser, running, "outsider", "outsider-pass-1")
    await page.goto(f"{running.url}/api_execute/{job}")
    assert await page.locator("#missing").count() == 1
    assert "secret-output" not in await page.content()
    await page.goto(f"{running.url}/jobs")
    assert await page.locator("tr.job").count() == 0
    stream = await page.evaluate(f"fetch('/api/jobfleet/v1/jobs/{job}/events').then(r => r.json())")
    assert stream["code"] != 0
    log = await page.evaluate(f"fetch('/console/jobs/{job}/steps/1/ips').then(r => r.status)")
    assert log == 404


async def test_run_plan_with_variables(running: Running, browser: Any) -> None:
    await running.start_agents(IPS[:2])
    plan_id, _ids = await make_plan(
        running,
        [script("say", "echo hello ${who}\n", hosts(*IPS[:2]))],
        [{"name": "who", "type": 1, "value": "nobody", "changeable": 1}],
        name="greet plan",
    )
    page = await login(browser, running)
    await page.goto(f"{running.url}/plans")
    await page.click(f"a[href='/api_plan/{plan_id}']")
    await page.fill("input[data-name=who]", "console")
    await page.click("#run")
    job = await job_id_of(page)
    final = await running.wire.wait(job)
    assert final["job_instance"]["status"] == 3, final
    await page.wait_for_function(
        "() => document.getElementById('log').textContent.includes('hello console')")


async def test_the_plan_page_shows_the_hosts_a_plan_runs_on(
        running: Running, browser: Any) -> None:
    """A host variable's box is empty (an address typed there replaces the plan's
    hosts), so the page says which hosts the plan runs on when it is left so."""
    await running.start_agents(IPS[:2])
    plan_id, _ids = await make_plan(
        running,
        [script("say", "echo on $JOBFLEET_HOST_IP\n", {"variable": "targets"})],
        [{"name": "targets", "type": 3, "server": hosts(*IPS[:2])}],
        name="hosts plan",
    )
    page = await login(browser, running)
    await page.goto(f"{running.url}/api_plan/{plan_id}")
    shown = await page.inner_text(".plan-hosts[data-name=targets]")
    assert shown == f"The plan's hosts: {IPS[0]}, {IPS[1]}", shown
    await page.click("#run")
    final = await running.wire.wait(await job_id_of(page))
    ran = sorted(h["ip"] for h in final["step_instance_list"][0]["step_ip_result_list"])
    assert ran == sorted(IPS[:2]), final


async def test_distribute_an_uploaded_file(running: Running, browser: Any,
                                           tmp_path: Path) -> None:
    await running.start_agents(IPS[:2])
    page = await login(browser, running)
    source = tmp_path / "payload.txt"
    source.write_text("payload from the console\n")
    target = tmp_path / "dest"
    await page.goto(running.url + "/files")
    await page.set_input_files("input[name=file]", str(source))
    await page.fill("input[name=file_target_path]", str(target))
    await page.fill("textarea[name=ips]", "\n".join(IPS[:2]))
    await page.click("#run")
    job = await job_id_of(page)
    final = await running.wire.wait(job)
    assert final["job_instance"]["status"] == 3, final
    assert (target / "payload.txt").read_text() == "payload from the console\n"
