"""The quick execute form's own checks, in a real browser against a real server."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from tests.integration.harness import Running
from tests.integration.test_console import CHROMIUM, browser, login, pytestmark

from jobfleet.store.tables import job_instances

__all__ = ["CHROMIUM", "browser", "pytestmark"]


async def test_an_empty_script_is_refused_in_the_forms_words(
    running: Running, browser: Any
) -> None:
    """Not the API's "Missing parameter [content]": the form has no field of that name."""
    page = await login(browser, running)
    for lang, said in (("en", "The script is empty: give the commands to run"),
                       ("zh", "脚本为空:请填写要执行的命令")):
        await page.context.add_cookies([{"name": "jobfleet_lang", "value": lang,
                                         "url": running.url}])
        await page.goto(running.url + "/execute")
        await page.fill("textarea[name=script]", "  \n\t\n")
        await page.fill("textarea[name=ips]", "127.0.0.1")
        await page.click("#run")
        await page.wait_for_function(
            "said => document.getElementById('result').textContent === said", arg=said)
        assert page.url.endswith("/execute")
    async with running.server.db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(job_instances))).scalar() == 0
