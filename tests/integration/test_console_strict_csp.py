"""The console under a script policy with no inline script, in a real browser against a
real server and a real agent: the policy allows scripts from the server's files only,
a script or handler injected into a page is refused, and the controls that the other
console tests do not use run under it (the ``browser`` fixture fails a test on any
refusal or script error, so every control a console test uses is checked the same way:
an inline handler is refused only when its event fires)."""

from __future__ import annotations

import contextlib
from typing import Any

from playwright.async_api import Error as PlaywrightError
from tests.integration.harness import Running
from tests.integration.test_console import CHROMIUM, browser, login, pytestmark

__all__ = ["CHROMIUM", "browser", "pytestmark"]

IPS = ["127.0.11.1"]


def directives(policy: str) -> dict[str, list[str]]:
    parts = (d.split() for d in policy.split(";") if d.strip())
    return {p[0]: p[1:] for p in parts}


async def test_script_src_allows_only_the_servers_files(running: Running, browser: Any) -> None:
    page = await login(browser, running)
    for path in ("/login", "/", "/execute"):
        answer = await page.goto(running.url + path)
        policy = directives(answer.headers["content-security-policy"])
        assert policy["script-src"] == ["'self'"], (path, policy)
        assert "'unsafe-inline'" not in policy["default-src"], policy


async def test_an_injected_script_or_handler_is_refused(running: Running, browser: Any) -> None:
    page = await login(browser, running)
    await page.goto(running.url + "/execute")
    with contextlib.suppress(PlaywrightError):
        await page.add_script_tag(content="window.injected = 'script'")
    await page.evaluate("""() => document.body.insertAdjacentHTML('beforeend',
        '<button id="evil" onclick="window.injected = \\'handler\\'">x</button>')""")
    await page.click("#evil")
    await page.wait_for_function("() => document.readyState === 'complete'")
    assert await page.evaluate("window.injected") is None
    refused = browser.take("Content Security Policy")
    assert any("inline script" in r for r in refused), refused
    assert any("inline event handler" in r for r in refused), refused
    # the page's own controls still work: the IP count follows the box
    await page.fill("textarea[name=ips]", "127.0.0.1\n127.0.0.2")
    await page.wait_for_function("() => document.getElementById('ipcount').textContent === '2 IP'")


async def test_controls_the_other_tests_leave_out(running: Running, browser: Any) -> None:
    """Per page, the control kinds no other console test fires: the business chooser,
    the Cancel buttons of the admin forms, a dangerous rule's Edit and Delete, and on
    the job page the step and job operations, the output group's host link and the
    Copy IPs buttons."""
    await running.start_agents(IPS)
    job = (await running.wire.run_script("echo hello", IPS))["job_instance_id"]
    await running.wire.wait(job)
    page = await login(browser, running)
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    # base.html: the business chooser keeps the choice in a cookie and reloads
    biz = await page.eval_on_selector("select[name=biz]", "el => el.value")
    async with page.expect_navigation():
        await page.select_option("select[name=biz]", biz)
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    assert cookies.get("jobfleet_biz") == biz, cookies
    # the admin forms' Cancel reloads the page
    for path in ("/accounts", "/dangerous-rules", "/notifications"):
        await page.goto(running.url + path)
        await page.evaluate("window.before = 1")
        async with page.expect_navigation():
            await page.click("button.cancel")
        assert await page.evaluate("window.before") is None, path
    # dangerous_rules.html: Edit fills the form, Delete asks first
    await page.goto(running.url + "/dangerous-rules")
    await page.fill("#rule-form input[name=expression]", "reboot-now")
    await page.click("#save")
    await page.wait_for_selector("tr.rule button.edit")
    await page.fill("#rule-form input[name=expression]", "")
    await page.click("tr.rule button.edit")
    assert await page.input_value("#rule-form input[name=expression]") == "reboot-now"

    async def accept(dialog: Any) -> None:
        await dialog.accept()
    page.once("dialog", accept)
    await page.click("tr.rule button.delete")
    await page.wait_for_function("() => !document.querySelector('tr.rule')")
    # job.html and output_groups.html
    await page.goto(f"{running.url}/api_execute/{job}")
    await page.wait_for_selector(".ogroup")
    await page.evaluate("document.getElementById('log-host').textContent = ''")
    await page.click(".ogroup a")
    assert await page.inner_text("#log-host") == IPS[0]
    assert page.url.endswith(f"/api_execute/{job}"), page.url  # the link's "#" is not followed
    await page.click(".ogroup button.copy-group")
    copied = page.locator("#copied")
    await copied.wait_for(state="attached")
    assert IPS[0] in await copied.input_value()
    await copied.wait_for(state="detached")
    await page.click("[data-on-click=copy-ips]")
    await copied.wait_for(state="attached")
    assert IPS[0] in await copied.input_value()
    for button in ("#terminate", "[data-on-click=step-op][data-code='2']"):
        await page.evaluate("document.getElementById('op-result').textContent = ''")
        await page.click(button)
        await page.wait_for_function("() => document.getElementById('op-result').textContent")
