"""Many agents in one process, each its own host over the real protocol.

Benchmarks and durability tests need hundreds or thousands of hosts on one
machine; a process per agent would measure Python start-up, not jobfleet. The
swarm runs the agent's own connection code once per host, with either the real
executor (sharing a concurrency limit, like one machine's cores) or one that
answers at once.

    JOBFLEET_ENROLL_TOKEN=T python -m jobfleet.agent.swarm --server URL --count 1000

The token comes from ``--enroll-token-file`` or the environment, never argv.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from jobfleet.agent.backoff import FLOOR
from jobfleet.agent.channel import Channel
from jobfleet.agent.connection import Agent
from jobfleet.agent.enrollment import Credential, enroll, save_credential
from jobfleet.agent.executor import ProcessExecutor, now_ms
from jobfleet.agent.main import MAX_BACKOFF_LIMIT
from jobfleet.agent.settings import TOKEN_HELP, AgentSettings
from jobfleet.agent.spool import Spool
from jobfleet.agent.swarm_enroll import channels_of, enroll_all, healthz_all, run_on
from jobfleet.agent.task import Executor, OutputCallback, TaskResult, TaskSpec
from jobfleet.domain.status import HostStatus

log = logging.getLogger(__name__)

# the youngest generation's collection threshold once the swarm is up (see ``_serve``)
SWARM_GC_YOUNG = 100_000


class InstantExecutor:
    """Answers every task without running anything (for benchmarks): at once, or after
    ``delay`` seconds, unless it is killed first; with ``output``, that text first."""

    def __init__(self, delay: float = 0.0, output: str = "") -> None:
        self.delay = delay
        self.output = output
        self._running: dict[str, asyncio.Event] = {}

    async def run(
        self,
        spec: TaskSpec,
        on_output: OutputCallback,
        on_started: Callable[[int], None] | None = None,
    ) -> TaskResult:
        start = now_ms()
        if self.output:
            await on_output(self.output)
        if self.delay > 0:
            killed = self._running[spec.id] = asyncio.Event()
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(killed.wait(), self.delay)
            finally:
                self._running.pop(spec.id, None)
            if killed.is_set():
                return TaskResult(HostStatus.GSE_TASK_TERMINATE_SUCCESS, -1, start, now_ms())
        return TaskResult(HostStatus.SUCCESS, 0, start, now_ms())

    def kill(self, task_id: str, reason: str = "terminate") -> bool:
        event = self._running.get(task_id)
        if event is None:
            return False
        event.set()
        return True


FIRST_IP = ipaddress.IPv4Address("127.1.0.1")


def swarm_ip(index: int) -> str:
    return str(FIRST_IP + index)


class LimitedExecutor:
    """Runs at most ``limit`` tasks at once, as the cores of one host would."""

    def __init__(self, inner: Executor, limit: int) -> None:
        self.inner = inner
        self.slots = asyncio.Semaphore(limit)

    async def run(
        self, spec: TaskSpec, on_output: OutputCallback, on_started: object = None
    ) -> TaskResult:
        async with self.slots:
            return await self.inner.run(spec, on_output, on_started)  # type: ignore[arg-type]

    def kill(self, task_id: str, reason: str = "terminate") -> bool:
        return self.inner.kill(task_id, reason)


async def _credential(
    settings: AgentSettings, gate: asyncio.Semaphore, channel: Channel
) -> Credential:
    state = settings.state_dir
    if state is not None and (state / "credential.json").exists():
        data = json.loads((state / "credential.json").read_text())
        return Credential(data["agent_id"], data["agent_secret"], int(data["bk_host_id"]))
    async with gate:
        # the agent's own client: a connection per host, as real hosts enroll
        cred = await enroll(settings, None, channel)
    if state is not None:
        state.mkdir(parents=True, exist_ok=True)
        save_credential(state, cred)
    return cred


def _build_agents(
    settings_list: list[AgentSettings],
    creds: list[Credential],
    executor: Executor,
    http: httpx.AsyncClient,
    channels: dict[str, Channel],
) -> list[Agent]:
    """The swarm's agents: one shared executor and one HTTP client for file transfers."""
    built: list[Agent] = []
    for settings, cred in zip(settings_list, creds, strict=True):
        spool = Spool(settings.state_dir / "spool" if settings.state_dir else None)
        built.append(
            Agent(
                settings,
                executor=executor,
                spool=spool,
                credential=cred,
                http=http,
                channel=channels[settings.server],
                channels=channels,
            )
        )
    return built


