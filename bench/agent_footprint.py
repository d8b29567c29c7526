"""What an idle agent costs in memory: 20 real agent processes on one real server.

    .venv/bin/python bench/agent_footprint.py [--agents 20] [--settle 10]
        [--zipapp dist/jobfleet-agent.pyz] [--before-python /work/main/.venv/bin/python]

Starts ``jobfleet server`` on loopback (TLS agent channel, as deployed), then each
group of agents in turn: ``python -m jobfleet agent`` of this tree, optionally the
single-file agent (run with ``-I -S``: nothing installed) and optionally another
tree's agent (``--before-python``: the Python of that tree's venv, e.g. main's); with
``--zipapp`` also as ``deploy/install-agent.sh`` starts it (``-I -S -OO``).
Each group enrolls, connects, shows alive in the inventory, idles ``--settle``
seconds, and then every process's VmRSS (``/proc/PID/status``) and PSS
(``/proc/PID/smaps_rollup``: shared pages divided among their users) is read.

The floors, measured in the same run: as many bare ``python3`` processes that import
``websockets`` and hold one idle WebSocket connection each (to a server in this
process); and, lower, as many bare ``python3 -I -S`` processes with asyncio and ssl
that hold one idle TLS connection each (pinned CA, to a TLS server in this process):
the interpreter itself with what any agent needs. Everything is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import ssl
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import websockets

from fanout import PY, Child, Children, ServerProc, start_server, wait_alive

FLOOR_CLIENT = """
import asyncio, sys, websockets
async def main():
    async with websockets.connect(sys.argv[1]) as ws:
        print("connected", flush=True)
        await ws.wait_closed()
asyncio.run(main())
"""


# asyncio + ssl, one idle TLS connection trusting one CA, nothing else
TLS_FLOOR_CLIENT = """
import asyncio, ssl, sys
async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=sys.stdin.read())
    reader, writer = await asyncio.open_connection("127.0.0.1", int(sys.argv[1]), ssl=ctx,
                                                   server_hostname="")
    print("connected", flush=True)
    await reader.read()
