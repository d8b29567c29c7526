"""Callbacks and webhooks never reach loopback (or link-local, or the server itself) unless
the operator allows the range; the allowed address is the one connected to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.integration.harness import Running, eventually, run_server

from jobfleet.store.tables import outbox

ADMIN = "/api/jobfleet/v1"


class Listener:
    """A loopback TCP listener that counts connections and answers any request with 200."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            self.requests.append(head + body)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    found = Listener()
    await found.start()
    yield found
    assert found.server is not None
    found.server.close()
    await found.server.wait_closed()


async def outbox_rows(run: Running) -> list[Any]:
    async with run.server.db.connect() as conn:
        return list(await conn.execute(select(outbox).order_by(outbox.c.id)))


async def job_with_callback(run: Running, url: str, ip: str = "127.0.0.40") -> int:
    """A job with no live agent ends at once, and its end fires the callback."""
    await run.server.inventory.add(2, ip)
    sub = await run.wire.run_script("echo x", [ip], callback_url=url)
    await run.wire.wait(sub["job_instance_id"])
    return int(sub["job_instance_id"])


async def add_webhook(run: Running, url: str) -> None:
    resp = await run.wire.http.post(
        f"{ADMIN}/businesses/2/notify-configs",
        json={"channel": "webhook", "target": url, "statuses": [4], "secret": "k" * 16},
        headers=run.wire.headers(),
    )
    assert resp.json()["result"], resp.json()


async def test_loopback_callbacks_and_webhooks_are_refused_without_a_connection(
    running: Running, listener: Listener
) -> None:
    port = listener.port
    await add_webhook(running, f"http://localhost:{port}/hook")
    urls = [
        f"http://127.0.0.1:{port}/hook",
        # a name is judged by what it resolves to
        f"http://localhost:{port}/hook",
        f"http://[::ffff:127.0.0.1]:{port}/hook",
        f"http://127.1:{port}/hook",
        f"http://2130706433:{port}/hook",
        f"http://[::1]:{port}/hook",
    ]
    for n, url in enumerate(urls):
        await job_with_callback(running, url, ip=f"127.0.0.{40 + n}")

    async def all_failed() -> list[Any] | None:
        rows = await outbox_rows(running)
        done = len(rows) == 2 * len(urls) and all(r.state == "failed" for r in rows)
        return rows if done else None

    rows = await eventually(all_failed, timeout=20)
    for row in rows:
        # refused once and for all: not retried, and the reason is kept
        assert row.attempts == 1, row
        assert row.last_error.startswith("refused: "), row.last_error
        assert "loopback" in row.last_error and "--callback-allow" in row.last_error
    await asyncio.sleep(0.5)
    assert listener.connections == 0


async def test_an_allowed_range_is_reached_at_the_checked_address(
    tmp_path: Path, database_url: str, listener: Listener
) -> None:
    async with run_server(
        tmp_path, database_url, server={"callback_allow": ["127.0.0.0/8"]}
    ) as run:
        url = f"http://localhost:{listener.port}/hook?x=1"
        job_id = await job_with_callback(run, url)
        await eventually(lambda: asyncio.sleep(0, listener.requests), timeout=20)
        request = listener.requests[0]
        # the connection went to the checked IPv4 address (::1 is not allowed), and the
        # request still names the host the caller gave
        assert request.startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
        assert f"\r\nhost: localhost:{listener.port}\r\n".encode() in request.lower()
        assert f'"job_instance_id":{job_id}'.encode() in request
        # the answer is recorded after the receiver has the request: wait for it

        async def recorded() -> Any:
            (row,) = await outbox_rows(run)
            return row if row.state != "pending" else None

        row = await eventually(recorded)
        assert (row.state, row.attempts) == ("done", 1)
        # the allowance is exactly the range given: ::1 stays refused
        await job_with_callback(run, f"http://[::1]:{listener.port}/hook", ip="127.0.0.41")

        async def second_failed() -> bool:
            rows = await outbox_rows(run)
            return len(rows) == 2 and rows[1].state == "failed"

        await eventually(second_failed)
        assert len(listener.requests) == 1
