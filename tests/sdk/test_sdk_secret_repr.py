"""The app secret travels in ``X-Bkapi-Authorization``, a header httpx's repr does not
hide (only ``Authorization``): no repr, log or error of the SDK's objects may show it."""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tests.sdk.hostile import hostile_server, whole

from jobfleet.sdk import AsyncJobClient, JobApiError, JobClient

SECRET = "app-Secret-Never-Shown"
REFUSED = b'{"result": false, "code": 1241001, "message": "no", "data": null}'


class Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        Recorder.seen.append(self.headers.get("X-Bkapi-Authorization", ""))
        body = json.dumps({"result": True, "code": 0, "data": {"finished": True}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def shown(client: JobClient | AsyncJobClient) -> str:
    """The repr of the client, of what it holds and of what its HTTP client holds."""
    parts = [repr(client), *(repr(v) for v in vars(client).values())]
    parts += [repr(v) for v in vars(client._http).values()]
    return "\n".join(parts)


def test_the_secret_is_sent_but_never_shown(
    recorder: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with JobClient(recorder, "app", SECRET, "alice", biz=2) as client:
        client.get_job_instance_status(1)
        assert SECRET not in shown(client)
        assert SECRET not in repr(client._http.headers)
    assert json.loads(Recorder.seen[-1]) == {
        "bk_app_code": "app", "bk_app_secret": SECRET, "bk_username": "alice"}
    with (
        hostile_server(whole("200 OK", REFUSED)) as server,
        JobClient(server.url, "app", SECRET, "alice", biz=2) as client,
        pytest.raises(JobApiError) as caught,
    ):
        client.get_job_instance_status(1)
    told = "".join(traceback.format_exception(caught.value))
    assert SECRET not in told + repr(caught.value) + repr(vars(caught.value))
    assert SECRET not in caplog.text


async def test_async_the_secret_is_never_shown(recorder: str) -> None:
    async with AsyncJobClient(recorder, "app", SECRET, "alice", biz=2) as client:
        await client.get_job_instance_status(1)
        assert SECRET not in shown(client)
        assert SECRET not in repr(client._http.headers)
    assert SECRET in Recorder.seen[-1]
