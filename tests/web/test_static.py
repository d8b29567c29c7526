"""The console's static files: read off the event loop the agents share."""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

import pytest
from tests.api.test_app_routes import get_recording_reads


async def test_a_static_file_is_read_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every console page asks for these: read on the loop, each request would stall the
    agents' connections for as long as the read takes."""
    answer, readers = await get_recording_reads(
        tmp_path, monkeypatch, "/static/console.js", "console.js")
    # before this test's own reads below, which the patch records too
    assert readers and threading.get_ident() not in readers, readers
    assert answer.status_code == 200
    shipped = Path(str(resources.files("jobfleet.web").joinpath("static", "console.js")))
    assert answer.content == shipped.read_bytes()
    assert answer.headers["content-type"].startswith("text/javascript")
    assert answer.headers["cache-control"] == "public, max-age=3600"
