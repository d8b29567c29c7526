"""Request bodies are limited before they are read and before authentication; enrollment and
failed authentication are rate-limited per source address."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from tests.integration.harness import Running, Wire, run_server

from jobfleet.agent.client import CONNECT_PATH, AgentSettings, enroll

V3 = "/api/bk-job/prod/api/v3"
ENROLL = "/api/jobfleet/v1/agents/enroll"
MiB = 1024 * 1024
# the agent routes on the API port (these tests are about the edge, not the agent channel)
PLAIN_AGENTS = {"agent_plaintext": True}


async def raw_exchange(url: str, head: bytes, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """Send request headers (and no body) on a plain socket; the status and the JSON answer."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    _headers, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(body)


async def chunks(total: int, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    piece = b"x" * size
    sent = 0
    while sent < total:
        yield piece[: min(size, total - sent)]
        sent += size


# one backend: a body is refused or cut before any query is made, whatever the
# database; the limits on enrollment and authentication below keep both
@pytest.mark.one_backend
async def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(
    tmp_path: Path, database_url: str
) -> None:
    """No body is ever sent and no credentials are given: the answer comes from the headers."""
    async with run_server(tmp_path, database_url, server=PLAIN_AGENTS) as running:
        await _declared_bodies_refused(running)


async def _declared_bodies_refused(running: Running) -> None:
    for path, length in (
        (f"{V3}/fast_execute_script", 33 * MiB),
        ("/api/jobfleet/v1/agents/enroll", 33 * MiB),
        ("/api/jobfleet/v1/files/upload/abc?token=x", 6 * 1024**3),
        ("/api/jobfleet/v1/agents/blobs/abc", 6 * 1024**3),
    ):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()
        status, body = await raw_exchange(running.url, head)
        assert status == 413, (path, body)
        assert body["result"] is False and body["code"] == 1240003
        assert "larger than the limit" in body["message"]


@pytest.mark.one_backend
async def test_a_streamed_body_is_cut_at_the_routes_limit(
    tmp_path: Path, database_url: str
) -> None:
    async with run_server(
        tmp_path, database_url,
        server={**PLAIN_AGENTS, "max_body": 1 * MiB, "max_file_size": 3 * MiB}
    ) as run:
        http = run.wire.http
        # no Content-Length: the server counts
        resp = await http.post(
            f"{V3}/fast_execute_script", content=chunks(8 * MiB), headers=run.wire.headers()
        )
        assert resp.status_code == 413
        answer = resp.json()
        assert answer["code"] == 1240003 and "1048576 bytes" in answer["message"]
        # the enrollment route reads its own body: the same limit holds
        resp = await http.post(ENROLL, content=chunks(8 * MiB))
        assert resp.status_code == 413 and resp.json()["code"] == 1240003
        # refused by its Content-Length, before a byte is read: in the caller's language
        resp = await http.post(f"{V3}/fast_execute_script", content=b"x" * (2 * MiB),
                               headers={**run.wire.headers(), "blueking-language": "zh-cn"})
        assert resp.status_code == 413 and resp.json()["message"] == "错误的请求", resp.text
        # a file upload takes more than a JSON call, up to max_file_size
        resp = await http.post(
            "/api/jobfleet/v1/files",
            params={"name": "two.bin", "bk_biz_id": 2},
            content=chunks(2 * MiB),
            headers=run.wire.headers(),
        )
        assert resp.json()["result"], resp.json()
        assert resp.json()["data"]["size"] == 2 * MiB
        resp = await http.post(
            "/api/jobfleet/v1/files",
            params={"name": "four.bin", "bk_biz_id": 2},
            content=chunks(4 * MiB),
            headers=run.wire.headers(),
        )
        assert resp.status_code == 413 and resp.json()["result"] is False
        # a body under the limit still works, on the same server
        answer = await run.wire.v3("get_account_list", {"bk_biz_id": 2, "pad": "y" * 500_000})
        assert answer["result"], answer


async def test_enrollment_is_rate_limited_per_address(tmp_path: Path, database_url: str) -> None:
    async with run_server(
        tmp_path, database_url, server={**PLAIN_AGENTS, "enroll_rate": 0.01, "enroll_burst": 3}
    ) as run:
        http = run.wire.http
        body = {"token": "not-a-token", "ip": "127.0.0.9"}
        answers = [(await http.post(ENROLL, json=body)) for _ in range(3)]
        assert all(a.status_code == 401 and a.json()["result"] is False for a in answers)
        over = await http.post(ENROLL, json={"token": run.boot["enroll_token"], "ip": "127.0.0.9"})
        assert over.status_code == 429
        answer = over.json()
        assert answer["result"] is False and answer["code"] == 1249429
        assert answer["message"].startswith("Too many enrollments from 127.0.0.1: try again in")
        # nothing was enrolled by the refused attempt
        assert not [h for h in await run.server.inventory.list() if h.ip == "127.0.0.9"]
        # API calls from the same address are not affected
        assert (await run.wire.get("/api/jobfleet/v1/whoami", {}))["result"]


async def test_failed_authentication_is_rate_limited_and_known_callers_pass(
    tmp_path: Path, database_url: str
) -> None:
    async with run_server(
        tmp_path, database_url,
        server={**PLAIN_AGENTS, "auth_failure_rate": 0.01, "auth_failure_burst": 3}
    ) as run:
        good = run.wire
        bad = Wire(run.url, run.boot["bk_app_code"], "wrong-secret")
        try:
            # many successful calls take nothing from the budget
            for _ in range(10):
                assert (await good.v3("get_account_list", {"bk_biz_id": 2}, method="GET"))[
                    "result"
                ]
            for _ in range(3):
                resp = await bad.http.get(f"{V3}/get_account_list", params={"bk_biz_id": 2},
                                          headers=bad.headers())
                assert resp.status_code == 401 and resp.json()["code"] == 1240005
            resp = await bad.http.get(f"{V3}/get_account_list", params={"bk_biz_id": 2},
                                      headers=bad.headers())
            assert resp.status_code == 429, resp.json()
            assert resp.json()["code"] == 1249429
            assert "Too many failed authentications from 127.0.0.1" in resp.json()["message"]
            # credentials this server verified keep working from the same address, also once
            # their minute in the cache is over
            assert (await good.v3("get_account_list", {"bk_biz_id": 2}, method="GET"))["result"]
            auth = run.server.services.auth
            auth._apps.update(dict.fromkeys(auth._apps, 0.0))
            assert (await good.v3("get_account_list", {"bk_biz_id": 2}, method="GET"))["result"]
            # an agent credential or upload token guessed from that address is refused
            # before it is checked
            resp = await bad.http.get("/api/jobfleet/v1/agents/blobs/abc",
                                      headers={"Authorization": "Agent someone:guess"})
            assert resp.status_code == 429 and resp.json()["code"] == 1249429
            resp = await bad.http.put("/api/jobfleet/v1/files/upload/abc",
                                      params={"token": "guess"}, content=b"x")
            assert resp.status_code == 429 and resp.json()["code"] == 1249429
        finally:
            await bad.close()


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.one_backend
async def test_memory_stays_flat_under_parallel_huge_bodies(
    tmp_path: Path, database_url: str
) -> None:
    """Six clients stream 300 MB each at once, with and without Content-Length, at JSON and
    upload routes; the server (in this process) never holds more than a route's limit."""
    size = 300 * MiB
    async with run_server(tmp_path, database_url,
                          server={**PLAIN_AGENTS, "max_file_size": 128 * MiB}) as run:
        wire = run.wire
        answer = await wire.v3("generate_local_file_upload_url",
                               {"bk_biz_id": 2, "file_name_list": ["ok.bin"]})
        upload_url = httpx.URL(answer["data"]["url_map"]["ok.bin"]["upload_url"])
        files = {"params": {"name": "big.bin", "bk_biz_id": 2}, "headers": wire.headers()}
        sized = {"Content-Length": str(size)}
        calls: list[tuple[str, str, int, dict[str, Any]]] = [
            ("json, declared", f"{V3}/fast_execute_script", size,
             {"headers": {**wire.headers(), **sized}}),
            ("json, streamed", f"{V3}/fast_execute_script", size, {"headers": wire.headers()}),
            ("enroll, streamed", ENROLL, size, {}),
            ("upload, declared", "/api/jobfleet/v1/files", size,
             {**files, "headers": {**wire.headers(), **sized}}),
            ("upload, streamed", "/api/jobfleet/v1/files", size, files),
            ("upload under the limit", upload_url.raw_path.decode(), 100 * MiB, {}),
        ]
        peak = base = rss()
        stop = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss())
                await asyncio.sleep(0.02)

        async def send(path: str, total: int, kw: dict[str, Any]) -> int | str:
            async with httpx.AsyncClient(base_url=run.url, timeout=60, trust_env=False) as c:
                try:
                    resp = await c.post(path, content=chunks(total, MiB), **kw)
                except httpx.TransportError as exc:
                    # cut off while still sending, after the server stopped reading
                    return type(exc).__name__
                return resp.status_code

        watcher = asyncio.create_task(watch())
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(send(path, total, kw) for _n, path, total, kw in calls)), 120)
        finally:
            stop.set()
            await watcher
        outcome = {name: result for (name, *_rest), result in zip(calls, results, strict=True)}
        growth = peak - base
        # the two streamed JSON bodies may each reach the 32 MiB limit before they are cut
        assert growth < 200 * MiB, f"RSS grew by {growth / MiB:.0f} MiB: {outcome}"
        assert outcome["upload under the limit"] == 200, outcome
        for name, result in outcome.items():
            assert result in (200, 413) or isinstance(result, str), (name, result)
        # a declared length over the limit is answered 413 before a byte is read
        # (test_a_declared_body_over_the_limit_is_refused_before_it_is_read, on a raw socket); here
        # the client is still sending when the server closes, and on a loaded machine the
        # reset can reach it before the answer does
        for name in ("json, declared", "upload, declared"):
            assert outcome[name] in (413, "ReadError", "WriteError"), outcome
        print(f"parallel bodies: RSS grew by {growth / MiB:.0f} MiB; {outcome}")


