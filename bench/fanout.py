"""Submit-to-finished time of ``echo hello`` on N hosts, set against the spawn floor.

A jobfleet server runs as its own process (SQLite in a temporary data dir, on a
free loopback port). Hosts come from a swarm process (many agents in one process
over the real protocol) or from separate ``jobfleet agent`` processes, and are all
connected before any timing starts. One timed run is: POST ``fast_execute_script``,
then poll ``get_job_instance_status`` every 20 ms until it answers ``finished``.
Every run is checked afterwards: each host has status 9 and, with the real
executor, a log of exactly ``hello\\n``.

The floor is the least any agent must do for the same work: the same N
``bash --noprofile --norc <script>`` processes the agent spawns (same argv, an
in-memory script, own session, stdout and stderr piped), started directly by
asyncio, 16 at a time, in a separate process, timed from the first spawn to the
last collected output. The floor runs interleaved with the jobfleet runs so that
both see the same machine.

    .venv/bin/python bench/fanout.py [--sizes 10,100,1000] [--instant-sizes 1000,10000]
                                     [--repeat 3] [--agents 20] [--quick]

Everything it starts is stopped by PID at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from rich.console import Console
from rich.table import Table

from jobfleet.sdk import AsyncJobClient

PY = sys.executable  # never the `python3` on PATH: on these machines it may be a pyenv shim
HERE = Path(__file__).resolve().parent
SCRIPT = "echo hello"
EXPECTED_LOG = "hello\n"
SUCCESS = 9
BIZ = 2
LOG_CHUNK = 500
POLL_SECONDS = 0.02
CLK_TCK = os.sysconf("SC_CLK_TCK")

# From shared/reference/peer-baselines.md (same kind of machine, 2026-11-21): wall
# seconds, median [min] of 3. They include each tool's own start-up (the asyncio
# floor there includes about 0.1 s of interpreter start), which the jobfleet and
# floor figures here do not. "*" marks a single run.
PEERS: dict[int, dict[str, str]] = {
    10: {
        "floor asyncio c=16": "0.117 [0.115]",
        "Ansible raw -f50": "0.74 [0.65]",
        "parallel-ssh pool 100": "0.46 [0.45]",
        "Salt cmd.run": "0.97 [0.97]",
    },
    100: {
        "floor asyncio c=16": "0.239 [0.235]",
        "Ansible raw -f50": "3.15 [2.59]",
        "parallel-ssh pool 100": "2.71 [2.64]",
        "Salt cmd.run": "12.98 [12.83]",
    },
    1000: {
        "floor asyncio c=16": "1.392 [1.349]",
        "Ansible raw -f50": "17.9 [17.7]",
        "parallel-ssh pool 100": "25.2*",
        "Salt cmd.run": "not run",
    },
}


# --- processes ------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: receive SIGTERM if the benchmark itself dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def child_env() -> dict[str, str]:
    """The environment for every child: loopback only, whatever proxies are set."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


