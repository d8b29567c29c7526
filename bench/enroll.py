"""Enrollment of N hosts, the server's memory with N agents, and the reconnect storm
after a server restart, each set against a floor measured in the same run.

A jobfleet server runs as its own process (SQLite in a temporary data dir, TLS agent
channel, loopback). One swarm process (``jobfleet.agent.swarm``, the instant executor)
holds the N hosts: it enrolls every one through the real enroll API, then connects
them all. The server is then stopped (SIGTERM) and started again on the same data
dir and ports; the swarm's agents reconnect on their own, with their backoff.

Figures:

- enrollment: seconds until every host holds its credential, and the server's CPU (in
  all and per enrollment). Each host enrolls as a real agent does, with the agent's own
  client (a TLS connection of its own to the agent port, one request); the hosts are
  spread over ``--enroll-processes`` client processes, ``--enroll-window`` in flight in
  each. Floor: the same number of requests (``GET /healthz``) through the same client,
  swarm processes, client processes and window, on the same channel of the same server,
  timed the same way (from the swarm processes' spawn to the last one's report), and its
  server CPU;
- connect: seconds from credentials to every agent connected;
- server RSS (VmRSS, after a collection) with N agents connected, and per agent;
- idle: the share of a core the server takes with N idle agents (``--idle`` seconds);
- restart: seconds from the new server's first answer to N agents connected again
  (and alive in the inventory), the server's CPU and the swarm's during the storm, the
  largest number of connections it took in one second (the herd), and how long an API
  call (``get_job_instance_list``, twice a second) took meanwhile; floor: N raw TLS +
  WebSocket connections (websockets client to a websockets server with the same
  certificate, in their own process), with the same handshake window as the swarm, and
  the CPU of its server and of its clients.

With ``--procs P`` the hosts are split over P swarm processes (host slices by
``--first``), each with its own handshake window, and the raw floor's clients over P
processes too: one Python process opening thousands of TLS connections is its own
bottleneck, so with P > 1 the reconnect figure measures the server, not the client.
The ``/healthz`` floor runs from P swarm processes as well (``--floor-procs 1``: from
one, as before, which at ~1 ms of client CPU a request measures that process).

    .venv/bin/python bench/enroll.py [--count 10000] [--window 64] [--procs 1]
        [--enroll-processes 2] [--enroll-window 32] [--idle 30] [--enroll-only]
        [--floor-procs P] [--swarm-loop uvloop]

The clients share the machine's cores with the server: ``--swarm-loop uvloop`` runs the
swarms and every floor's clients on uvloop, whose TLS costs a client less CPU than the
standard loop's (the agent's own loop); the server's CPU per request is the figure that
does not depend on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout import PY, Child, Children, ServerProc, free_port, usage, wait_alive


async def start_server(children: Children, data: Path, port: int, agent_port: int,
                       name: str, database_url: str | None = None) -> ServerProc:
    argv = [PY, "-m", "jobfleet", "server", "--data-dir", str(data), "--host", "127.0.0.1",
            "--port", str(port), "--agent-port", str(agent_port), "--log-level", "warning",
            # a whole swarm enrolls from one address
            "--enroll-rate", "0",
            *(["--database-url", database_url] if database_url else [])]
    child = await children.spawn(name, argv)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport()) as http:
        deadline = time.monotonic() + 90
        while True:
            if not child.alive:
                raise RuntimeError(f"{name} exited; see {children.log_dir}/{name}.log")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url + "/healthz")).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within 90 s")
            await asyncio.sleep(0.05)
    boot = json.loads((data / "bootstrap.json").read_text())
    return ServerProc(child, url, boot)


async def connected(http: httpx.AsyncClient, url: str) -> int:
    text = (await http.get(url + "/metrics")).text
    for line in text.splitlines():
        if line.startswith("jobfleet_agents_connected"):
            return int(float(line.split()[-1]))
    return 0


async def watch_connected(url: str, count: int, timeout: float) -> tuple[float, list[int]]:
    """Seconds until ``count`` agents are connected; the count at each 0.25 s tick."""
    started = time.perf_counter()
    ticks: list[int] = []
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(), timeout=30) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                ticks.append(await connected(http, url))
                if ticks[-1] >= count:
                    return time.perf_counter() - started, ticks
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"only {ticks[-1] if ticks else 0} of {count} connected")
            await asyncio.sleep(0.25)


async def api_latency(server: ServerProc, stop: asyncio.Event) -> list[float]:
    """Seconds each ``get_job_instance_list`` took, one call every 0.5 s until ``stop``."""
    seconds: list[float] = []
    async with server.client() as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                await client.get_job_instance_list(
                    create_time_start=int(time.time() * 1000) - 86_400_000,
                    create_time_end=int(time.time() * 1000), length=10)
            except Exception as exc:
                sys.stderr.write(f"api call failed: {exc!r}\n")
            else:
                seconds.append(time.perf_counter() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    return seconds


def herd(ticks: list[int]) -> int:
    """The most connections taken in one second (4 ticks of 0.25 s)."""
    return max((ticks[i + 4] - ticks[i] for i in range(len(ticks) - 4)), default=ticks[-1])


def enroll_options(args: argparse.Namespace) -> list[str]:
    """How the swarm enrolls its hosts: the same for the enrollment and its floor."""
    return ["--enroll-window", str(args.enroll_window),
            "--enroll-processes", str(args.enroll_processes), "--loop", args.swarm_loop]


async def http_floor(children: Children, server: ServerProc,
                     args: argparse.Namespace) -> dict[str, float]:
    """``count`` times ``GET /healthz`` the way the swarms' hosts enroll: as many swarm
    processes (``--floor-procs``, else ``--procs``), each with the same client processes
    and window, the agent's client, the agent channel. Timed as the enrollment is, from
    their spawn to the last one's report; also the slowest one's own timing (from its
    first request) and the server's CPU."""
    procs = args.floor_procs or args.procs
    cpu0 = usage(server.child.pid).cpu
    started = time.perf_counter()
    floors = [
        await children.spawn(
            f"healthz-floor-{i}",
            [PY, "-m", "jobfleet.agent.swarm", "--server", server.url, "--count", str(size),
             "--first", str(first), "--healthz-floor", *enroll_options(args)],
            pipe_stdout=True, env={"JOBFLEET_ENROLL_TOKEN": server.boot["enroll_token"]})
        for i, (first, size) in enumerate(slices(args.count, procs))
    ]

    async def done(floor: Child) -> float:
        assert floor.proc.stdout is not None
        line = await asyncio.wait_for(floor.proc.stdout.readline(), 1800)
        if not line.startswith(b"healthz "):
            raise RuntimeError(f"the floor did not finish; see {children.log_dir}/{floor.name}.log")
        return float(line.split()[1])

    inner = await asyncio.gather(*(done(f) for f in floors))
    seconds = time.perf_counter() - started
    cpu = usage(server.child.pid).cpu - cpu0
    for floor in floors:
        await children.stop(floor)
    return {"seconds": seconds, "inner": max(inner), "server_cpu": cpu, "procs": len(floors)}


