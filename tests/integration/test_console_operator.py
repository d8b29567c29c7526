"""The console as an operator uses it, in a real browser (Debian's chromium driven by
Playwright) against a real server and real agents: a job page left open follows the
job to its end and through a retry, and the page keeps the operator's place."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.harness import Running
from tests.integration.test_console import CHROMIUM, browser, login, pytestmark, quick_execute

__all__ = ["CHROMIUM", "browser", "pytestmark"]

IPS = [f"127.0.13.{i}" for i in range(1, 4)]
# the last host fails, the others succeed
SPLIT = (f'sleep 1; if [ "$JOBFLEET_HOST_IP" = "{IPS[-1]}" ]; then echo no; exit 3; fi; '
         'echo fine\n')


async def job_page(running: Running, browser: Any, script: str, ips: list[str], *,
                   wait: bool = True) -> tuple[Any, int, dict[str, Any]]:
    """The page of a job running ``script`` on ``ips`` (their agents started), opened once
    the job ended unless ``wait`` is False: the page, the job's id and its final status."""
    await running.start_agents(ips)
    job = (await running.wire.run_script(script, ips))["job_instance_id"]
    final = await running.wire.wait(job) if wait else {}
    page = await login(browser, running)
    await page.goto(f"{running.url}/api_execute/{job}")
    return page, job, final


async def test_the_open_job_page_shows_how_each_host_ended(
        running: Running, browser: Any) -> None:
    """Hosts by status and the host table follow the job live: when it ends they
    say what the API says, not the running state the page was opened with."""
    await running.start_agents(IPS)
    page = await login(browser, running)
    job = await quick_execute(page, running, SPLIT, IPS)
    await page.wait_for_selector("#job-status[data-ended='1']", timeout=60000)
    final = await running.wire.wait(job)
    assert final["job_instance"]["status"] == 4, final
    ok, failed = "#groups a.ok + .count", "#groups a.bad + .count"
    await page.wait_for_function(
        f"() => document.querySelector('{ok}')?.textContent === '2'"
        f" && document.querySelector('{failed}')?.textContent === '1'", timeout=60000)
    # the table is refreshed by a request of its own, after the counts on a loaded machine
    await page.wait_for_function(
        "ip => [...document.querySelectorAll('#hosts tr.host')].some("
        "r => r.innerText.startsWith(ip + '\\t') && !r.innerText.includes('Running'))",
        arg=IPS[-1], timeout=60000)
    rows = {r.split("\t")[0]: r.split("\t")[1:] for r in
            await page.locator("#hosts tr.host").all_inner_texts()}
    assert rows[IPS[-1]] == ["Script exit code non-zero", "3"], rows
    assert rows[IPS[0]] == ["Success", "0"], rows


async def test_the_open_job_page_shows_how_long_each_step_took(
        running: Running, browser: Any) -> None:
    """A step's duration on a page opened while it ran is its whole run once it has
    ended, not the moment the page was made."""
    await running.start_agents(IPS[:1])
    page = await login(browser, running)
    job = await quick_execute(page, running, "sleep 3; echo done\n", IPS[:1])
    await page.wait_for_selector("#job-status[data-ended='1']", timeout=15000)
    final = await running.wire.wait(job)
    step = final["step_instance_list"][0]
    took = (step["end_time"] - step["start_time"]) / 1000
    assert took >= 3, step
    await page.wait_for_function(
        f"() => document.querySelector('#steps tr.on td:nth-child(4)')?.textContent"
        f" === '{took:.1f} s'", timeout=5000)


async def test_a_retry_from_the_ended_page_is_followed(running: Running, browser: Any) -> None:
    """The stream of a job page ends with the job; retrying its failed hosts from the
    page runs the job again, and the page follows that run to its end."""
    await running.start_agents(IPS)
    page = await login(browser, running)
    mark = running.data_dir / "failed-once"
    script = (f'if [ "$JOBFLEET_HOST_IP" = "{IPS[-1]}" ] && [ ! -e {mark} ]; then '
              f'touch {mark}; echo first; exit 3; fi; echo again\n')
    job = await quick_execute(page, running, script, IPS)
    await page.wait_for_selector("#job-status[data-ended='1']", timeout=60000)
    assert await page.get_attribute("#job-status", "data-status") == "4"
    await page.click("text=Retry failed")
    await page.wait_for_selector("#job-status[data-status='3'][data-ended='1']", timeout=60000)
    assert (await running.wire.status(job))["job_instance"]["status"] == 3
    await page.wait_for_function(
        f"() => [...document.querySelectorAll('#hosts tr.host')].some("
        f"r => r.dataset.ip === '{IPS[-1]}' && r.cells[2].textContent === '0')", timeout=60000)

