"""/docs in a real browser: Swagger UI, served offline, renders the API's document."""

from __future__ import annotations

from typing import Any

from tests.integration.harness import Running
from tests.integration.test_console import CHROMIUM, browser, pytestmark

__all__ = ["CHROMIUM", "browser", "pytestmark"]


async def test_swagger_ui_renders_the_document(running: Running, browser: Any) -> None:
    page = await browser.new_page()
    await page.goto(running.url + "/docs")
    await page.wait_for_selector(".swagger-ui .info .title, .swagger-ui .errors-wrapper",
                                 timeout=20_000)
    body = await page.inner_text("body")
    assert "Unable to render this definition" not in body, body[:500]
    assert "jobfleet" in await page.inner_text(".swagger-ui .info .title")
    # the operations are listed, bk-job's among them
    await page.wait_for_selector(
        '[data-path="/api/c/compapi/v2/jobv3/fast_execute_script"]', state="attached")
