"""A real server on a loopback port, real agents, and a raw HTTP client speaking the wire API.

The ``running`` fixture is re-exported by conftest.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import pytest
import uvicorn

from jobfleet.agent.channel import pinned_context
from jobfleet.agent.client import Agent, AgentSettings
from jobfleet.server import EngineSettings, Server, ServerSettings, read_bootstrap

# presence_batch: start_agents waits for its agents to be written alive, which the
# default (0.2 s, for thousands reconnecting at once) would add to nearly every test
TEST_ENGINE = {"agent_lost_grace": 1.0, "recovery_window": 8.0, "callback_backoff": 0.2,
               "callback_backoff_max": 1.0, "reconcile_interval": 1.0, "terminate_wait": 5.0,
               "presence_batch": 0.02}
# the agents' reconnect cap (10 s by default): the tests restart servers and kill nodes,
# and each wait for agents to come back would otherwise take up to that long
AGENT_MAX_BACKOFF = 1.0
AGENT_BACKOFF_ARGS = ("--max-backoff", str(AGENT_MAX_BACKOFF))


# Ports for servers a test starts later: below the kernel's ephemeral range (which
# outgoing connections and bind(0) draw from, tens of thousands at once while a swarm
# runs), and a slice of its own for each parallel test worker.
PORTS_LOW, PORTS_HIGH = 20000, 32000


def _port_cycle() -> Iterator[int]:
    """This worker's slice of ports, in turn from a random start: a port handed out is
    not handed out again until the whole slice has been, so the several ports one test
    takes before its servers bind them (a cluster takes seven) never repeat."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    slices = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    width = (PORTS_HIGH - PORTS_LOW) // slices
    low = PORTS_LOW + (int(worker) % slices if worker.isdecimal() else 0) * width
    start = random.randrange(width)
    return itertools.cycle([low + (start + i) % width for i in range(width)])


_PORTS = _port_cycle()


def free_port() -> int:
    for _ in range(200):
        port = next(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# how long a test waits for an in-process server to stop
STOP_WAIT = 90


def bound_socket(port: int = 0, *, nodelay: bool = False) -> socket.socket:
    """A listening address that stays ours: parallel test workers cannot race for it.

    Pass the port of a server that stopped to start its successor on the same address.
    ``nodelay``: name the protocol, so that asyncio sets TCP_NODELAY on the accepted
    connections as uvloop does in production (without it each kept-alive request waits
    ~40 ms for the client's delayed ACK, which only a test sending thousands of requests
    one after another notices; the others keep the slower pace that their polling
    loops were tuned on)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP if nodelay else 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


async def serve_on(server: uvicorn.Server, sock: socket.socket) -> asyncio.Task[None]:
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        if task.done():
            task.result()
        return bool(server.started)
    # as long as a stop may take: a start's first writes wait as long on a loaded disk.
    # Looked at every 2 ms: it is an attribute, and a start takes about 100 ms, of which
    # a coarser look would add half its interval to every test's setup
    await eventually(started, timeout=STOP_WAIT, interval=0.002)
    return task


class Endpoint(Protocol):
    """A test's HTTP endpoint: a uvicorn server to build, on a socket already bound."""

    sock: socket.socket

    def server(self) -> uvicorn.Server: ...


E = TypeVar("E", bound=Endpoint)


@asynccontextmanager
async def listening(endpoint: E) -> AsyncIterator[E]:
    """``endpoint`` answering on its address for as long as the context lasts."""
    server = endpoint.server()
    task = await serve_on(server, endpoint.sock)
    try:
        yield endpoint
    finally:
        server.should_exit = True
        await task


async def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a test's server process and wait for it; SIGKILL it after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        await asyncio.to_thread(proc.wait, 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        await asyncio.to_thread(proc.wait)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 60.0,
                     interval: float = 0.1) -> Any:
    # a wait, not a speed claim: a condition that holds returns at once, and a loaded
    # two-core CI machine has taken more than 20 s to start an agent's job
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def wait_healthy(url: str, ended: Callable[[], Awaitable[None]] | None = None,
                       timeout: float = 60.0) -> None:
    """Until the server at ``url`` answers ``/healthz``; ``ended`` raises with what its
    process printed if that process has exited, so a failed start is told at once."""
    async with httpx.AsyncClient(trust_env=False, timeout=60) as http:
        async def up() -> bool:
            if ended is not None:
                await ended()
            with contextlib.suppress(httpx.HTTPError):
                return (await http.get(f"{url}/healthz")).status_code == 200
            return False
        await eventually(up, timeout=timeout)