@pytest.mark.one_backend
async def test_a_refused_body_is_drained_only_briefly(tmp_path: Path, database_url: str) -> None:
    """Answered without reading (no credentials), a client that goes on streaming gets its
    answer and then loses the connection, instead of keeping it busy for as long as it likes."""
    async with run_server(tmp_path, database_url, server=PLAIN_AGENTS) as running:
        await _refused_body_drained(running)


async def _refused_body_drained(running: Running) -> None:
    url = httpx.URL(running.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(b"PUT /api/jobfleet/v1/agents/blobs/abc HTTP/1.1\r\nHost: x\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
    started = asyncio.get_running_loop().time()

    async def stream() -> float:
        """Seconds until the server cut the connection (writes fail)."""
        try:
            while asyncio.get_running_loop().time() - started < 30:
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0.01)
        except ConnectionError:
            return asyncio.get_running_loop().time() - started
        return 30.0

    streaming = asyncio.create_task(stream())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 401 "), head
        # the default grace is 5 s
        cut_after = await asyncio.wait_for(streaming, 35)
        assert cut_after < 10, f"still streaming after {cut_after:.1f} s"
    finally:
        streaming.cancel()
        await asyncio.gather(streaming, return_exceptions=True)
        writer.close()


async def test_agents_that_hit_the_enrollment_limit_wait_and_enroll(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Three agents enroll from one address with room for one at once: the others are told
    429, back off like a reconnect and enroll as the budget refills."""
    async with run_server(
        tmp_path, database_url, server={"enroll_rate": 2.0, "enroll_burst": 1}
    ) as run:
        ips = ["127.0.0.41", "127.0.0.42", "127.0.0.43"]
        started = asyncio.get_running_loop().time()
        with caplog.at_level(logging.WARNING, logger="jobfleet.agent.client"):
            await run.start_agents(ips)
        assert asyncio.get_running_loop().time() - started < 20
        retries = [r for r in caplog.records if r.getMessage().startswith("agent_enroll_retry")]
        assert retries and all("429" in r.getMessage() for r in retries)


async def test_failed_agent_handshakes_share_the_address_budget(
    tmp_path: Path, database_url: str
) -> None:
    """Guessing agent credentials on the WebSocket counts like any failed authentication:
    past the budget a credential never seen good is refused unchecked, while an agent that
    proved itself before reconnects, and the HTTP API sees the same count."""
    async with run_server(
        tmp_path, database_url, server={"auth_failure_rate": 0.01, "auth_failure_burst": 3}
    ) as run:
        await run.start_agents(["127.0.0.51"])
        proven, _task = run.agents["127.0.0.51"]
        # a second credential, enrolled but never connected
        fresh_settings = AgentSettings(server=run.url, state_dir=tmp_path / "fresh",
                                       ip="127.0.0.52", enroll_token=run.boot["enroll_token"])
        channel, _ = await fresh_settings.channel()
        fresh = await enroll(fresh_settings, channel=channel)
        url = channel.ws_url + CONNECT_PATH

        async def handshake(agent_id: str, secret: str) -> int:
            try:
                async with websockets.connect(
                    url, additional_headers={"Authorization": f"Agent {agent_id}:{secret}"},
                    ssl=channel.tls, open_timeout=10,
                ) as ws:
                    await ws.send(orjson.dumps({"t": "hello", "version": "0", "hostname": "x",
                                                "os": "Linux", "known": []}))
                    await ws.recv()
                    return 101
            except websockets.exceptions.InvalidStatus as exc:
                return int(exc.response.status_code)

        for _ in range(3):
            assert await handshake(fresh.agent_id, "guessed") == 403
        throttle = run.server.auth_failures
        assert throttle.exhausted("127.0.0.1")
        # the right secret for a credential never seen good: refused without a check
        assert await handshake(fresh.agent_id, fresh.agent_secret) == 403
        # the agent that connected before gets back in at once
        cred = proven.credential
        assert cred is not None
        await proven.stop()
        assert await handshake(cred.agent_id, cred.agent_secret) == 101
        # the same budget answers the HTTP API
        bad = Wire(run.url, run.boot["bk_app_code"], "wrong-secret")
        try:
            resp = await bad.http.get(f"{V3}/get_account_list", params={"bk_biz_id": 2},
                                      headers=bad.headers())
            assert resp.status_code == 429, resp.json()
        finally:
            await bad.http.aclose()