# what sticks out past the window's right edge
PAST_THE_EDGE = """() => [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > innerWidth).slice(0, 5)
    .map(e => e.tagName + '#' + e.id + '.' + e.className)"""


async def test_history_pages_keep_the_filter(running: Running, browser: Any) -> None:
    """The next page of a filtered job history is the next page of the same filter."""
    await running.start_agents(IPS[:1])
    await asyncio.gather(*(running.wire.run_script("true", IPS[:1], task_name="nightly")
                           for _ in range(101)))
    await running.wire.run_script("true", IPS[:1], task_name="other")
    page = await login(browser, running)
    await page.goto(f"{running.url}/jobs?name=nightly&launch_mode=2")
    assert "101 jobs" in await page.inner_text("main")
    await page.click("#next-page")
    assert "101 jobs" in await page.inner_text("main")
    assert await page.locator("tr.job").all_inner_texts() != []
    assert all("nightly" in r for r in await page.locator("tr.job").all_inner_texts())
    assert await page.input_value("input[name=name]") == "nightly"
    assert await page.input_value("select[name=launch_mode]") == "2"
    await page.click("#previous-page")
    assert "101 jobs" in await page.inner_text("main")
    assert await page.input_value("select[name=launch_mode]") == "2"


async def test_a_hosts_history_is_one_click_from_the_hosts_page(
        running: Running, browser: Any) -> None:
    """Each host on the hosts page links to the jobs that ran on it; the history's IP
    box keeps the filter, and text that is no address finds nothing, not an error."""
    await running.start_agents(IPS[:2])
    for ip, name in ((IPS[0], "on-first"), (IPS[1], "on-second")):
        await running.wire.wait((await running.wire.run_script(
            "true", [ip], task_name=name))["job_instance_id"])
    await running.wire.wait((await running.wire.run_script(
        "true", IPS[:2], task_name="on-both"))["job_instance_id"])
    page = await login(browser, running)
    await page.goto(f"{running.url}/hosts")
    await page.click(f"tr.hostrow[data-ip='{IPS[1]}'] a.history")
    await page.wait_for_url("**/jobs?ip=*")
    names = [r.split("\t")[1] for r in await page.locator("tr.job").all_inner_texts()]
    assert names == ["on-both", "on-second"], names
    assert await page.input_value("input[name=ip]") == IPS[1]
    await page.fill("input[name=ip]", f" {IPS[0]} ")
    await page.click("form.filters button")
    names = [r.split("\t")[1] for r in await page.locator("tr.job").all_inner_texts()]
    assert names == ["on-both", "on-first"], names
    for wrong in ("not-an-ip", "no%00where", "1" * 500):
        await page.goto(f"{running.url}/jobs?ip={wrong}")
        assert "0 jobs" in await page.inner_text("main"), wrong


async def test_a_host_whose_agent_is_up_was_last_seen_now(
        running: Running, browser: Any) -> None:
    """The hosts page's "last seen" of a host whose agent is connected is now, not the
    moment it connected (which the cell's title gives)."""
    await running.start_agents(IPS[:1])
    page = await login(browser, running)
    await page.goto(f"{running.url}/hosts")
    cell = page.locator(f"tr.hostrow[data-ip='{IPS[0]}'] td.seen")
    assert await cell.inner_text() == "now"
    assert (await cell.locator("span").get_attribute("title") or "").startswith("Connected 20")