def stop_group(child: subprocess.Popen[bytes], wait: float = 10.0) -> None:
    """Ends a process started in its own session, and all it started: politely, then not."""
    if child.poll() is not None:
        return
    os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(wait)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(10)


async def alive_ips(wire: Wire, expect: Collection[str] = ()) -> set[str]:
    """The IPs of the hosts the inventory shows alive; none until every one of
    ``expect`` is among them (for ``eventually``)."""
    hosts = await wire.http.get("/api/jobfleet/v1/hosts", headers=wire.headers())
    found = {h["ip"] for h in hosts.json()["data"] if h["alive"]}
    return found if set(expect) <= found else set()


# one for every Wire: making a context reads the CA bundle, tens of ms each time
CLIENT_TLS = ssl.create_default_context()


class Wire:
    """An HTTP client that calls the bk-job API exactly as BlueKing clients do."""

    def __init__(self, base: str, app_code: str, secret: str, user: str = "admin") -> None:
        self.base = base
        self.auth = {"bk_app_code": app_code, "bk_app_secret": secret, "bk_username": user}
        self.http = httpx.AsyncClient(base_url=base, timeout=60, trust_env=False,
                                      verify=CLIENT_TLS)

    def headers(self, **override: str) -> dict[str, str]:
        return {"X-Bkapi-Authorization": json.dumps({**self.auth, **override})}

    async def post(self, path: str, body: Any, **kw: Any) -> dict[str, Any]:
        resp = await self.http.post(path, json=body, headers=kw.pop("headers", self.headers()))
        return dict(resp.json())

    async def get(self, path: str, params: dict[str, Any], **kw: Any) -> dict[str, Any]:
        resp = await self.http.get(path, params=params, headers=kw.pop("headers", self.headers()))
        return dict(resp.json())

    async def v3(self, name: str, params: dict[str, Any], *, method: str = "POST",
                 prefix: str = "/api/bk-job/prod/api/v3") -> dict[str, Any]:
        if method == "GET":
            return await self.get(f"{prefix}/{name}", params)
        return await self.post(f"{prefix}/{name}", params)

    async def run_script(self, script: str, ips: list[str], **extra: Any) -> dict[str, Any]:
        body = {"bk_scope_type": "biz", "bk_scope_id": "2", "script_content": b64(script),
                "script_language": 1, "account_alias": "root",
                "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in ips]},
                **extra}
        answer = await self.v3("fast_execute_script", body)
        assert answer["result"], answer
        return dict(answer["data"])

    async def status(self, job_id: int) -> dict[str, Any]:
        answer = await self.v3("get_job_instance_status",
                               {"bk_biz_id": 2, "job_instance_id": job_id,
                                "return_ip_result": "true"}, method="GET")
        assert answer["result"], answer
        return dict(answer["data"])

    async def wait(self, job_id: int, timeout: float = 60.0) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            data = await self.status(job_id)
            return data if data["finished"] else None
        return dict(await eventually(done, timeout, 0.1))

    async def logs(self, job_id: int, step_id: int, ips: list[str]) -> dict[str, str]:
        answer = await self.v3("batch_get_job_instance_ip_log", {
            "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
            "ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in ips]})
        assert answer["result"], answer
        return {i["ip"]: i["log_content"] for i in answer["data"]["script_task_logs"]}

    async def close(self) -> None:
        await self.http.aclose()


@dataclass
class Running:
    server: Server
    url: str
    boot: dict[str, Any]
    wire: Wire
    data_dir: Path
    agents: dict[str, tuple[Agent, asyncio.Task[None]]] = field(default_factory=dict)

    @property
    def agent_base(self) -> str:
        """The encrypted agent port every agent of the suite uses (the token leads there)."""
        return f"https://127.0.0.1:{self.server.services.agent_channel.port}"

    def agent_http(self) -> httpx.AsyncClient:
        """A client of the agent port that trusts the server's own CA, as agents do."""
        ca = self.server.services.agent_channel.ca_pem
        assert ca is not None, "this server lets agents talk plain HTTP"
        return httpx.AsyncClient(base_url=self.agent_base, verify=pinned_context(ca),
                                 timeout=60, trust_env=False)

    async def start_agents(self, ips: list[str], *, biz: int = 2,
                           settings_of: dict[str, dict[str, Any]] | None = None) -> None:
        """``settings_of`` sets more ``AgentSettings`` fields per IP (hostname, labels, …)."""
        for ip in ips:
            settings = AgentSettings(server=self.url, state_dir=self.data_dir / f"agent-{ip}",
                                     ip=ip, biz=biz, enroll_token=self.boot["enroll_token"],
                                     heartbeat=2.0, max_backoff=AGENT_MAX_BACKOFF,
                                     **(settings_of or {}).get(ip, {}))
            agent = Agent(settings)
            self.agents[ip] = (agent, asyncio.create_task(agent.run_forever()))
        async def connected() -> bool:
            for ip in ips:
                _agent, task = self.agents[ip]
                if task.done():
                    task.result()  # an agent that gave up says why
            return all(self.agents[ip][0].connected.is_set() for ip in ips)
        # looked at often: an agent connects and is marked alive within tens of ms, and
        # nearly every test starts agents (the first look is an attribute, the second
        # one query)
        await eventually(connected, timeout=30, interval=0.01)
        await eventually(self._alive(ips), interval=0.02)
        if not self.server.settings.agent_plaintext:
            # the whole suite runs over the encrypted, pinned agent channel
            for ip in ips:
                channel = self.agents[ip][0].channel
                assert channel is not None and channel.base == self.agent_base, channel
                assert channel.tls is not None

    def _alive(self, ips: list[str]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            hosts = await self.server.inventory.list()
            alive = {h.ip for h in hosts if h.alive}
            return set(ips) <= alive
        return check

    async def stop_agent(self, ip: str) -> None:
        agent, task = self.agents.pop(ip)
        await agent.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def running(tmp_path: Path, database_url: str,
                  request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    nodelay = request.node.get_closest_marker("nodelay") is not None
    async with run_server(tmp_path, database_url, nodelay=nodelay) as run:
        yield run


@asynccontextmanager
async def run_server(tmp_path: Path, database_url: str, *, engine: dict[str, Any] | None = None,
                     port: int = 0, boot: dict[str, Any] | None = None,
                     server: dict[str, Any] | None = None,
                     nodelay: bool = False) -> AsyncIterator[Running]:
    """What ``running`` gives, with engine settings over TEST_ENGINE's.

    Run it again with the same ``tmp_path`` (and ``port``) to restart the same server.
    ``boot``: the admin credentials of a database another node set up. ``server``: more
    ``ServerSettings`` fields. Agents talk TLS on a free agent port unless ``server``
    says ``agent_plaintext``."""
    sock = bound_socket(port, nodelay=nodelay)
    settings = ServerSettings(data_dir=tmp_path / "server", port=sock.getsockname()[1],
                              database_url=database_url,
                              engine=EngineSettings(**{**TEST_ENGINE, **(engine or {})}),
                              log_level="warning", **{"heartbeat": 2.0, **(server or {})})
    node = Server(settings)
    uv = node.listener()
    task = await serve_on(uv, sock)
    boot = boot or read_bootstrap(settings.data_dir)
    wire = Wire(settings.url, boot["bk_app_code"], boot["bk_app_secret"], boot["admin_user"])
    run = Running(node, settings.url, boot, wire, tmp_path)
    try:
        yield run
    finally:
        for ip in list(run.agents):
            await run.stop_agent(ip)
        await wire.close()
        uv.should_exit = True
        # each part of the server's stop may take its STOP_TIMEOUT (10 s): on a disk that
        # another test fills with fsynced gigabytes, every part that writes to SQLite
        # can wait that long
        done, _ = await asyncio.wait({task}, timeout=STOP_WAIT)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=10)
            raise AssertionError(f"the server did not stop within {STOP_WAIT} s")


def agent_proc(url: str, token: str, state: Path, ip: str, *extra: str,
               token_file: Path | None = None) -> Proc:
    """``jobfleet agent`` as the README starts it: the token in the environment, or in
    ``token_file`` when given; never on the command line."""
    if token_file is not None:
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        source = ["--enroll-token-file", str(token_file)]
        env: dict[str, str] = {}
    else:
        source, env = [], {"JOBFLEET_ENROLL_TOKEN": token}
    return Proc(["jobfleet", "agent", "--server", url, *source, "--state-dir", str(state),
                 "--ip", ip, "--log-level", "warning", *AGENT_BACKOFF_ARGS, *extra], env)


@dataclass
class Proc:
    """A jobfleet process started the way an operator starts it."""

    args: list[str]
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", *self.args, env={**os.environ, **self.env},
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    async def ended(self, timeout: float = 60) -> tuple[int, str]:
        """The status and output of a process that must end by itself within
        ``timeout`` (stopped if it does not)."""
        assert self.proc is not None and self.proc.stdout is not None
        try:
            out = await asyncio.wait_for(self.proc.stdout.read(), timeout)
            code = await asyncio.wait_for(self.proc.wait(), 10)
        finally:
            await self.stop()
        return code, out.decode(errors="replace")

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