async def _connect_all(agents: list[Agent], window: int) -> list[asyncio.Task[None]]:
    """Start every agent, with at most ``window`` handshakes in flight at once.

    Thousands of simultaneous handshakes queue on the server's database pool for
    the credential check; past its checkout timeout they fail and come back as a
    reconnect storm.
    """
    slots = asyncio.Semaphore(max(1, window))
    tasks: list[asyncio.Task[None]] = []

    async def start(agent: Agent) -> None:
        async with slots:
            task = asyncio.create_task(agent.run_forever())
            tasks.append(task)
            connected = asyncio.create_task(agent.connected.wait())
            await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
            connected.cancel()
            if task.done():
                task.result()  # the agent gave up: its error ends the swarm

    await asyncio.gather(*(start(agent) for agent in agents))
    return tasks


def swarm_settings(
    servers: list[str],
    token: str,
    count: int,
    *,
    first: int = 0,
    biz: int = 2,
    state_dir: Path | None = None,
    max_backoff: float = AgentSettings.max_backoff,
) -> list[AgentSettings]:
    """Hosts ``first``.. of a swarm: several nodes of a cluster share the hosts, and
    each host knows them all."""
    return [
        AgentSettings(
            server=servers[(first + i) % len(servers)],
            more_servers=servers,
            ip=swarm_ip(first + i),
            biz=biz,
            enroll_token=token,
            hostname=f"swarm-{first + i}",
            state_dir=state_dir / swarm_ip(first + i) if state_dir else None,
            max_backoff=max_backoff,
        )
        for i in range(count)
    ]


async def run_swarm(
    server: str | list[str],
    token: str,
    count: int,
    *,
    executor: str = "real",
    concurrency: int = 16,
    state_dir: Path | None = None,
    biz: int = 2,
    first: int = 0,
    ready: asyncio.Event | None = None,
    enrolled: asyncio.Event | None = None,
    connect_window: int = 64,
    work_dir: Path | None = None,
    instant_delay: float = 0.0,
    instant_output: str = "",
    enroll_window: int = 32,
    enroll_processes: int = 1,
    max_backoff: float = AgentSettings.max_backoff,
) -> None:
    work = work_dir or (state_dir or Path("/tmp")) / "swarm-work"  # noqa: S108 - scratch for scripts
    inner: Executor = (
        InstantExecutor(instant_delay, instant_output)
        if executor == "instant"
        else ProcessExecutor(work)
    )
    shared: Executor = LimitedExecutor(inner, concurrency) if executor != "instant" else inner
    servers = [server] if isinstance(server, str) else list(server)
    settings_list = swarm_settings(
        servers, token, count, first=first, biz=biz, state_dir=state_dir, max_backoff=max_backoff
    )
    channels = await channels_of(servers, token)
    channel = channels[servers[0]]
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=10.0), trust_env=False, verify=channel.tls or True
    )
    try:
        if state_dir is None:
            creds = await enroll_all(
                settings_list,
                servers,
                token,
                channels,
                window=enroll_window,
                processes=enroll_processes,
                first=first,
                biz=biz,
            )
        else:  # hosts that kept a credential use it
            gate = asyncio.Semaphore(enroll_window)
            creds = await asyncio.gather(
                *(_credential(s, gate, channels[s.server]) for s in settings_list)
            )
        if enrolled is not None:
            enrolled.set()
        agents = _build_agents(settings_list, creds, shared, http, channels)
        await _serve(agents, connect_window, ready, count)
    finally:
        await http.aclose()