class Children:
    """Every process the benchmark starts, so that all of them are stopped by PID."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.items: list[Child] = []

    async def spawn(self, name: str, argv: Sequence[str], *, pipe_stdout: bool = False,
                    env: dict[str, str] | None = None) -> Child:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else log,
            stderr=log,
            env={**child_env(), **(env or {})},
            start_new_session=True,  # Ctrl-C reaches the benchmark, which stops them in order
            preexec_fn=_die_with_parent,
        )
        child = Child(name, proc, log)
        self.items.append(child)
        return child

    async def stop(self, child: Child, grace: float = 15.0) -> None:
        if child.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(child.proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                await child.proc.wait()
        if child.log is not None:
            child.log.close()
            child.log = None
        if child in self.items:
            self.items.remove(child)

    async def stop_all(self) -> None:
        for child in list(self.items):
            if child.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
        for child in list(reversed(self.items)):
            await self.stop(child)


@dataclass
class Usage:
    """One process's counters: CPU seconds (its own, and its reaped children's) and memory."""

    cpu: float
    children_cpu: float
    rss_mib: float
    hwm_mib: float


def usage(pid: int) -> Usage:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # after "pid (comm) ": state is field 3, so utime (14) .. cstime (17) are at 11..14
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    memory: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            memory[key] = int(value.split()[0]) / 1024
    return Usage(
        cpu=(utime + stime) / CLK_TCK,
        children_cpu=(cutime + cstime) / CLK_TCK,
        rss_mib=memory.get("VmRSS", 0.0),
        hwm_mib=memory.get("VmHWM", 0.0),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the floor ------------------------------------------------------------------------


async def floor(n: int, concurrency: int) -> dict[str, Any]:
    """Spawn what the agent spawns for a shell task, n times, ``concurrency`` at a time."""
    import pwd

    from jobfleet.agent.interpreters import find_interpreter
    from jobfleet.domain.status import ScriptLanguage

    prefix = find_interpreter(ScriptLanguage.SHELL) or ["bash", "--noprofile", "--norc"]
    account = pwd.getpwuid(os.getuid())
    base_env = {
        "PATH": os.environ.get("PATH") or "/usr/bin:/bin",
        "HOME": account.pw_dir,
        "USER": account.pw_name,
        "LOGNAME": account.pw_name,
        "SHELL": account.pw_shell,
        "JOBFLEET_HOST_IP": "127.0.0.1",
        "JOBFLEET_CLOUD_ID": "0",
    }
    cwd = account.pw_dir if os.path.isdir(account.pw_dir) else "/"
    slots = asyncio.Semaphore(concurrency)
    script = SCRIPT.encode()

    async def one(i: int) -> bool:
        async with slots:
            # an in-memory script handed over as /dev/fd/N, as the agent's executor does
            fd = os.memfd_create("script.sh", os.MFD_CLOEXEC)
            try:
                os.write(fd, script)
                os.lseek(fd, 0, os.SEEK_SET)
                proc = await asyncio.create_subprocess_exec(
                    *prefix,
                    f"/dev/fd/{fd}",
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=cwd,
                    env={**base_env, "JOBFLEET_TASK_ID": f"floor-{i}"},
                    pass_fds=(fd,),
                )
            finally:
                os.close(fd)
            out, _ = await proc.communicate()
            return proc.returncode == 0 and out.decode() == EXPECTED_LOG

    before = _rusage_cpu()
    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    seconds = time.perf_counter() - started
    cpu = _rusage_cpu()
    return {"n": n, "seconds": seconds, "ok": sum(results), "argv": [*prefix, "/dev/fd/N"],
            "cpu": cpu[0] - before[0], "children_cpu": cpu[1] - before[1]}


def _rusage_cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


async def run_floor(children: Children, n: int, concurrency: int) -> tuple[float, float]:
    """The floor's seconds and CPU seconds (its own and its children's) for n spawns."""
    child = await children.spawn(
        f"floor-{n}",
        [PY, str(Path(__file__).resolve()), "--floor", str(n), "--concurrency", str(concurrency)],
        pipe_stdout=True,
    )
    assert child.proc.stdout is not None
    out = await asyncio.wait_for(child.proc.stdout.read(), 120 + n * 0.1)
    await children.stop(child)
    answer = json.loads(out.decode().strip().splitlines()[-1])
    if answer["ok"] != n:
        raise RuntimeError(f"floor: {answer['ok']} of {n} processes printed {EXPECTED_LOG!r}")
    return float(answer["seconds"]), float(answer["cpu"]) + float(answer["children_cpu"])


# --- jobfleet -------------------------------------------------------------------------


@dataclass
class ServerProc:
    child: Child
    url: str
    boot: dict[str, Any]

    def client(self) -> AsyncJobClient:
        return AsyncJobClient(
            self.url,
            self.boot["bk_app_code"],
            self.boot["bk_app_secret"],
            self.boot["admin_user"],
            biz=BIZ,
            timeout=120,
            # an explicit transport: no proxy from the environment, loopback only
            transport=httpx.AsyncHTTPTransport(),
        )


async def start_server(children: Children, work: Path, name: str,
                       plaintext: bool = False) -> ServerProc:
    port = free_port()
    data = work / name
    argv = [PY, "-m", "jobfleet", "server", "--data-dir", str(data),
            "--host", "127.0.0.1", "--port", str(port), "--agent-port", "0",
            "--log-level", "warning", *(["--agent-plaintext"] if plaintext else []),
            # a whole swarm enrolls from one address
            "--enroll-rate", "0"]
    child = await children.spawn(name, argv)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport()) as http:
        while True:
            if not child.alive:
                raise RuntimeError(f"{name} exited with {child.proc.returncode}; see its log")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url + "/healthz")).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within 60 s")
            await asyncio.sleep(0.1)
    boot = json.loads((data / "bootstrap.json").read_text())
    return ServerProc(child, url, boot)


@dataclass
class Fleet:
    """Connected hosts: who holds them, their ids in index order, and what setup cost."""

    kind: str  # "swarm" or "agents"
    executor: str
    procs: list[Child]
    host_ids: list[int]
    ips: list[str]
    setup_seconds: float
    enroll_seconds: float | None = None  # of setup_seconds, until every host had a credential
    loop: str = "asyncio"  # the swarm's event loop


async def start_swarm(children: Children, server: ServerProc, count: int, executor: str,
                      concurrency: int, name: str, loop: str = "asyncio") -> Fleet:
    from jobfleet.agent.swarm import swarm_ip

    argv = [PY, "-m", "jobfleet.agent.swarm", "--server", server.url,
            "--count", str(count), *(["--loop", loop] if loop != "asyncio" else []),
            "--executor", executor, "--concurrency", str(concurrency), "--stages",
            "--work-dir", str(children.log_dir / f"{name}-work")]
    started = time.perf_counter()
    child = await children.spawn(name, argv, pipe_stdout=True,
                                 env={"JOBFLEET_ENROLL_TOKEN": server.boot["enroll_token"]})
    assert child.proc.stdout is not None
    stages: dict[str, float] = {}
    expected = f"ready {count}"
    while True:
        line = await asyncio.wait_for(child.proc.stdout.readline(), 1200)
        if not line:
            raise RuntimeError(f"{name} exited with {child.proc.returncode} before '{expected}'")
        text = line.decode().strip()
        stages[text.split()[0]] = time.perf_counter() - started
        if text == expected:
            break
    ips = [swarm_ip(i) for i in range(count)]
    ids = await wait_alive(server, ips, [child])
    fleet = Fleet("swarm", executor, [child], ids, ips, time.perf_counter() - started)
    fleet.enroll_seconds = stages.get("enrolled")
    fleet.loop = loop
    return fleet


async def start_agents(children: Children, server: ServerProc, count: int, work: Path) -> Fleet:
    ips = [f"127.0.0.{i + 2}" for i in range(count)]
    started = time.perf_counter()
    procs = []
    for ip in ips:
        argv = [PY, "-m", "jobfleet", "agent", "--server", server.url,
                "--state-dir", str(work / "agents" / ip), "--ip", ip, "--log-level", "warning"]
        procs.append(await children.spawn(
            f"agent-{ip}", argv, env={"JOBFLEET_ENROLL_TOKEN": server.boot["enroll_token"]}))
    ids = await wait_alive(server, ips, procs)
    return Fleet("agents", "real", procs, ids, ips, time.perf_counter() - started)


async def wait_alive(server: ServerProc, ips: list[str], procs: list[Child],
                     timeout: float = 120) -> list[int]:
    """The host ids of ``ips`` once the inventory shows every one of them alive."""
    deadline = time.monotonic() + timeout
    async with server.client() as client:
        while True:
            dead = [c.name for c in procs if not c.alive]
            if dead:
                raise RuntimeError(f"exited before their hosts were up: {', '.join(dead)}")
            hosts = await client.list_hosts(bk_biz_id=BIZ)
            alive = {h["ip"]: int(h["bk_host_id"]) for h in hosts if h.get("alive")}
            missing = [ip for ip in ips if ip not in alive]
            if not missing:
                return [alive[ip] for ip in ips]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(missing)} hosts not alive, e.g. {missing[:3]}")
            await asyncio.sleep(0.1)


@dataclass
class Sample:
    seconds: float  # client: POST sent .. a status answer with finished=true received
    server_ms: int  # the status answer's end_time - create_time
    polls: int
    server_cpu: float
    hosts_cpu: float  # the swarm or agents, their own CPU plus their reaped children's


def _fleet_cpu(fleet: Fleet) -> float:
    total = 0.0
    for child in fleet.procs:
        u = usage(child.pid)
        total += u.cpu + u.children_cpu
    return total


async def timed_job(server: ServerProc, fleet: Fleet, n: int, *, by_ip: bool = False) -> Sample:
    target: dict[str, Any]
    if by_ip:
        target = {"ip_list": [{"bk_cloud_id": 0, "ip": ip} for ip in fleet.ips[:n]]}
    else:
        target = {"host_id_list": fleet.host_ids[:n]}
    request = {
        "script_content": base64.b64encode(SCRIPT.encode()).decode(),
        "script_language": 1,
        "account_alias": "root",
        "timeout": 600,
        "target_server": target,
        "task_name": f"fanout {n}",
    }
    deadline = time.monotonic() + 120 + n * 0.05
    async with server.client() as client:
        await client.whoami()  # the connection is open before the clock starts
        cpu0, hosts0 = usage(server.child.pid).cpu, _fleet_cpu(fleet)
        started = time.perf_counter()
        submitted = await client.fast_execute_script(**request)
        job_id = int(submitted["job_instance_id"])
        polls = 0
        while True:
            status = await client.get_job_instance_status(job_id)
            polls += 1
            if status["finished"]:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} on {n} hosts not finished in time")
            await asyncio.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        cpu1, hosts1 = usage(server.child.pid).cpu, _fleet_cpu(fleet)
        job = status["job_instance"]
        await verify(client, job_id, fleet, n, logs=fleet.executor == "real")
    return Sample(seconds, int(job["end_time"]) - int(job["create_time"]), polls,
                  cpu1 - cpu0, hosts1 - hosts0)


async def verify(client: AsyncJobClient, job_id: int, fleet: Fleet, n: int, *,
                 logs: bool) -> None:
    status = await client.get_job_instance_status(job_id, return_ip_result=True)
    steps = status["step_instance_list"]
    if len(steps) != 1:
        raise AssertionError(f"job {job_id}: {len(steps)} steps")
    step = steps[0]
    results = step.get("step_ip_result_list") or []
    wanted = set(fleet.host_ids[:n])
    got = {int(r["bk_host_id"]) for r in results}
    bad = [r for r in results if int(r["status"]) != SUCCESS]
    if got != wanted or len(results) != n or bad:
        raise AssertionError(
            f"job {job_id}: {len(results)} host results for {n} hosts, "
            f"{len(got ^ wanted)} unexpected, {len(bad)} not status {SUCCESS}"
            + (f", e.g. {bad[0]}" if bad else "")
        )
    if not logs:
        return
    step_id = int(step["step_instance_id"])
    ids = sorted(wanted)
    seen = 0
    for start in range(0, len(ids), LOG_CHUNK):
        chunk = ids[start : start + LOG_CHUNK]
        data = await client.batch_get_job_instance_ip_log(job_id, step_id, host_id_list=chunk)
        items = data.get("script_task_logs") or []
        texts = {int(i["bk_host_id"]): i.get("log_content") for i in items}
        wrong = {h: t for h, t in texts.items() if t != EXPECTED_LOG}
        if set(texts) != set(chunk) or wrong:
            example = next(iter(wrong.items()), None)
            raise AssertionError(
                f"job {job_id}: logs for {len(texts)} of {len(chunk)} hosts, "
                f"{len(wrong)} not {EXPECTED_LOG!r}, e.g. {example}"
            )
        seen += len(texts)
    if seen != n:
        raise AssertionError(f"job {job_id}: {seen} logs for {n} hosts")


# --- the run --------------------------------------------------------------------------


@dataclass
class Row:
    n: int
    executor: str
    hosts: str
    samples: list[Sample] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    floor_cpu: list[float] = field(default_factory=list)

    @property
    def times(self) -> list[float]:
        return [s.seconds for s in self.samples]


@dataclass
class Resources:
    what: str
    server: Usage
    hosts: Usage
    server_cpu_run: float  # CPU seconds over the timed runs of the largest N only
    hosts_cpu_run: float


@dataclass
class Setup:
    what: str
    seconds: float
    enroll_seconds: float | None
    server_rss_mib: float
    hosts_rss_mib: float


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    setups: list[Setup] = field(default_factory=list)
    resources: list[Resources] = field(default_factory=list)


def progress(console: Console, text: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {text}")


async def measure(fleet: Fleet, server: ServerProc, children: Children, sizes: list[int],
                  repeat: int, concurrency: int, console: Console, report: Report,
                  *, with_floor: bool, by_ip: bool = False) -> None:
    label = (f"swarm of {len(fleet.host_ids)}" if fleet.kind == "swarm"
             else f"{len(fleet.procs)} agent processes")
    if fleet.loop != "asyncio":
        label += f" ({fleet.loop})"
    # one untimed job on every host first: code paths, statement caches, pages of bash
    await timed_job(server, fleet, len(fleet.host_ids), by_ip=by_ip)
    if with_floor:
        await run_floor(children, min(sizes), concurrency)
    for n in sizes:
        row = Row(n, fleet.executor, label)
        report.rows.append(row)
        for _ in range(repeat):
            sample = await timed_job(server, fleet, n, by_ip=by_ip)
            row.samples.append(sample)
            text = (f"{fleet.executor} N={n}: {sample.seconds:.3f} s "
                    f"(server {sample.server_ms} ms, {sample.polls} polls)")
            if with_floor:
                seconds, cpu = await run_floor(children, n, concurrency)
                row.floor.append(seconds)
                row.floor_cpu.append(cpu)
                text += f", floor {seconds:.3f} s"
            progress(console, text)


def _resources(what: str, server: ServerProc, fleet: Fleet, row: Row) -> Resources:
    hosts = [usage(c.pid) for c in fleet.procs]
    summed = Usage(
        cpu=sum(u.cpu for u in hosts),
        children_cpu=sum(u.children_cpu for u in hosts),
        rss_mib=sum(u.rss_mib for u in hosts),
        hwm_mib=sum(u.hwm_mib for u in hosts),
    )
    return Resources(
        what,
        usage(server.child.pid),
        summed,
        statistics.median(s.server_cpu for s in row.samples),
        statistics.median(s.hosts_cpu for s in row.samples),
    )


async def phase_swarm(children: Children, work: Path, executor: str, sizes: list[int],
                      args: argparse.Namespace, console: Console, report: Report) -> None:
    count = max(sizes)
    server = await start_server(children, work, f"server-{executor}", args.agent_plaintext)
    progress(console, f"server pid {server.child.pid} at {server.url}; "
                      f"starting a swarm of {count} {executor} hosts")
    loop = args.swarm_loop if executor == "instant" else "asyncio"
    fleet = await start_swarm(children, server, count, executor, args.concurrency,
                              f"swarm-{executor}", loop)
    swarm_pid = fleet.procs[0].pid
    report.setups.append(Setup(
        f"swarm of {count} ({executor}): enroll + connect", fleet.setup_seconds,
        fleet.enroll_seconds, usage(server.child.pid).rss_mib, usage(swarm_pid).rss_mib))
    progress(console, f"swarm pid {swarm_pid}: {count} hosts ready "
                      f"in {fleet.setup_seconds:.1f} s")
    await measure(fleet, server, children, sizes, args.repeat, args.concurrency, console,
                  report, with_floor=executor == "real")
    biggest = report.rows[-1]
    report.resources.append(_resources(f"{executor}, swarm of {count}", server, fleet, biggest))
    for child in fleet.procs:
        await children.stop(child)
    await children.stop(server.child)


async def phase_agents(children: Children, work: Path, count: int, args: argparse.Namespace,
                       console: Console, report: Report) -> None:
    server = await start_server(children, work, "server-agents", args.agent_plaintext)
    progress(console, f"server pid {server.child.pid}; starting {count} agent processes")
    fleet = await start_agents(children, server, count, work)
    report.setups.append(Setup(
        f"{count} agent processes: start + enroll + connect", fleet.setup_seconds, None,
        usage(server.child.pid).rss_mib, sum(usage(c.pid).rss_mib for c in fleet.procs)))
    progress(console, f"{count} agents ready in {fleet.setup_seconds:.1f} s")
    await measure(fleet, server, children, [count], args.repeat, args.concurrency, console,
                  report, with_floor=True, by_ip=True)
    report.resources.append(_resources(f"real, {count} agent processes", server, fleet,
                                       report.rows[-1]))
    for child in fleet.procs:
        await children.stop(child)
    await children.stop(server.child)


# --- output ---------------------------------------------------------------------------


def _s(value: float) -> str:
    return f"{value:.3f}"


def row_cells(row: Row) -> list[str]:
    median = statistics.median(row.times)
    floor_median = statistics.median(row.floor) if row.floor else None
    return [
        str(row.n),
        row.executor,
        row.hosts,
        _s(median),
        _s(min(row.times)),
        _s(floor_median) if floor_median is not None else "-",
        f"{median / floor_median:.2f}x" if floor_median else "-",
        str(int(statistics.median(s.server_ms for s in row.samples))),
        f"{statistics.median(s.server_cpu for s in row.samples):.2f}",
        f"{statistics.median(s.server_cpu + s.hosts_cpu for s in row.samples):.2f}",
        f"{statistics.median(row.floor_cpu):.2f}" if row.floor_cpu else "-",
    ]


HEADERS = ["N", "executor", "hosts", "median s", "min s", "floor median s",
           "ratio", "server-side ms", "server CPU s", "total CPU s", "floor CPU s"]


def table(report: Report) -> Table:
    out = Table(title="jobfleet fan-out: submit to finished (client polls every 20 ms)")
    for header in HEADERS:
        out.add_column(header, justify="left" if header in ("executor", "hosts") else "right")
    for row in report.rows:
        out.add_row(*row_cells(row))
    return out


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if h not in ("executor", "hosts", "what") else "---"
                            for h in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def machine_facts() -> list[str]:
    free = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return [
        f"- nproc: {os.cpu_count()}; CPU: {cpu or platform.processor()}",
        f"- kernel: {platform.release()}; Python {platform.python_version()} ({PY})",
        "- free -h:",
        "",
        "```",
        free.rstrip(),
        "```",
    ]


def markdown(report: Report, command: str, started: datetime.datetime,
             elapsed: float, load: tuple[float, float, float]) -> str:
    end_load = os.getloadavg()
    lines = [
        f"## Fan-out, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}` (whole run {elapsed:.0f} s)",
        "",
        *machine_facts(),
        f"- load average (1, 5, 15 min) at the start: {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}; at the end: {end_load[0]:.2f} {end_load[1]:.2f} {end_load[2]:.2f}",
        "",
        "Time from the `fast_execute_script` POST until a `get_job_instance_status` answer "
        "says `finished: true`, measured by a client polling every 20 ms; server-side is "
        "`end_time - create_time` from that answer. Every run verified: each host status 9, "
        "and with the real executor each log exactly `hello\\n`. Floor: the same "
        "`bash --noprofile --norc /dev/fd/N` spawns the agent makes, by asyncio in its own "
        "process, 16 at a time, interleaved with the jobfleet runs; ratio = jobfleet median / "
        "floor median. Before the timed runs, one untimed job on every host of the phase. "
        "CPU columns are medians per run: server CPU = the server process; total CPU = server "
        "plus the host processes (swarm or agents) with their reaped `bash` children; floor "
        "CPU = the floor process with its `bash` children.",
        "",
        *_md_table(HEADERS, [row_cells(r) for r in report.rows]),
        "",
        "Setup (not timed above):",
        "",
        *_md_table(["what", "seconds", "of which enrolling", "server RSS MiB",
                    "hosts RSS MiB"],
                   [[s.what, f"{s.seconds:.1f}",
                     "-" if s.enroll_seconds is None else f"{s.enroll_seconds:.1f}",
                     f"{s.server_rss_mib:.0f}", f"{s.hosts_rss_mib:.0f}"]
                    for s in report.setups]),
        "",
        "Resources at the end of each phase (peak RSS = VmHWM; CPU = utime+stime since the "
        "process started; per run = median over the timed runs of the largest N; the hosts' "
        "CPU includes the reaped `bash` children):",
        "",
        *_md_table(
            ["what", "server peak RSS MiB", "server CPU s", "server CPU s per run",
             "hosts peak RSS MiB", "hosts CPU s (+children)", "hosts CPU s per run"],
            [[r.what, f"{r.server.hwm_mib:.0f}", f"{r.server.cpu:.1f}",
              f"{r.server_cpu_run:.2f}", f"{r.hosts.hwm_mib:.0f}",
              f"{r.hosts.cpu:.1f} (+{r.hosts.children_cpu:.1f})", f"{r.hosts_cpu_run:.2f}"]
             for r in report.resources]),
        "",
    ]
    peer_ns = sorted({r.n for r in report.rows} & set(PEERS))
    if peer_ns:
        names = list(PEERS[peer_ns[0]])
        lines += [
            "Peers at the same N (peer-baselines.md, 2026-11-21, wall s median [min]; they "
            "include each tool's start-up):",
            "",
            *_md_table(["N", *names], [[str(n), *(PEERS[n][k] for k in names)]
                                       for n in peer_ns]),
            "",
        ]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",") if x.strip()})


async def bench(args: argparse.Namespace, console: Console) -> Report:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    work = Path(tempfile.mkdtemp(prefix="jobfleet-fanout-"))
    children = Children(work)
    report = Report()
    progress(console, f"scratch in {work}")
    try:
        if args.sizes:
            await phase_swarm(children, work, "real", args.sizes, args, console, report)
        if args.instant_sizes:
            await phase_swarm(children, work, "instant", args.instant_sizes, args, console,
                              report)
        if args.agents:
            await phase_agents(children, work, args.agents, args, console, report)
    except Exception:
        console.print(f"[red]failed[/]; logs kept in {work}")
        args.keep = True
        raise
    finally:
        await children.stop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000", help="N for the real executor")
    parser.add_argument("--instant-sizes", default="1000,10000", help="N for the instant one")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--agents", type=int, default=20,
                        help="N separate agent processes (127.0.0.2 …); 0 to skip")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="processes at once, in the swarm and in the floor")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: sizes 10,100, instant 1000, 5 agents, 1 repeat")
    parser.add_argument("--markdown", type=Path, default=HERE / "fanout-latest.md",
                        help="where to write the markdown section")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir and logs")
    parser.add_argument("--agent-plaintext", action="store_true",
                        help="agents talk plain HTTP (default: TLS on the agent port)")
    parser.add_argument("--swarm-loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the instant swarm's event loop: the agent's own (asyncio), or "
                             "uvloop, so that 10,000 simulated hosts in one process take less "
                             "of the CPU the server shares with them")
    parser.add_argument("--floor", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.floor is not None:
        print(json.dumps(asyncio.run(floor(args.floor, args.concurrency))))
        return 0
    if args.quick:
        args.sizes, args.instant_sizes, args.agents, args.repeat = "10,100", "1000", 5, 1
    args.sizes = parse_sizes(args.sizes)
    args.instant_sizes = parse_sizes(args.instant_sizes)
    if args.agents > 254 - 2:
        parser.error("--agents: at most 252 (127.0.0.2 … 127.0.0.253)")
    if os.geteuid() != 0:
        parser.error("runs jobs as account root, so it must run as root")

    console = Console(width=None if sys.stdout.isatty() else 150)
    command = " ".join(
        [os.path.relpath(PY), os.path.relpath(__file__), *(argv or sys.argv[1:])]
    )
    started = datetime.datetime.now(datetime.UTC)
    load = os.getloadavg()
    clock = time.perf_counter()
    try:
        report = asyncio.run(bench(args, console))
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("[yellow]interrupted[/]; everything started was stopped")
        return 130
    elapsed = time.perf_counter() - clock
    console.print(table(report))
    text = markdown(report, command, started, elapsed, load)
    args.markdown.write_text(text)
    console.print(f"markdown section written to {args.markdown}")
    if args.json:
        args.json.write_text(json.dumps(
            {"rows": [asdict(r) for r in report.rows],
             "setups": [asdict(s) for s in report.setups],
             "resources": [asdict(r) for r in report.resources]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