# --- the raw TLS + WebSocket floor ------------------------------------------------------


async def _floor_server(port: int, cert: Path, key: Path) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def hold(ws: ServerConnection) -> None:
        await ws.recv()  # a hello, as an agent sends
        await ws.send(b'{"t":"welcome"}')
        await ws.wait_closed()

    async with serve(hold, "127.0.0.1", port, ssl=context, compression=None,
                     ping_interval=10, ping_timeout=10):
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await asyncio.Future()


def slices(count: int, procs: int) -> list[tuple[int, int]]:
    """(first, count) of each of ``procs`` processes holding ``count`` hosts."""
    procs = max(1, min(procs, count))
    base, extra = divmod(count, procs)
    out, first = [], 0
    for i in range(procs):
        size = base + (1 if i < extra else 0)
        out.append((first, size))
        first += size
    return out


async def _floor_clients(port: int, ca: Path, count: int, window: int) -> None:
    from websockets.asyncio.client import ClientConnection, connect

    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    slots = asyncio.Semaphore(window)
    held: list[ClientConnection] = []

    async def one() -> None:
        async with slots:
            ws = await connect(f"wss://127.0.0.1:{port}/", ssl=context, compression=None,
                               ping_interval=10, ping_timeout=10, open_timeout=60)
            await ws.send(b'{"t":"hello"}')
            await ws.recv()
            held.append(ws)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    sys.stdout.write(f"{time.perf_counter() - started:.3f}\n")
    sys.stdout.flush()
    await asyncio.gather(*(ws.close() for ws in held))


