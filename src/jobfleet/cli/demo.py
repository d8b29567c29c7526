"""``jobfleet demo``: the whole system on one machine, in one command."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from jobfleet.cli._render import format_duration, host_order, noun_for, run_status_label
from jobfleet.sdk import HOST_STATUS_DESC, AsyncJobClient
from jobfleet.server import DEFAULT_BIZ, Server, ServerSettings, read_bootstrap

DEMO_SCRIPT = """\
echo "hello from $JOBFLEET_HOST_IP ($(hostname)), running as $(id -un)"
echo "kernel: $(uname -sr), shell pid $$, args: $*"
"""


def _command() -> str:
    """How to call this CLI: `make demo` runs it from .venv/bin, which is rarely on PATH."""
    beside = Path(sys.executable).parent / "jobfleet"
    found = shutil.which("jobfleet")
    if found and Path(found).resolve() == beside.resolve():
        return "jobfleet"
    return str(beside) if beside.exists() else "jobfleet"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


async def run_demo(*, keep: bool, agents: int, port: int) -> int:
    console = Console()
    data_dir = Path(tempfile.mkdtemp(prefix="jobfleet-demo-"))
    port = port or free_port()
    settings = ServerSettings(data_dir=data_dir / "server", port=port, log_level="warning")
    server = Server(settings)
    uv = server.listener()
    serving = asyncio.create_task(uv.serve())
    procs: list[asyncio.subprocess.Process] = []
    try:
        async with httpx.AsyncClient(trust_env=False) as http:

            async def up() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get(f"{settings.url}/healthz")).status_code == 200
                return False

            await wait_until(up, 30, "the server")
        boot = read_bootstrap(settings.data_dir)
        console.print(f"[bold]jobfleet server[/] at {settings.url} (data in {data_dir})")
        client = AsyncJobClient(
            settings.url,
            boot["bk_app_code"],
            boot["bk_app_secret"],
            boot["admin_user"],
            biz=DEFAULT_BIZ,
        )
        async with client:
            # a token of the demo's own, for exactly its agents, gone within the hour
            token = await client.create_enroll_token(
                uses=agents, ttl_seconds=3600, note="jobfleet demo"
            )
            # through the environment: a command line is readable by every user (ps)
            agent_env = {**os.environ, "JOBFLEET_ENROLL_TOKEN": str(token["token"])}
            for i in range(agents):
                ip = f"127.0.0.{i + 2}"
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "jobfleet",
                        "agent",
                        "--server",
                        settings.url,
                        "--state-dir",
                        str(data_dir / f"agent-{ip}"),
                        "--ip",
                        ip,
                        "--log-level",
                        "warning",
                        stdin=asyncio.subprocess.DEVNULL,
                        env=agent_env,
                    )
                )

            async def all_alive() -> bool:
                hosts = await client.list_hosts(bk_biz_id=DEFAULT_BIZ)
                return sum(1 for h in hosts if h.get("alive")) >= agents

            await wait_until(all_alive, 60, f"{agents} {noun_for(agents, 'agent')}")
            last = f"127.0.0.{agents + 1}"
            addresses = f"host {last}" if agents == 1 else f"hosts 127.0.0.2 … {last}"
            console.print(f"{agents} {noun_for(agents, 'agent')} connected as {addresses}")
            account = "root"
            if os.geteuid() != 0:
                account = getpass.getuser()
                await server.identity.create_account(DEFAULT_BIZ, account)
            hosts = [f"127.0.0.{i + 2}" for i in range(agents)]
            started = time.monotonic()
            result = await client.execute_and_wait(
                DEMO_SCRIPT,
                hosts=hosts,
                params="--greeting 'hi there'",
                account=account,
                task_name="jobfleet demo",
                timeout=60,
                wait_timeout=120,
            )
            elapsed = time.monotonic() - started
        table = Table(
            title=f"job {result.job_instance_id}: {run_status_label(result.status)} "
            f"in {format_duration(elapsed)}"
        )
        for column in ("host", "status", "exit", "output"):
            table.add_column(column)
        for host in sorted(result.hosts, key=host_order):
            status = f"{host.status} {HOST_STATUS_DESC.get(host.status, '')}"
            table.add_row(host.ip, status, str(host.exit_code), host.log.rstrip())
        console.print(table)
        if keep:
            bootstrap = settings.data_dir / "bootstrap.json"
            try_it = shlex.join([_command(), "--server", settings.url, "--bootstrap",
                                 str(bootstrap), "run", "--host", "127.0.0.2", "-c", "uptime"])
            # soft_wrap: lines are copied and pasted, so never broken at the terminal's width
            console.print(
                f"\nConsole: {settings.url}/ (log in as {boot['admin_user']}, password "
                f"{boot.get('admin_password', '(see bootstrap.json)')})\n"
                f"Server: {settings.url}\nApp code: {boot['bk_app_code']}\n"
                f"App secret: {boot['bk_app_secret']}\nUser: {boot['admin_user']}\n"
                f"Bootstrap file: {bootstrap}\n"
                f"Try: {try_it}\nPress Ctrl-C to stop.",
                soft_wrap=True,
                highlight=False,
                markup=False,
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        return 0 if result.ok else 1
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
        uv.should_exit = True
        await serving
        # everything the directory holds (keys, the admin's password) dies with the demo
        shutil.rmtree(data_dir, ignore_errors=True)
