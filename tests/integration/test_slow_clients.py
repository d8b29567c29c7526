"""Slow and idle clients cannot starve the server: header, body and idle timeouts, a cap on
connections still sending headers and on API requests in flight, with room kept for agents
and the health check."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.integration.harness import Running, eventually, run_server

from jobfleet.agent.channel import pinned_context

# one backend: the timeouts and caps hold connections before their requests reach the
# store, whichever database it keeps
pytestmark = pytest.mark.one_backend

SLOW = 2000


@contextlib.contextmanager
def open_files(wanted: int) -> Iterator[None]:
    """Both ends of every test connection live in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted)) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closes the connection within ``within`` seconds: a wait for
    a close that comes after a timeout of a second or two, long enough for a loaded
    machine, returning as soon as it happens."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def healthy(run: Running, timeout: float = 60.0) -> float:
    """Seconds a fresh client needs for /healthz and an authenticated API call."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=run.url, timeout=timeout, trust_env=False) as http:
        resp = await http.get("/healthz")
        assert resp.status_code == 200 and resp.json()["status"] == "ok"
        resp = await http.get("/api/jobfleet/v1/whoami", headers=run.wire.headers())
        assert resp.json()["result"], resp.json()
    return time.monotonic() - started


async def test_slowloris_leaves_health_api_and_agent_reconnects_working(
    tmp_path: Path, database_url: str
) -> None:
    header_timeout = 4.0
    with open_files(2 * SLOW + 1024):
        async with run_server(
            tmp_path, database_url, server={"header_timeout": header_timeout}
        ) as run:
            await run.start_agents(["127.0.0.2"])
            # the same steps without the flood, in the same run: on a loaded CI machine
            # they alone have taken seconds, so the bounds below are counted from them
            quiet = await healthy(run)
            await run.stop_agent("127.0.0.2")
            started = time.monotonic()
            await run.start_agents(["127.0.0.2"])
            quiet_reconnect = time.monotonic() - started
            port = run.server.settings.port
            slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
            # a valid request that never ends: a byte a second, after a head start or not
            script = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
            sent: list[int] = []

            async def open_slow(n: int) -> None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                head = 40 if n % 2 else 0
                writer.write(script[:head])
                slow.append((reader, writer))
                sent.append(head)

            for first in range(0, SLOW, 250):
                await asyncio.gather(*(open_slow(n) for n in range(first, first + 250)))
            opened = time.monotonic()
            stop = asyncio.Event()

            async def drip() -> None:
                # one more header byte a second on every connection that is still open
                while not stop.is_set():
                    for i, (_reader, writer) in enumerate(slow):
                        if not writer.is_closing():
                            with contextlib.suppress(ConnectionError):
                                writer.write(script[sent[i] : sent[i] + 1])
                                sent[i] += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)

            dripping = asyncio.create_task(drip())
            try:
                during = await healthy(run)
                assert during < 5.0 + 5 * quiet, (during, quiet)
                # an agent that loses its connection comes back while the flood lasts
                await run.stop_agent("127.0.0.2")
                started = time.monotonic()
                await run.start_agents(["127.0.0.2"])
                reconnect = time.monotonic() - started
                assert reconnect < 10.0 + 5 * quiet_reconnect, (reconnect, quiet_reconnect)
                # every slow connection is closed once its header time is up
                closed = await asyncio.gather(
                    *(closed_by_server(reader, header_timeout + 15) for reader, _w in slow)
                )
                assert sum(closed) == SLOW, f"{SLOW - sum(closed)} slow connections still open"
                all_closed = time.monotonic() - opened
                assert all_closed < header_timeout + 15
                assert run.server.connection_limits.closed_slow >= SLOW
                after = await healthy(run)
                assert after < 5.0 + 5 * quiet, (after, quiet)
                print(f"slowloris: health+API {during:.2f} s, agent reconnect {reconnect:.2f} s, "
                      f"all {SLOW} closed {all_closed:.1f} s after opening")
            finally:
                stop.set()
                await dripping
                for _reader, writer in slow:
                    writer.close()


async def test_stalled_bodies_and_idle_connections_are_closed(
    tmp_path: Path, database_url: str
) -> None:
    settings = {"header_timeout": 1.5, "body_timeout": 1.5, "idle_timeout": 1.0}
    async with run_server(tmp_path, database_url, server=settings) as run:
        port = run.server.settings.port
        quiet = await healthy(run)
        # a body that stops half way
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api/bk-job/prod/api/v3/get_account_list HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"bk_")
        # well past the configured timeouts yet below the defaults (idle 15 s, body 30 s), so
        # these pass only if the test's settings reach the server
        assert await closed_by_server(reader, 10.0)
        # an idle kept-alive connection
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in await reader.readuntil(b"\r\n\r\n")
        assert await closed_by_server(reader, 10.0)
        # a kept-alive connection that trickles bytes after its answer (which resets uvicorn's
        # idle timer) is held to the header time
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in await reader.readuntil(b"\r\n\r\n")
        await reader.read(65536)

        async def trickle() -> None:
            for _ in range(20):
                await asyncio.sleep(0.5)
                if writer.is_closing():
                    return
                with contextlib.suppress(ConnectionError):
                    writer.write(b"\r\n" if _ % 2 else b"G")

        trickling = asyncio.create_task(trickle())
        assert await closed_by_server(reader, 10.0)
        trickling.cancel()
        await asyncio.gather(trickling, return_exceptions=True)
        after = await healthy(run)
        assert after < 5.0 + 5 * quiet, (after, quiet)


async def test_api_requests_in_flight_are_capped_but_agents_and_health_get_in(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"max_api_requests": 2, "body_timeout": 3.0}
    async with run_server(tmp_path, database_url, server=settings) as run:
        port = run.server.settings.port
        quiet = await healthy(run)
        held = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /api/bk-job/prod/api/v3/get_account_list HTTP/1.1\r\n"
                         b"Host: x\r\nContent-Length: 100\r\n\r\n{")
            held.append((reader, writer))
        async with httpx.AsyncClient(base_url=run.url, timeout=60, trust_env=False) as http:

            async def refused() -> httpx.Response | None:
                # answered until the server has read both stalled requests' headers
                resp = await http.get("/api/jobfleet/v1/whoami", headers=run.wire.headers())
                return resp if resp.status_code == 503 else None
            resp = await eventually(refused, timeout=30, interval=0.1)
            assert resp.headers["retry-after"] == "1"
            assert resp.json()["code"] == 1240001 and "try again" in resp.json()["message"]
            assert (await http.get("/healthz")).status_code == 200
        await run.start_agents(["127.0.0.2"])
        # the stalled bodies time out and free their places
        for reader, _writer in held:
            assert await closed_by_server(reader, 10.0)
        after = await healthy(run)
        assert after < 5.0 + 5 * quiet, (after, quiet)
        for _reader, writer in held:
            writer.close()
    # a client that stalls its body is no fault of the server's: no traceback for it
    assert not [r for r in caplog.records if "request_failed" in r.getMessage()]


async def test_past_the_pending_cap_the_oldest_slow_connection_makes_room(
    tmp_path: Path, database_url: str
) -> None:
    settings = {"header_timeout": 60.0, "max_pending_connections": 50}
    async with run_server(tmp_path, database_url, server=settings) as run:
        port = run.server.settings.port
        quiet = await healthy(run)

        async def silent() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection("127.0.0.1", port)

        old = await asyncio.gather(*(silent() for _ in range(50)))
        await asyncio.sleep(2.5)  # only a connection that had time to send headers is taken
        new = await asyncio.gather(*(silent() for _ in range(50)))
        during = await healthy(run)
        assert during < 5.0 + 5 * quiet, (during, quiet)
        # short enough that the newer ones are checked before their 60 s header time is up
        old_closed = await asyncio.gather(*(closed_by_server(r, 15.0) for r, _w in old))
        assert all(old_closed)
        # the newer ones are still waiting for their headers (60 s)
        assert not any(await asyncio.gather(*(closed_by_server(r, 0.5) for r, _w in new)))
        for _r, writer in (*old, *new):
            writer.close()


async def test_on_the_agent_port_only_a_connection_that_began_its_headers_makes_room(
    tmp_path: Path, database_url: str
) -> None:
    """Agents that reconnect together wait with their requests unread while the loop does
    their handshakes: a silent connection there is not taken for slow (its header timeout
    ends it); one that trickles its headers still makes room."""
    settings = {"header_timeout": 60.0, "max_pending_connections": 50}
    async with run_server(tmp_path, database_url, server=settings) as run:
        port = run.server.services.agent_channel.port
        ca = run.server.services.agent_channel.ca_pem
        assert port is not None and ca is not None
        tls = pinned_context(ca)

        async def opened(head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=tls, server_hostname="")
            writer.write(head)
            await writer.drain()
            return reader, writer

        silent = await asyncio.gather(*(opened(b"") for _ in range(50)))
        trickling = await asyncio.gather(*(opened(b"GET / HTTP/1.1\r\n") for _ in range(50)))
        await asyncio.sleep(2.5)
        newer = await asyncio.gather(*(opened(b"GET / HTTP/1.1\r\n") for _ in range(50)))
        closed = await asyncio.gather(*(closed_by_server(r, 3.0) for r, _w in trickling))
        assert all(closed)
        assert not any(await asyncio.gather(*(closed_by_server(r, 0.5) for r, _w in silent)))
        assert not any(await asyncio.gather(*(closed_by_server(r, 0.5) for r, _w in newer)))
        # agents still get in
        await run.start_agents(["127.0.0.2"])
        for _r, writer in (*silent, *trickling, *newer):
            writer.close()