async def ws_floor(children: Children, tls: Path, count: int, window: int,
                   procs: int = 1, loop: str = "asyncio") -> dict[str, float]:
    port = free_port()
    server = await children.spawn(
        "floor-server", [PY, __file__, "--floor-server", str(port), str(tls)], pipe_stdout=True)
    assert server.proc.stdout is not None
    await asyncio.wait_for(server.proc.stdout.readline(), 60)
    cpu0 = usage(server.pid).cpu
    clients = [
        await children.spawn(
            f"floor-clients-{i}",
            [PY, __file__, "--floor-clients", str(port), str(tls), str(size), str(window),
             "--swarm-loop", loop],
            pipe_stdout=True)
        for i, (_first, size) in enumerate(slices(count, procs))
    ]

    async def done(client: Child) -> tuple[float, float]:
        """Its seconds, and its CPU from its start to its last connection."""
        assert client.proc.stdout is not None
        # each times itself, from its first connection to its last (its start-up excluded)
        seconds = float(await asyncio.wait_for(client.proc.stdout.readline(), 600))
        return seconds, usage(client.pid).cpu  # it still holds its connections here

    finished = await asyncio.gather(*(done(c) for c in clients))
    seconds = max(s for s, _cpu in finished)
    cpu = usage(server.pid).cpu - cpu0
    clients_cpu = sum(c for _s, c in finished)
    rss = usage(server.pid).rss_mib
    for client in clients:
        await children.stop(client)
    await children.stop(server)
    return {"seconds": seconds, "server_cpu": cpu, "server_rss_mib": rss,
            "clients_cpu": clients_cpu}


