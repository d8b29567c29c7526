"""What an operator watches: /healthz, /readyz (database, schema, Redis), /metrics,
and the server's log lines as JSON, on a real server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from tests.integration.harness import Proc, Running, eventually, free_port, run_server
from tests.integration.redis_server import RedisServer
from tests.integration.test_tls import self_signed

from jobfleet import __version__
from jobfleet.server import read_bootstrap
from jobfleet.store.health import head_revision

IPS = ["127.0.0.111", "127.0.0.112"]


def metric(body: str, name: str) -> float | None:
    """The value of one sample (``name`` with its labels as written), if present."""
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def scrape(http: httpx.AsyncClient, **headers: str) -> str:
    resp = await http.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return resp.text


async def readyz(http: httpx.AsyncClient, status: int = 200) -> httpx.Response:
    """The first ``/readyz`` answer with ``status`` in which no check timed out. A round
    trip slower than the probe's 2 s (a loaded machine) fails that check, and a second
    later the probe checks again."""

    async def answered() -> httpx.Response | None:
        answer = await http.get("/readyz")
        if any(c.get("error") == "timeout" for c in answer.json()["checks"].values()):
            return None
        assert answer.status_code == status, answer.text
        return answer
    answer: httpx.Response = await eventually(answered, timeout=60, interval=0.5)
    return answer


async def test_probes_and_metrics_of_one_node(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as http:
        alive = await http.get("/healthz")
        assert alive.json() == {"status": "ok", "version": __version__}
        ready = await readyz(http)
        body = ready.json()
        assert body["status"] == "ready"
        assert set(body["checks"]) == {"database", "migrations", "disk"}  # no Redis configured
        assert body["checks"]["disk"]["ok"] and body["checks"]["disk"]["free_bytes"] > 0
        assert body["checks"]["database"]["ok"] and body["checks"]["database"]["latency_ms"] >= 0
        assert body["checks"]["migrations"] == {
            "ok": True, "current": head_revision(), "head": head_revision()}
        # nothing an outsider could use: no URL, no path, no credentials
        assert running.server.settings.database_url not in ready.text
        assert str(running.data_dir) not in ready.text

        async def timed_scrape() -> str | None:
            # the scrape's round trip has the probe's 2 s too: past them, no latency
            body = await scrape(http)
            return body if metric(body, "jobfleet_database_latency_seconds") is not None else None
        first = await eventually(timed_scrape, timeout=60, interval=0.5)
        assert metric(first, "jobfleet_agents_connected") == 0
        assert (metric(first, "jobfleet_data_dir_free_bytes") or 0) > 0
        assert metric(first, "jobfleet_bus_clustered") == 0
        assert (metric(first, "jobfleet_database_latency_seconds") or -1) >= 0
        assert (metric(first, "process_resident_memory_bytes") or 0) > 0
        assert metric(first, 'jobfleet_outbox_pending{kind="callback"}') == 0

        await running.start_agents(IPS)
        # loopback is refused to callbacks by default: one failed attempt, given up at once
        job = await running.wire.run_script("echo hi", IPS, callback_url="http://127.0.0.1:9/cb")
        await running.wire.wait(job["job_instance_id"])

        async def counted() -> str | None:
            body = await scrape(http)
            done = (metric(body, 'jobfleet_jobs{status="success"}') == 1
                    and metric(body, 'jobfleet_outbox_gave_up_total{kind="callback"}') == 1)
            return body if done else None
        body = await eventually(counted, timeout=20, interval=0.5)
        assert metric(body, "jobfleet_agents_connected") == 2
        assert metric(body, 'jobfleet_hosts{agent="alive"}') == 2
        assert metric(body, 'jobfleet_outbox_failed_attempts_total{kind="callback"}') == 1
        assert metric(body, 'jobfleet_outbox_pending{kind="callback"}') == 0
        # the agent port's handshakes: both agents' done, none waiting, none failed yet
        assert metric(body, "jobfleet_agent_handshakes_in_flight") == 0
        assert metric(body, "jobfleet_agent_handshakes_waiting") == 0
        assert metric(body, "jobfleet_agent_handshakes_failed_total") == 0
        assert metric(body, "jobfleet_agent_handshakes_expired_total") == 0
        # a client that speaks no TLS to the agent port is one failed handshake
        host, port = running.server.agent_socket.getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()

        async def failed() -> str | None:
            body = await scrape(http)
            return body if metric(body, "jobfleet_agent_handshakes_failed_total") == 1 else None
        await eventually(failed, timeout=20, interval=0.2)
        writer.close()
        assert re.search(r'^jobfleet_build_info\{node="\w+",version="[^"]+"\} 1\.0$', body, re.M)


async def test_readyz_fails_while_the_schema_is_behind(running: Running) -> None:
    async with running.server.db.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as http:
        resp = await readyz(http, 503)
        assert resp.json()["status"] == "not ready"
        assert resp.json()["checks"]["migrations"] == {
            "ok": False, "current": "0001", "head": head_revision()}
        assert (await http.get("/healthz")).status_code == 200
    async with running.server.db.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = :v"),
                           {"v": head_revision()})


async def test_metrics_token(tmp_path: Path, database_url: str) -> None:
    settings = {"metrics_token": "scrape-token"}
    async with run_server(tmp_path, database_url, server=settings) as node, \
            httpx.AsyncClient(base_url=node.url, trust_env=False, timeout=60) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": "Basic scrape-token"}):
            resp = await http.get("/metrics", headers=headers)
            assert resp.status_code == 401
            assert resp.json()["code"] == 1240005 and resp.json()["result"] is False
            assert "scrape-token" not in resp.text
        body = await scrape(http, Authorization="Bearer scrape-token")
        assert metric(body, "jobfleet_agents_connected") == 0
        # the probes stay open: a load balancer has no token
        await readyz(http)


def leaves(value: Any) -> Iterator[Any]:
    """Every scalar in a JSON answer."""
    if isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)
    else:
        yield value


async def test_readyz_and_metrics_of_a_node_on_redis(
        tmp_path: Path, database_url: str, redis_server: RedisServer) -> None:
    settings = {"redis_url": redis_server.url}
    async with run_server(tmp_path, database_url, server=settings) as node, \
            httpx.AsyncClient(base_url=node.url, trust_env=False, timeout=60) as http:
        ready = await readyz(http)
        assert ready.json()["checks"]["redis"]["ok"] is True
        # the address is not shown: no string names the port and no field holds it (the
        # digits alone may occur by chance inside free_bytes or a latency)
        assert redis_server.url not in ready.text
        port = redis_server.port
        assert not [v for v in leaves(ready.json())
                    if v == port or (isinstance(v, str) and str(port) in v)], ready.text
        await node.start_agents(IPS[:1])
        job = await node.wire.run_script("echo via redis", IPS[:1])
        await node.wire.wait(job["job_instance_id"])
        body = await scrape(http)
        assert metric(body, "jobfleet_bus_clustered") == 1
        assert metric(body, "jobfleet_cluster_nodes") == 1
        assert metric(body, "jobfleet_bus_backlog") == 0
        assert metric(body, "jobfleet_bus_lag_seconds") == 0
        # a node's messages to itself do not leave it: the counters are there, at 0
        assert metric(body, "jobfleet_bus_sent_total") is not None
        assert metric(body, "jobfleet_bus_received_total") is not None

        await redis_server.stop()

        async def degraded() -> httpx.Response | None:
            resp = await http.get("/readyz")  # checked again at most once a second
            checks = resp.json()["checks"]
            timed_out = checks["database"].get("error") == "timeout"
            return resp if not checks["redis"]["ok"] and not timed_out else None
        gone = await eventually(degraded, timeout=30, interval=0.3)
        # the node still serves (what goes between nodes waits): it stays in the pool
        assert gone.status_code == 200, gone.text
        assert gone.json()["status"] == "degraded"
        assert gone.json()["checks"]["redis"] == {"ok": False, "error": "unreachable"}
        assert gone.json()["checks"]["database"]["ok"] is True

        async def left_out() -> bool:  # what Redis cannot tell is left out, not an error
            return metric(await scrape(http), "jobfleet_bus_backlog") is None
        await eventually(left_out, timeout=30, interval=0.3)

        await redis_server.start()

        async def back() -> bool:
            return (await http.get("/readyz")).json()["status"] == "ready"
        await eventually(back, timeout=60, interval=0.5)


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_server_logs_as_json_with_the_config_file_under_the_flags(
        tmp_path: Path, database_url: str, scheme: str) -> None:
    port = free_port()
    data_dir = tmp_path / "server"
    config = tmp_path / "server.toml"
    # the file's port is overridden by --port; its other settings hold
    config.write_text(f'data_dir = "{data_dir}"\nport = 1\nagent_port = 0\n'
                      f'log_level = "info"\n[retention]\njobs = "7d"\n')
    tls: list[str] = []
    verify: bool | ssl.SSLContext = True
    if scheme == "https":
        cert, key = self_signed(tmp_path)
        tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
        verify = ssl.create_default_context(cafile=str(cert))
    proc = Proc(["jobfleet", "server", "--config", str(config), "--port", str(port),
                 "--database-url", database_url, "--log-format", "json", *tls], {})
    await proc.start()
    try:
        async with httpx.AsyncClient(base_url=f"{scheme}://127.0.0.1:{port}", verify=verify,
                                     trust_env=False, timeout=60) as http:
            async def up() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get("/readyz")).status_code == 200
                return False
            await eventually(up, timeout=60)
            await http.get("/no/such/route")
    finally:
        await proc.stop()
    assert proc.proc is not None and proc.proc.stdout is not None
    output = (await asyncio.wait_for(proc.proc.stdout.read(), 10)).decode()
    lines = [line for line in output.splitlines() if line.strip()]
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    loggers = {e["logger"] for e in entries}
    assert "uvicorn.error" in loggers and "jobfleet.server" in loggers
    # once what runs where, as bound: the API and agent ports (the file's agent_port 0
    # is the one the system picked), the console, the process
    [started] = [e for e in entries if e["message"] == "server_started"]
    assert started["api"] == f"{scheme}://127.0.0.1:{port}", started
    assert re.fullmatch(r"https://127\.0\.0\.1:[1-9][0-9]*", started["agent"]), started
    assert started["console"] == f"{scheme}://127.0.0.1:{port}/", started
    assert started["pid"] == str(proc.proc.pid), started
    assert any(e["message"] == "Application startup complete." for e in entries)
    # the two listeners do not each say that the server starts and stops
    said = Counter(e["message"] for e in entries if e["logger"] == "uvicorn.error")
    assert all(count == 1 for count in said.values()), said
    # nor say the API's address a second time, without its role
    assert not any(m.startswith("Uvicorn running on") for m in said), said
    assert [e["message"] for e in entries].count("server_stopped") == 1
    secret = read_bootstrap(data_dir)["bk_app_secret"]
    assert secret not in output
    if "@" in database_url:  # a PostgreSQL URL with a password
        assert database_url not in output


def test_an_agent_port_in_use_ends_the_server_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "jobfleet", "server", "--data-dir", str(tmp_path / "d"),
             "--host", "127.0.0.1", "--port", str(free_port()), "--agent-port", str(port)],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert "Traceback" not in output and "OSError" not in output, output
    line = next(x for x in output.splitlines() if "agent_port_unavailable" in x)
    assert f"port={port}" in line and "--agent-port" in line
