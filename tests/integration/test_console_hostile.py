"""The console against hostile text and hostile sites, in a real browser (Debian's
chromium driven by Playwright) against a real server and a real agent: names and
output full of markup are shown as text, the pages carry a Content-Security-Policy
the console works under, and no other site can frame a page to trick a click."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlparse

import pytest
from tests.integration.harness import Running
from tests.integration.test_console import CHROMIUM, browser, job_id_of, login, needs_chromium
from tests.integration.test_plans import hosts, make_plan, script

from jobfleet.api import live

__all__ = ["CHROMIUM", "browser", "needs_chromium"]
pytestmark = needs_chromium

IPS = ["127.0.10.1"]
HOSTILE = '<img src=x onerror="window.pwned=1"></script><script>window.pwned=2</script>'


def csp_errors(page: Any) -> list[str]:
    """What the page's console says about the Content-Security-Policy, from now on."""
    said: list[str] = []
    page.on("console", lambda m: said.append(m.text) if "Content Security Policy" in m.text
            else None)
    return said


async def test_hostile_names_and_output_are_text(running: Running, browser: Any) -> None:
    await running.start_agents(IPS)
    job = (await running.wire.run_script(f"printf '%s\\n' '{HOSTILE}'", IPS,
                                         task_name=HOSTILE))["job_instance_id"]
    await running.wire.wait(job)
    page = await login(browser, running)
    refused = csp_errors(page)
    await page.goto(f"{running.url}/jobs?name={HOSTILE}")
    assert HOSTILE in await page.locator("tr.job").first.inner_text()
    await page.goto(f"{running.url}/jobs?operator={HOSTILE}&days={HOSTILE}")
    await page.goto(f"{running.url}/api_execute/{job}?ip={HOSTILE}")
    assert HOSTILE in await page.inner_text("h2")
    await page.goto(f"{running.url}/api_execute/{job}")
    await page.wait_for_function(
        "() => document.getElementById('log').textContent.includes('window.pwned=2')")
    await page.wait_for_selector(".ogroup")
    assert HOSTILE in await page.locator(".ogroup pre").first.inner_text()
    await page.goto(f"{running.url}/login?next={HOSTILE}&error={HOSTILE}")
    assert await page.evaluate("window.pwned") is None
    # every page of the menu works under the policy
    for path in ("/", "/execute", "/files", "/scripts", "/public-scripts", "/templates",
                 "/plans", "/crons", "/hosts", "/accounts", "/dangerous-rules",
                 "/notifications", "/audit"):
        await page.goto(running.url + path)
        assert await page.locator("nav").count() == 1, path
    assert refused == [], refused


async def test_pages_carry_the_security_headers(running: Running) -> None:
    page = await running.wire.http.get("/login")
    headers = page.headers
    policy = headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy, dict(headers)
    assert "object-src 'none'" in policy and "base-uri 'none'" in policy, policy
    assert headers.get("x-frame-options") == "DENY"
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("referrer-policy") == "same-origin"
    script = await running.wire.http.get("/static/console.js")
    assert script.headers.get("x-content-type-options") == "nosniff"