async def test_host_pages_of_a_job_keep_the_ip_filter(running: Running, browser: Any) -> None:
    """The next page of a job's hosts filtered by IP holds the same filter."""
    many = [f"127.0.14.{i}" for i in range(1, 121)] + [f"127.0.15.{i}" for i in range(1, 11)]
    for ip in many:  # known hosts with no agent: each ends at once as agent-abnormal
        await running.server.inventory.add(2, ip)
    job = (await running.wire.run_script("true", many))["job_instance_id"]
    await running.wire.wait(job)
    page = await login(browser, running)
    await page.goto(f"{running.url}/api_execute/{job}?ip=127.0.14.")
    assert "(120)" in await page.inner_text("#hosts-title")
    await page.click("#next-page")
    assert "(120)" in await page.inner_text("#hosts-title")
    shown = await page.locator("#hosts tr.host").evaluate_all("rs => rs.map(r => r.dataset.ip)")
    assert len(shown) == 20 and all(ip.startswith("127.0.14.") for ip in shown), shown
    assert await page.input_value("input[name=ip]") == "127.0.14."


async def test_a_hosts_log_is_reached_with_the_keyboard(running: Running, browser: Any) -> None:
    """Without a mouse, Tab reaches each host of the job and Enter shows its log."""
    page, _job, _final = await job_page(running, browser, "echo from $JOBFLEET_HOST_IP",
                                        IPS[:2])
    await page.wait_for_selector("#job-status[data-ended='1']")
    await page.focus("#hosts-title + form input[name=ip]")
    for _ in range(4):
        await page.keyboard.press("Tab")
        if await page.evaluate(f"document.activeElement.closest('tr.host')?.dataset.ip"
                               f" === '{IPS[1]}'"):
            break
    else:
        raise AssertionError(await page.evaluate("document.activeElement.outerHTML"))
    await page.keyboard.press("Enter")
    await page.wait_for_function(
        f"() => document.getElementById('log').textContent === 'from {IPS[1]}\\n'")
    assert await page.inner_text("#log-host") == IPS[1]


async def test_a_narrow_window_shows_the_whole_page(running: Running, browser: Any) -> None:
    """On a phone-wide window the menu wraps: log out and the business are on screen,
    and the job page's hosts and log sit one above the other, not past the edge."""
    await running.start_agents(IPS[:1])
    job = (await running.wire.run_script("echo narrow", IPS[:1]))["job_instance_id"]
    await running.wire.wait(job)
    page = await login(browser, running)
    await page.set_viewport_size({"width": 400, "height": 800})
    for path in ("/", "/jobs", "/hosts", "/execute", f"/api_execute/{job}"):
        await page.goto(running.url + path)
        width = await page.evaluate("innerWidth")
        assert await page.evaluate("document.documentElement.scrollWidth") <= width, (
            path, await page.evaluate(PAST_THE_EDGE))
        for control in ("#logout", "nav select"):
            box = await page.locator(control).bounding_box()
            assert box is not None and box["x"] + box["width"] <= width, (path, control, box)
    log = await page.locator("#log").bounding_box()
    assert log is not None and log["width"] >= 300, log


async def test_ten_megabytes_of_output_are_shown_at_once(
        running: Running, browser: Any) -> None:
    """A host that printed 10 MB: its log is on the page in the time the stream takes,
    not the minute a page redrawing the whole log for every event took. The stream took
    10 to 14 s at a load of 20: the wait for the log's end has room for that, and its
    bound still tells it from that minute, which a loaded machine stretches too."""
    line = "a line of a big output, padded to about a hundred bytes " + "." * 40
    page, _job, _final = await job_page(
        running, browser, f"yes '{line}' | head -c 10000000; echo; echo THE-END", IPS[:1])
    await page.wait_for_function(
        "() => document.getElementById('log').textContent.endsWith('THE-END\\n')",
        timeout=45000)
    assert await page.evaluate("document.getElementById('log').textContent.length") > 10**7
    await page.fill("#log-search", "THE-END")
    assert await page.inner_text("#log mark") == "THE-END"