# --- the run ----------------------------------------------------------------------------


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"count": args.count, "window": args.window, "procs": args.procs,
                           "swarm_loop": args.swarm_loop,
                           "load_start": _load(), "enroll_window": args.enroll_window,
                           "enroll_processes": args.enroll_processes}
    work = Path(tempfile.mkdtemp(prefix="jobfleet-enroll-"))
    children = Children(work)
    data = work / "server"
    port, agent_port = free_port(), free_port()
    done = False
    try:
        server = await start_server(children, data, port, agent_port, "server")
        floor = await http_floor(children, server, args)
        out["http_floor_s"] = floor["seconds"]
        out["http_floor_inner_s"] = floor["inner"]
        out["http_floor_server_cpu_s"] = floor["server_cpu"]
        out["http_floor_procs"] = int(floor["procs"])
        cpu0 = usage(server.child.pid).cpu
        started = time.perf_counter()
        swarms = [
            await children.spawn(
                "swarm" if args.procs == 1 else f"swarm-{i}",
                [PY, "-m", "jobfleet.agent.swarm", "--server", server.url,
                 "--count", str(size), "--first", str(first), "--executor", "instant",
                 "--stages", "--connect-window", str(args.window),
                 "--work-dir", str(work / "swarm-work"), *enroll_options(args)],
                pipe_stdout=True, env={"JOBFLEET_ENROLL_TOKEN": server.boot["enroll_token"]})
            for i, (first, size) in enumerate(slices(args.count, args.procs))
        ]
        # a stage is reached when the last of the swarm processes reports it
        stages: dict[str, float] = {}
        cpu_at: dict[str, float] = {}
        reported: dict[str, int] = {}
        # when each swarm had all its hosts enrolled: the first go on to connect theirs
        # while the last still enroll
        each: list[float] = []

        async def follow_until(swarm: Child, last: str) -> None:
            assert swarm.proc.stdout is not None
            while True:
                line = await asyncio.wait_for(swarm.proc.stdout.readline(), 1800)
                if not line:
                    raise RuntimeError(f"a swarm exited; see {work}/{swarm.name}.log")
                word = line.decode().split()[0]
                reported[word] = reported.get(word, 0) + 1
                if word == "enrolled":
                    each.append(time.perf_counter() - started)
                if reported[word] == len(swarms):
                    stages[word] = time.perf_counter() - started
                    cpu_at[word] = usage(server.child.pid).cpu - cpu0
                if word == last:
                    return

        async def follow(swarm: Child) -> None:
            await follow_until(swarm, "ready")

        if args.enroll_only:
            # the swarms report "enrolled" first: the rest of their run is not waited for
            await asyncio.gather(*(follow_until(s, "enrolled") for s in swarms))
            out["enroll_each_s"] = each
            out["enroll_s"] = stages["enrolled"]
            out["enroll_server_cpu_s"] = cpu_at["enrolled"]
            done = True
            return out
        await asyncio.gather(*(follow(s) for s in swarms))
        out["enroll_each_s"] = each
        out["enroll_s"] = stages["enrolled"]
        out["enroll_server_cpu_s"] = cpu_at["enrolled"]
        out["connect_s"] = stages["ready"] - stages["enrolled"]
        out["connect_server_cpu_s"] = cpu_at["ready"] - cpu_at["enrolled"]
        from jobfleet.agent.swarm import swarm_ip

        ips = [swarm_ip(i) for i in range(args.count)]
        await wait_alive(server, ips, swarms, timeout=600)
        await asyncio.sleep(args.settle)
        u = usage(server.child.pid)
        out["server_rss_mib"] = u.rss_mib
        out["server_hwm_mib"] = u.hwm_mib
        out["swarm_rss_mib"] = sum(usage(s.pid).rss_mib for s in swarms)
        # what N idle agents cost the server: keepalive, presence and load reports
        cpu0, idle0 = usage(server.child.pid).cpu, time.perf_counter()
        await asyncio.sleep(args.idle)
        out["idle_server_cpu_share"] = (
            (usage(server.child.pid).cpu - cpu0) / (time.perf_counter() - idle0))

        # the restart: the swarm stays, its agents find the new server on their own
        await children.stop(server.child)
        stopped = time.perf_counter()
        server = await start_server(children, data, port, agent_port, "server2")
        out["restart_answer_s"] = time.perf_counter() - stopped
        cpu0 = usage(server.child.pid).cpu
        swarm_cpu0 = sum(usage(s.pid).cpu for s in swarms)
        api_stop = asyncio.Event()
        api = asyncio.create_task(api_latency(server, api_stop))
        seconds, ticks = await watch_connected(server.url, args.count, 600)
        out["reconnect_s"] = seconds
        out["reconnect_server_cpu_s"] = usage(server.child.pid).cpu - cpu0
        out["reconnect_swarm_cpu_s"] = sum(usage(s.pid).cpu for s in swarms) - swarm_cpu0
        out["reconnect_herd_per_s"] = herd(ticks)
        out["reconnect_ticks"] = ticks
        api_stop.set()
        calls = sorted(await api)
        out["reconnect_api_calls"] = len(calls)
        out["reconnect_api_median_s"] = calls[len(calls) // 2] if calls else float("nan")
        out["reconnect_api_max_s"] = calls[-1] if calls else float("nan")
        await wait_alive(server, ips, swarms, timeout=600)
        out["reconnect_alive_s"] = time.perf_counter() - stopped - out["restart_answer_s"]
        out["server_rss_after_restart_mib"] = usage(server.child.pid).rss_mib
        for swarm in swarms:
            await children.stop(swarm)
        await children.stop(server.child)

        floor = await ws_floor(children, data / "tls", args.count, args.window, args.procs,
                               args.swarm_loop)
        out["ws_floor_s"] = floor["seconds"]
        out["ws_floor_server_cpu_s"] = floor["server_cpu"]
        out["ws_floor_server_rss_mib"] = floor["server_rss_mib"]
        out["ws_floor_clients_cpu_s"] = floor["clients_cpu"]
        done = True
    finally:
        await children.stop_all()
        out["load_end"] = _load()
        # a run that failed keeps its servers' and swarms' logs to be read
        if done:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"failed; logs kept in {work}", file=sys.stderr)
    return out


def _enroll_lines(out: dict[str, Any]) -> list[str]:
    n = out["count"]
    return [
        f"N={n} hosts in {out['procs']} swarm process(es) on {out.get('swarm_loop', 'asyncio')}'s "
        f"loop, handshake window {out['window']} each; load {out['load_start']} -> "
        f"{out['load_end']}",
        f"enrollment        {out['enroll_s']:7.2f} s  server CPU {out['enroll_server_cpu_s']:.2f} s"
        f" ({out['enroll_server_cpu_s'] * 1000 / n:.2f} ms each); agent client,"
        f" {out['enroll_processes']} process(es) x {out['enroll_window']} in flight;"
        f" each swarm done at {', '.join(f'{s:.2f}' for s in out['enroll_each_s'])} s",
        f"  floor: N x GET /healthz the same way ({out['http_floor_procs']} swarm"
        f" process(es)) {out['http_floor_s']:.2f} s (the slowest from its first request"
        f" {out['http_floor_inner_s']:.2f} s), server CPU"
        f" {out['http_floor_server_cpu_s']:.2f} s ({out['http_floor_server_cpu_s'] * 1000 / n:.2f}"
        f" ms each); ratio {out['enroll_s'] / out['http_floor_s']:.2f}x (time),"
        f" {out['enroll_server_cpu_s'] / max(out['http_floor_server_cpu_s'], 0.01):.2f}x (CPU)",
    ]