async def test_another_site_cannot_frame_a_page(running: Running, browser: Any) -> None:
    """A page of the same site on another port (the session cookie is SameSite, so it
    goes with the frame) puts the job page in a frame to steer a click on Terminate."""
    await running.start_agents(IPS)
    job = (await running.wire.run_script("sleep 60", IPS))["job_instance_id"]
    page = await login(browser, running)
    bait = (f'<iframe id="bait" src="{running.url}/api_execute/{job}" '
            'width="800" height="600"></iframe>').encode()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(bait), bait))
        await writer.drain()
        writer.close()

    host = urlparse(running.url).hostname
    server = await asyncio.start_server(serve, host, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        await page.goto(f"http://{host}:{port}/")
        await page.wait_for_timeout(1500)
    framed = [f for f in page.frames if f != page.main_frame]
    assert framed, "the frame was not made"
    for frame in framed:
        assert await frame.locator("#terminate").count() == 0, frame.url
    browser.take("frame-ancestors")  # the refused frame is what this test wants
    await running.wire.v3("operate_job_instance", {"bk_scope_type": "biz", "bk_scope_id": "2",
                                                   "job_instance_id": job, "operation_code": 1})


async def test_plan_run_keeps_the_secret_and_hosts_it_was_not_given(
        running: Running, browser: Any) -> None:
    """The plan page shows a password variable as an empty password box and never its
    value; run without typing one, the plan runs with its own password and hosts."""
    await running.start_agents(IPS)
    plan_id, _ids = await make_plan(
        running,
        [script("use", 'echo "pw=$secret"\n', {"variable": "targets"})],
        [{"name": "targets", "type": 3, "server": hosts(*IPS)},
         {"name": "secret", "type": 4, "value": "s3cr3t-value"}],
        name="secret plan",
    )
    page = await login(browser, running)
    await page.goto(f"{running.url}/api_plan/{plan_id}")
    assert "s3cr3t-value" not in await page.content()
    await page.click("#run")
    job = await job_id_of(page)
    final = await running.wire.wait(job)
    assert final["job_instance"]["status"] == 3, final
    step = final["step_instance_list"][0]["step_instance_id"]
    assert (await running.wire.logs(job, step, IPS)) == {IPS[0]: "pw=s3cr3t-value\n"}


# One backend: the store's part, a closed session no longer found, is checked on every
# backend by tests/store/test_people.py; what this adds (the open stream looks again
# every RECHECK seconds and ends; an app's stream goes on) lies above the store and
# takes several rechecks of waiting each run
@pytest.mark.one_backend
async def test_logging_out_ends_the_live_output(running: Running, browser: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A job page left open in one tab stops receiving output once the session is
    closed from another (or ends): the stream was opened with it."""
    # the server runs in this process: a recheck every second, not every 5 s, so that
    # the waits below (a few rechecks each) are seconds rather than tens of them
    monkeypatch.setattr(live, "RECHECK", 1.0)
    await running.start_agents(IPS)
    job = (await running.wire.run_script(
        "for i in $(seq 1 200); do echo tick $i; sleep 0.2; done", IPS))["job_instance_id"]
    watching = await login(browser, running)
    await watching.goto(f"{running.url}/api_execute/{job}")
    await watching.wait_for_function(
        "() => document.getElementById('log').textContent.includes('tick 3')")
    # the session closes (as a logout from another tab does) while the page stays open
    closed = await watching.evaluate("""() => fetch('/logout', {method: 'POST',
        headers: {'Content-Type': 'application/x-www-form-urlencoded'},
        body: 'csrf=' + encodeURIComponent(jf.meta('csrf-token'))}).then(r => r.url)""")
    assert closed.endswith("/login"), closed
    assert (await watching.context.request.get(running.url + "/jobs")).url.endswith(
        "/login?next=%2Fjobs")
    length = "document.getElementById('log').textContent.length"
    await watching.wait_for_timeout((live.RECHECK + 1.5) * 1000)
    before = await watching.evaluate(length)
    await watching.wait_for_timeout(2000)
    assert await watching.evaluate(length) == before, "output still arrives after logout"
    # an app's stream, whose credential stands, goes on past the checks
    wire = running.wire
    async with wire.http.stream("GET", f"/api/jobfleet/v1/jobs/{job}/events?hosts=all",
                                headers=wire.headers()) as stream:
        started = asyncio.get_running_loop().time()
        ticks = 0
        async for line in stream.aiter_lines():
            ticks += line.startswith("event: output")
            if asyncio.get_running_loop().time() - started > live.RECHECK * 2 + 1:
                break
        assert ticks > 0 and asyncio.get_running_loop().time() - started > live.RECHECK * 2
    await running.wire.v3("operate_job_instance", {"bk_scope_type": "biz", "bk_scope_id": "2",
                                                   "job_instance_id": job, "operation_code": 1})
