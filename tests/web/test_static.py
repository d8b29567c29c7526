"""The console's static files: read off the event loop the agents share."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tests.api.test_app_routes import get_reading_off_the_loop


async def test_a_static_file_is_read_off_the_event_loop(tmp_path: Path) -> None:
    """Every console page asks for these: read on the loop, each request would stall the
    agents' connections for as long as the read takes."""
    answer = await get_reading_off_the_loop(
        tmp_path, "/static/console.js", "console.js")
    assert answer.status_code == 200
    shipped = Path(str(resources.files("jobfleet.web").joinpath("static", "console.js")))
    assert answer.content == shipped.read_bytes()
    assert answer.headers["content-type"].startswith("text/javascript")
    assert answer.headers["cache-control"] == "public, max-age=3600"