def report(out: dict[str, Any]) -> str:
    n = out["count"]
    lines = _enroll_lines(out)
    if "connect_s" not in out:  # --enroll-only
        return "\n".join(lines)
    lines += [
        f"connect           {out['connect_s']:7.2f} s  server CPU "
        f"{out['connect_server_cpu_s']:.2f} s",
        f"server RSS        {out['server_rss_mib']:7.1f} MiB (peak {out['server_hwm_mib']:.1f}),"
        f" {out['server_rss_mib'] * 1024 / n:.1f} KiB per agent; swarm "
        f"{out['swarm_rss_mib']:.1f} MiB",
        f"idle: the server with N idle agents takes {out['idle_server_cpu_share'] * 100:.1f} %"
        " of a core",
        f"restart: answered {out['restart_answer_s']:.2f} s after the stop; all connected "
        f"{out['reconnect_s']:.2f} s later, alive in the inventory "
        f"{out['reconnect_alive_s']:.2f} s;"
        f" server CPU {out['reconnect_server_cpu_s']:.2f} s, swarm CPU"
        f" {out['reconnect_swarm_cpu_s']:.2f} s;"
        f" most connections in one second {out['reconnect_herd_per_s']};"
        f" then server RSS {out['server_rss_after_restart_mib']:.1f} MiB",
        f"  an API call meanwhile ({out['reconnect_api_calls']} calls): median"
        f" {out['reconnect_api_median_s'] * 1000:.0f} ms, slowest"
        f" {out['reconnect_api_max_s'] * 1000:.0f} ms",
        f"floor: raw TLS+WebSocket connect of N {out['ws_floor_s']:.2f} s, its server CPU "
        f"{out['ws_floor_server_cpu_s']:.2f} s, its clients' CPU "
        f"{out['ws_floor_clients_cpu_s']:.2f} s, RSS {out['ws_floor_server_rss_mib']:.1f} MiB;"
        f" ratio {out['reconnect_s'] / out['ws_floor_s']:.2f}x (time),"
        f" {out['reconnect_server_cpu_s'] / max(out['ws_floor_server_cpu_s'], 0.01):.2f}x (CPU)",
    ]
    return "\n".join(lines)


def run_on(loop: str, main: Coroutine[Any, Any, None]) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/enroll.py")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=64, help="the swarm's handshakes at once")
    parser.add_argument("--enroll-processes", type=int, default=1,
                        help="client processes the hosts enroll from")
    parser.add_argument("--enroll-window", type=int, default=32,
                        help="enrollments in flight in each client process")
    parser.add_argument("--procs", type=int, default=1,
                        help="swarm processes holding the hosts (and raw floor client processes)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds idle before the RSS is read")
    parser.add_argument("--idle", type=float, default=30.0,
                        help="seconds the server's CPU is watched with N idle agents")
    parser.add_argument("--floor-procs", type=int,
                        help="swarm processes the /healthz floor runs from (default: --procs)")
    parser.add_argument("--enroll-only", action="store_true",
                        help="stop after the enrollment and its floor")
    parser.add_argument("--swarm-loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the event loop of the swarms and of every client process of "
                             "the floors (the agent's own is asyncio's; uvloop's TLS costs the "
                             "clients less CPU on the machine they share with the server)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--floor-server", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--floor-clients", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_server:
        port, tls = int(args.floor_server[0]), Path(args.floor_server[1])
        asyncio.run(_floor_server(port, tls / "agent-cert.pem", tls / "agent-key.pem"))
        return 0
    if args.floor_clients:
        port, tls, count, window = args.floor_clients
        run_on(args.swarm_loop, _floor_clients(int(port), Path(tls) / "ca.pem", int(count),
                                               int(window)))
        return 0
    out = asyncio.run(bench(args))
    print(report(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