async def test_terminal_escapes_are_not_shown_as_garbage(running: Running, browser: Any) -> None:
    """Colours and a window title a script sets for a terminal are left out of the log
    pane, which shows the text; the API's log keeps every byte."""
    page, job, final = await job_page(
        running, browser,
        r"printf '\033[1;31mred\033[0m plain\n\033]0;a title\007after \033[2Kend\n'", IPS[:1])
    await page.wait_for_function(
        "() => document.getElementById('log').textContent.includes('end')")
    assert await page.evaluate("document.getElementById('log').textContent") == (
        "red plain\nafter end\n")
    await page.wait_for_selector(".ogroup pre")
    assert (await page.inner_text(".ogroup pre")).strip() == "red plain\nafter end"
    step = final["step_instance_list"][0]["step_instance_id"]
    assert "\x1b[1;31m" in (await running.wire.logs(job, step, IPS[:1]))[IPS[0]]


async def test_reading_back_in_a_live_log_keeps_the_place(
        running: Running, browser: Any) -> None:
    """Scrolled up to read earlier output of a running host, the operator stays there
    as more arrives (the log follows new output only from its end)."""
    page, job, _final = await job_page(
        running, browser,
        "for i in $(seq 1 100); do echo tick $i; sleep 0.05; done; "
        f"while [ ! -e {running.data_dir / 'go'} ]; do sleep 0.05; done; echo last",
        IPS[:1], wait=False)
    await page.wait_for_function(
        "() => document.getElementById('log').textContent.includes('tick 100')",
        timeout=60000)
    await page.evaluate("document.getElementById('log').scrollTop = 0")
    # the last line comes only once the operator has scrolled up
    (running.data_dir / "go").touch()
    await page.wait_for_function(
        "() => document.getElementById('log').textContent.includes('last')", timeout=60000)
    await page.wait_for_timeout(300)
    assert await page.evaluate("document.getElementById('log').scrollTop") == 0
    await running.wire.wait(job)


async def test_a_page_left_open_after_logout_says_to_log_in(
        running: Running, browser: Any) -> None:
    """Logged out in another tab (or the session's time is up, when the browser drops
    its cookie), a form still open says the session ended, not that an app code is
    missing."""
    await running.start_agents(IPS[:1])
    tabs = await browser.new_context()
    page = await login(tabs, running)
    await page.goto(f"{running.url}/execute")
    await page.fill("textarea[name=ips]", IPS[0])
    other = await tabs.new_page()
    await other.goto(f"{running.url}/jobs")
    await other.click("#logout")
    await other.wait_for_url("**/login")
    await page.click("#run")
    await page.wait_for_function("() => document.getElementById('result').textContent")
    assert "log in again" in await page.inner_text("#result")


async def test_back_to_a_job_page_keeps_the_log_search(running: Running, browser: Any) -> None:
    """Back on a job page, the search box the browser restored filters the log as it
    says, rather than showing a search term over an unfiltered log."""
    page, _job, _final = await job_page(running, browser, "echo alpha; echo beta; echo gamma",
                                        IPS[:1])
    await page.wait_for_function("() => document.getElementById('log').textContent")
    await page.fill("#log-search", "beta")
    assert await page.inner_text("#log") == "beta"
    await page.goto(f"{running.url}/jobs")
    await page.go_back()
    await page.wait_for_function("() => document.getElementById('log').textContent")
    await page.wait_for_timeout(300)
    assert await page.input_value("#log-search") == "beta"
    assert await page.inner_text("#log") == "beta"


async def test_a_live_view_that_stops_says_so(running: Running, browser: Any) -> None:
    """When the session of a page watching a running job ends, the page stops being
    live and says so, instead of showing the job running forever."""
    await running.start_agents(IPS[:1])
    job = (await running.wire.run_script(
        "for i in $(seq 1 1000); do echo tick $i; sleep 0.2; done", IPS[:1]))["job_instance_id"]
    tabs = await browser.new_context()
    page = await login(tabs, running)
    await page.goto(f"{running.url}/api_execute/{job}")
    await page.wait_for_function(
        "() => document.getElementById('log').textContent.includes('tick 2')")
    other = await tabs.new_page()
    await other.goto(f"{running.url}/jobs")
    await other.click("#logout")
    await page.wait_for_selector("#job-status[data-stalled='1']", timeout=60000)
    assert "log in again" in await page.inner_text("#live-note")
    await running.wire.v3("operate_job_instance", {"bk_scope_type": "biz", "bk_scope_id": "2",
                                                   "job_instance_id": job, "operation_code": 1})