asyncio.run(main())
"""


@dataclass
class Memory:
    rss_mib: float
    pss_mib: float


def memory(pid: int) -> Memory:
    rss = pss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1]) / 1024
    return Memory(rss, pss)


def summary(name: str, figures: list[Memory]) -> str:
    rss = [m.rss_mib for m in figures]
    pss = [m.pss_mib for m in figures]
    return (f"| {name} | {len(figures)} | {statistics.mean(rss):.1f} | {max(rss):.1f} | "
            f"{statistics.mean(pss):.1f} | {sum(rss):.0f} | {sum(pss):.0f} |")


async def floor(children: Children, count: int, settle: float) -> list[Memory]:
    """Bare python3 + websockets, each idling on one connection."""
    async def hold(ws: websockets.asyncio.server.ServerConnection) -> None:
        await ws.wait_closed()

    async with websockets.serve(hold, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        procs = [await children.spawn(f"floor-{i}", [PY, "-I", "-c", FLOOR_CLIENT,
                                                     f"ws://127.0.0.1:{port}"], pipe_stdout=True)
                 for i in range(count)]
        figures = await idle_memory(children, procs, settle)
    return figures


async def idle_memory(children: Children, procs: list[Child], settle: float) -> list[Memory]:
    """Once every floor process says it is connected and has idled ``settle`` seconds, the
    memory of each; then they are stopped."""
    for child in procs:
        assert child.proc.stdout is not None
        line = await asyncio.wait_for(child.proc.stdout.readline(), 30)
        if line.strip() != b"connected":
            raise RuntimeError(f"{child.name} did not connect")
    await asyncio.sleep(settle)
    figures = [memory(c.pid) for c in procs]
    for child in procs:
        await children.stop(child)
    return figures


async def tls_floor(children: Children, work: Path, count: int, settle: float) -> list[Memory]:
    """Bare python3 -I -S with asyncio and ssl, each idling on one TLS connection."""
    from jobfleet.gateway.tls import ensure_agent_tls

    (work / "floor-tls").mkdir()
    tls = ensure_agent_tls(work / "floor-tls", ["127.0.0.1"])
    ca = work / "floor-tls" / "tls" / "ca.pem"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    procs = []
    for i in range(count):
        child = await children.spawn(
            f"tls-floor-{i}", ["/bin/sh", "-c", f'exec "$0" -I -S -c "$1" {port} < {ca}',
                               PY, TLS_FLOOR_CLIENT], pipe_stdout=True)
        procs.append(child)
    figures = await idle_memory(children, procs, settle)
    for writer in held:
        writer.close()
    server.close()
    return figures


async def agents(children: Children, server: ServerProc, work: Path, group: str,
                 prefix: list[str], subnet: int, count: int, settle: float) -> list[Memory]:
    ips = [f"127.0.{subnet}.{i + 2}" for i in range(count)]
    procs: list[Child] = []
    for ip in ips:
        argv = [*prefix, "--server", server.url, "--state-dir", str(work / group / ip),
                "--ip", ip, "--log-level", "warning"]
        procs.append(await children.spawn(
            f"{group}-{ip}", argv, env={"JOBFLEET_ENROLL_TOKEN": server.boot["enroll_token"]}))
    await wait_alive(server, ips, procs)
    await asyncio.sleep(settle)
    figures = [memory(c.pid) for c in procs]
    for child in procs:
        await children.stop(child)
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds every group idles connected before it is measured")
    parser.add_argument("--zipapp", type=Path, help="also measure this jobfleet-agent.pyz")
    parser.add_argument("--before-python", help="also measure the agent of this Python's jobfleet")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jobfleet-footprint-"))
    children = Children(work)
    groups: list[tuple[str, list[str]]] = [("this tree", [PY, "-m", "jobfleet", "agent"])]
    if args.zipapp is not None:
        groups.append(("zipapp (-I -S)", [PY, "-I", "-S", str(args.zipapp.resolve())]))
        # as deploy/install-agent.sh starts it
        groups.append(("zipapp as installed (-I -S -OO)",
                       [PY, "-I", "-S", "-OO", str(args.zipapp.resolve())]))
    if args.before_python:
        groups.append(("before", [args.before_python, "-m", "jobfleet", "agent"]))
    rows: list[str] = []
    try:
        load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
        print(f"load before: {load.strip()}")
        started = time.perf_counter()
        base = await floor(children, args.agents, args.settle)
        rows.append(summary("floor: python3 + websockets, one idle connection", base))
        low = await tls_floor(children, work, args.agents, args.settle)
        rows.append(summary("floor: python3 -I -S + asyncio + ssl, one idle TLS connection",
                            low))
        server = await start_server(children, work, "server")
        for n, (name, prefix) in enumerate(groups):
            figures = await agents(children, server, work, f"g{n}", prefix, 60 + n,
                                   args.agents, args.settle)
            for i, m in enumerate(figures):
                print(f"{name} agent {i + 1:2d}: "
                      f"rss {m.rss_mib:5.1f} MiB  pss {m.pss_mib:5.1f} MiB")
            rows.append(summary(name, figures))
        floor_rss = statistics.mean(m.rss_mib for m in base)
        print(f"\nfinished in {time.perf_counter() - started:.0f} s; load after: "
              + subprocess.run(["uptime"], capture_output=True, text=True,
                               check=False).stdout.strip())
        print("\n| what | processes | RSS mean MiB | RSS max MiB | PSS mean MiB "
              "| RSS total MiB | PSS total MiB |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in rows:
            print(row)
        print(f"\nfloor RSS mean: {floor_rss:.1f} MiB; TLS floor RSS mean: "
              f"{statistics.mean(m.rss_mib for m in low):.1f} MiB")
    finally:
        await children.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    asyncio.run(main())
