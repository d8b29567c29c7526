"""Enrolling a swarm's hosts the way real agents enroll, from one or several processes.

Each host enrolls with the agent's own client (``agent/fetch.py``: its own TLS
connection, one request, ``Connection: close``), so the server does for each host
what it does for a real one. One process can only start so many TLS handshakes a
second; a benchmark that wants to see the server's limit rather than the client's
spreads the hosts over several processes (``processes``), ``window`` enrollments in
flight in each. The floor of such a run (``healthz``) is the same number of requests
through the same client, processes and window, to ``GET /healthz`` on the same channel.

A helper process is this module run as a program for a slice of the hosts:

    JOBFLEET_ENROLL_TOKEN=T python -m jobfleet.agent.swarm_enroll \\
        --server URL --first F --count N --window W [--biz B] [--healthz] [--loop uvloop]

It prints one JSON line per credential, ``[index, agent_id, agent_secret,
bk_host_id]``, to its parent through a pipe (never argv, never a log); with
``--healthz`` it makes the requests and prints nothing. It runs on the kind of event
loop its parent runs on (``--loop uvloop`` when the parent's is uvloop's), so that a
slice's clients cost the same wherever they run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from jobfleet.agent.channel import Channel
from jobfleet.agent.enrollment import Credential, enroll
from jobfleet.agent.fetch import request
from jobfleet.agent.settings import AgentSettings

TOKEN_ENV = "JOBFLEET_ENROLL_TOKEN"  # noqa: S105 - the name of the variable


async def channels_of(servers: Sequence[str], token: str) -> dict[str, Channel]:
    """One check of each server's CA and one TLS context for every host (the nodes of
    a cluster share their CA)."""
    found = {}
    for url in servers:
        found[url], _ = await AgentSettings(
            server=url, state_dir=None, ip="", enroll_token=token
        ).channel()
    return found


async def enroll_here(
    settings: Sequence[AgentSettings], channels: dict[str, Channel], window: int
) -> list[Credential]:
    """Every host of ``settings`` enrolled from this process, ``window`` at a time."""
    gate = asyncio.Semaphore(max(1, window))

    async def one(s: AgentSettings) -> Credential:
        async with gate:
            return await enroll(s, None, channels[s.server])

    return list(await asyncio.gather(*(one(s) for s in settings)))


async def healthz_here(
    count: int, channels: Sequence[Channel], window: int, first: int = 0
) -> None:
    """``count`` requests to ``GET /healthz`` through the agent's client, host ``i``
    on the channel it would enroll on, ``window`` at a time."""
    gate = asyncio.Semaphore(max(1, window))

    async def one(i: int) -> None:
        channel = channels[(first + i) % len(channels)]
        async with gate:
            answer = await request("GET", channel.base + "/healthz", verify=channel.tls or True)
        if answer.status_code != 200:
            raise RuntimeError(f"/healthz answered HTTP {answer.status_code}")

    await asyncio.gather(*(one(i) for i in range(count)))


def slices(count: int, parts: int) -> list[tuple[int, int]]:
    """``(start, length)`` of ``parts`` nearly equal slices of ``range(count)``."""
    parts = max(1, min(parts, count)) if count else 1
    size, extra = divmod(count, parts)
    out, start = [], 0
    for k in range(parts):
        length = size + (1 if k < extra else 0)
        out.append((start, length))
        start += length
    return out


async def enroll_all(
    settings: Sequence[AgentSettings],
    servers: Sequence[str],
    token: str,
    channels: dict[str, Channel],
    *,
    window: int,
    processes: int = 1,
    first: int = 0,
    biz: int = 2,
) -> list[Credential]:
    """Every host of ``settings`` (hosts ``first``.. of the swarm) enrolled, this
    process taking the first slice and ``processes - 1`` helpers the others."""
    parts = slices(len(settings), processes)
    helpers = [
        _Helper(servers, token, first + start, length, window, biz, healthz=False)
        for start, length in parts[1:]
    ]
    start, length = parts[0]
    try:
        mine = await enroll_here(settings[start : start + length], channels, window)
        theirs = await asyncio.gather(*(h.credentials() for h in helpers))
    finally:
        for helper in helpers:
            helper.stop()
    return mine + [c for part in theirs for c in part]


async def healthz_all(
    count: int,
    servers: Sequence[str],
    token: str,
    channels: dict[str, Channel],
    *,
    window: int,
    processes: int = 1,
) -> None:
    """The floor of ``enroll_all``: as many requests, same client, window and processes."""
    parts = slices(count, processes)
    helpers = [
        _Helper(servers, token, start, length, window, 2, healthz=True)
        for start, length in parts[1:]
    ]
    try:
        await healthz_here(parts[0][1], [channels[s] for s in servers], window)
        await asyncio.gather(*(h.credentials() for h in helpers))
    finally:
        for helper in helpers:
            helper.stop()


class _Helper:
    """A helper process for one slice; started at once, read when asked."""

    def __init__(
        self,
        servers: Sequence[str],
        token: str,
        first: int,
        count: int,
        window: int,
        biz: int,
        *,
        healthz: bool,
    ) -> None:
        argv = [sys.executable, "-m", "jobfleet.agent.swarm_enroll"]
        for url in servers:
            argv += ["--server", url]
        argv += ["--first", str(first), "--count", str(count), "--window", str(window)]
        argv += ["--biz", str(biz), *(["--healthz"] if healthz else [])]
        if type(asyncio.get_running_loop()).__module__.startswith("uvloop"):
            # a helper's clients cost what its parent's do
            argv += ["--loop", "uvloop"]
        self.first = first
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env={**os.environ, TOKEN_ENV: token},
        )

    async def credentials(self) -> list[Credential]:
        out, _ = await asyncio.to_thread(self.proc.communicate)
        if self.proc.returncode != 0:
            raise RuntimeError(
                f"the enrollment helper for hosts {self.first}.. exited {self.proc.returncode}"
            )
        rows = sorted(json.loads(line) for line in out.splitlines() if line.strip())
        return [Credential(agent_id, secret, int(host)) for _, agent_id, secret, host in rows]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str] | None = None) -> None:
    from jobfleet.agent.swarm import swarm_settings

    parser = argparse.ArgumentParser(prog="python -m jobfleet.agent.swarm_enroll")
    parser.add_argument("--server", required=True, action="append")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--biz", type=int, default=2)
    parser.add_argument("--healthz", action="store_true")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        parser.error(f"give the enrollment token in {TOKEN_ENV}")

    async def go() -> None:
        channels = await channels_of(args.server, token)
        if args.healthz:
            servers = [channels[s] for s in args.server]
            await healthz_here(args.count, servers, args.window, args.first)
            return
        settings = swarm_settings(args.server, token, args.count, first=args.first, biz=args.biz)
        creds = await enroll_here(settings, channels, args.window)
        lines = (
            json.dumps([args.first + i, c.agent_id, c.agent_secret, c.bk_host_id])
            for i, c in enumerate(creds)
        )
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()

    run_on(args.loop, go(), parser)


def run_on(
    loop: str, main: Coroutine[Any, Any, None], parser: argparse.ArgumentParser
) -> None:
    """Run ``main`` on the standard loop or on uvloop's (a usage error without uvloop)."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            main.close()
            parser.error("--loop uvloop: uvloop is not installed")
        uvloop.run(main)
        return
    asyncio.run(main)


if __name__ == "__main__":
    main()
