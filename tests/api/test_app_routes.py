"""The API's routes are built once per process and shared by every app made in it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.harness import TEST_ENGINE

from jobfleet.api.app import api_routes
from jobfleet.server import EngineSettings, Server, ServerSettings


async def get_reading_off_the_loop(tmp_path: Path, url: str, name: str) -> httpx.Response:
    """``url`` from a fresh server's app, checked to have read the file called ``name``
    on a thread other than the event loop's: a read on the loop stalls every agent's
    connection for as long as it takes."""
    readers: list[int] = []
    read_bytes = Path.read_bytes

    def recorded(path: Path) -> bytes:
        if path.name == name:
            readers.append(threading.get_ident())
        return read_bytes(path)

    node = server(tmp_path / "a")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "read_bytes", recorded)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app),
                                     base_url="http://127.0.0.1") as client:
            answer = await client.get(url)
    assert readers and threading.get_ident() not in readers, readers
    return answer


def server(data_dir: Path) -> Server:
    return Server(ServerSettings(data_dir=data_dir, port=8080,
                                 database_url=f"sqlite+aiosqlite:///{data_dir}.db",
                                 engine=EngineSettings(**TEST_ENGINE), log_level="warning"))


def test_the_apps_of_a_process_share_the_api_routes(tmp_path: Path) -> None:
    first, second = server(tmp_path / "a"), server(tmp_path / "b")
    shared = api_routes()
    assert len(shared) > 500
    for node in (first, second):
        routes = node.app.router.routes
        # the very objects, in order, not routes built again
        at = next(i for i, route in enumerate(routes) if route is shared[0])
        assert all(a is b for a, b in zip(routes[at:at + len(shared)], shared, strict=True))
    # each app has the routes of its own: health and the console
    assert first.app.router.routes[-1] is not second.app.router.routes[-1]


async def test_a_shared_route_answers_with_its_own_apps_services(tmp_path: Path) -> None:
    """A handler finds the services of the app the request came to, not of the app the
    routes were first built for."""
    for node in (server(tmp_path / "a"), server(tmp_path / "b")):
        assert await asked_through(node) == [node]


async def asked_through(node: Server) -> list[Server]:
    """The servers whose authenticator a bk-job call to ``node``'s app reached."""
    seen: list[Server] = []
    original = node.services.auth.authenticate

    async def authenticate(*args: Any, **kw: Any) -> Any:
        seen.append(node)
        return await original(*args, **kw)
    node.services.auth.authenticate = authenticate  # type: ignore[method-assign]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app),
                                 base_url="http://127.0.0.1") as client:
        answer = await client.post("/api/bk-job/prod/api/v3/get_job_instance_status",
                                   json={"bk_biz_id": 2, "job_instance_id": 1})
    assert answer.json()["result"] is False
    return seen