async def _serve(
    agents: list[Agent], connect_window: int, ready: asyncio.Event | None, count: int
) -> None:
    tasks = await _connect_all(agents, connect_window)
    await asyncio.gather(*(a.connected.wait() for a in agents))
    # Thousands of agents' long-lived objects would make every full collection of
    # this one process scan them all: pauses no real host has, measured as if they
    # were the server's. Keep them out of the collector's sight.
    gc.collect()
    gc.freeze()
    # A job's tasks in flight on every agent at once are some 100,000 young objects:
    # at the default threshold (700) a 10,000-host job ran ~320 young collections,
    # promoting them to older generations whose collections then scanned them again
    # (0.7-1.0 s of CPU a job). A real agent holds a few dozen such objects.
    gc.set_threshold(SWARM_GC_YOUNG, 50, 100)
    log.info("swarm_ready count=%d", count)
    if ready is not None:
        ready.set()
    try:
        await asyncio.gather(*tasks)
    finally:
        for agent in agents:
            await agent.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobfleet.agent.swarm")
    parser.add_argument(
        "--server", required=True, action="append", help="a node's URL; repeat for a cluster"
    )
    parser.add_argument("--enroll-token-file", type=Path, help="file holding the enrollment token")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--executor", choices=("real", "instant"), default="real")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--instant-delay", type=float, default=0.0, help="instant tasks end after this (s)"
    )
    parser.add_argument("--instant-output", default="", help="instant tasks print this first")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop: the agent's own (asyncio), or uvloop for the instant executor, "
        "so that a benchmark's simulated hosts take less of the machine's CPU",
    )
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--biz", type=int, default=2)
    parser.add_argument("--first", type=int, default=0, help="index of the first host")
    parser.add_argument(
        "--connect-window",
        type=int,
        default=64,
        help="handshakes in flight at once while the swarm connects",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="scratch for script files (default: STATE_DIR or /tmp, /swarm-work)",
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="also print 'enrolled N' once every host has its credential",
    )
    parser.add_argument(
        "--enroll-window", type=int, default=32, help="enrollments in flight in each process"
    )
    parser.add_argument(
        "--enroll-processes",
        type=int,
        default=1,
        help="processes the hosts enroll from (without --state-dir)",
    )
    parser.add_argument(
        "--healthz-floor",
        action="store_true",
        help="make COUNT GET /healthz requests the way the hosts would enroll, print "
        "'healthz SECONDS' and exit (the floor of enrollment)",
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=AgentSettings.max_backoff,
        help="each host's longest wait between two tries to reach a server (s), as "
        "jobfleet agent --max-backoff",
    )
    parser.add_argument("--enroll-token", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not FLOOR <= args.max_backoff <= MAX_BACKOFF_LIMIT:
        parser.error(f"--max-backoff: between {FLOOR:g} and {MAX_BACKOFF_LIMIT:g} seconds")
    if args.loop == "uvloop" and args.executor != "instant" and not args.healthz_floor:
        parser.error("--loop uvloop: only with --executor instant")
    if args.enroll_token is not None:
        parser.error(f"the token would show in ps on a command line; give it with {TOKEN_HELP}")
    token = (
        args.enroll_token_file.read_text().strip()
        if args.enroll_token_file
        else os.environ.get("JOBFLEET_ENROLL_TOKEN", "").strip()
    )
    if not token:
        parser.error(f"give the enrollment token with {TOKEN_HELP}")
    logging.basicConfig(
        level="WARNING", format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
    )

    async def go() -> None:
        ready = asyncio.Event()
        enrolled = asyncio.Event()
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, main_task.cancel)  # type: ignore[union-attr]

        async def announce() -> None:
            if args.stages:
                await enrolled.wait()
                sys.stdout.write(f"enrolled {args.count}\n")
                sys.stdout.flush()
            await ready.wait()
            sys.stdout.write(f"ready {args.count}\n")
            sys.stdout.flush()

        if args.healthz_floor:
            servers = list(args.server)
            channels = await channels_of(servers, token)
            started = time.perf_counter()
            await healthz_all(
                args.count,
                servers,
                token,
                channels,
                window=args.enroll_window,
                processes=args.enroll_processes,
            )
            sys.stdout.write(f"healthz {time.perf_counter() - started:.3f}\n")
            sys.stdout.flush()
            return
        announcer = asyncio.create_task(announce())
        with contextlib.suppress(asyncio.CancelledError):
            await run_swarm(
                args.server,
                token,
                args.count,
                executor=args.executor,
                concurrency=args.concurrency,
                state_dir=args.state_dir,
                biz=args.biz,
                first=args.first,
                ready=ready,
                enrolled=enrolled,
                connect_window=args.connect_window,
                work_dir=args.work_dir,
                instant_delay=args.instant_delay,
                instant_output=args.instant_output,
                enroll_window=args.enroll_window,
                enroll_processes=args.enroll_processes,
                max_backoff=args.max_backoff,
            )
        announcer.cancel()

    # the standard loop by default: under uvloop the real executor's subprocesses ran 8x
    # slower
    run_on(args.loop, go(), parser)


if __name__ == "__main__":
    main()
