"""The console's static files: read off the event loop the agents share."""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

import httpx
import pytest
from tests.api.test_app_routes import server


async def test_a_static_file_is_read_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every console page asks for these: read on the loop, each request would stall the
    agents' connections for as long as the read takes."""
    readers: list[int] = []
    read_bytes = Path.read_bytes

    def recorded(path: Path) -> bytes:
        if path.name == "console.js":
            readers.append(threading.get_ident())
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", recorded)
    node = server(tmp_path / "a")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app),
                                 base_url="http://127.0.0.1") as client:
        answer = await client.get("/static/console.js")
    assert answer.status_code == 200
    shipped = Path(str(resources.files("jobfleet.web").joinpath("static", "console.js")))
    assert answer.content == read_bytes(shipped)
    assert answer.headers["content-type"].startswith("text/javascript")
    assert answer.headers["cache-control"] == "public, max-age=3600"
    assert readers and threading.get_ident() not in readers, readers
