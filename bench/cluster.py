"""One node against three: the same jobs on a single node and on a cluster of three
nodes on one machine, and what a cluster does when a node dies.

Everything runs on loopback: a PostgreSQL cluster of its own (scripts/pg-cluster.sh),
a Redis server of its own, server nodes as processes, hosts from swarm processes
(many real agents in one process, over the real protocol and TLS). Figures:

- submit-to-finished of ``echo hello`` on 1,000 real and 10,000 instant hosts, on
  one node (PostgreSQL, no Redis) and on three nodes (PostgreSQL and Redis, the
  hosts spread over the nodes, the job submitted to the first);
- server CPU per host (all nodes together), Redis commands and database row
  writes per host result;
- 10,000 agents whose node is killed mid job: seconds until every agent is held
  by a live node again, and until the job in flight is finished;
- terminate latency across nodes (job driven by node 0, agents on node 2, the
  terminate sent to node 1);
- memory per connected agent per node.

    .venv/bin/python bench/cluster.py [--instant 10000] [--real 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout import PY, Child, Children, ServerProc, free_port, usage

ROOT = Path(__file__).resolve().parent.parent
ENGINE_FLAGS = ["--agent-lost-grace", "30", "--recovery-window", "60"]
# a PostgreSQL backend flushes its statistics at most this long after going idle
STATS_DELAY = 11.0


@dataclass
class Env:
    children: Children
    work: Path
    pg_admin: str
    redis_port: int

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"


async def start_node(env: Env, name: str, database_url: str, redis_url: str | None,
                     shared_from: Path | None) -> ServerProc:
    data = env.work / name
    if shared_from is not None:
        data.mkdir(parents=True)
        for item in ("secret.key", "bootstrap.json"):
            shutil.copy(shared_from / item, data / item)
        shutil.copytree(shared_from / "tls", data / "tls")
    port = free_port()
    argv = [PY, "-m", "jobfleet", "server", "--data-dir", str(data), "--host", "127.0.0.1",
            "--port", str(port), "--agent-port", str(free_port()), "--log-level", "warning",
            "--enroll-rate", "0", "--database-url", database_url, *ENGINE_FLAGS,
            *(["--redis-url", redis_url] if redis_url else [])]
    child = await env.children.spawn(name, argv)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport()) as http:
        deadline = time.monotonic() + 90
        while True:
            if not child.alive:
                raise RuntimeError(f"{name} exited; see {env.children.log_dir}/{name}.log")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url + "/healthz")).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within 90 s")
            await asyncio.sleep(0.1)
    boot = json.loads(((shared_from or data) / "bootstrap.json").read_text())
    return ServerProc(child, url, boot)


async def start_nodes(env: Env, count: int, database_url: str) -> list[ServerProc]:
    redis_url = env.redis_url if count > 1 else None
    first = await start_node(env, f"{Path(database_url).name}-n0", database_url, redis_url, None)
    shared = env.work / f"{Path(database_url).name}-n0"
    rest = await asyncio.gather(*(
        start_node(env, f"{Path(database_url).name}-n{i}", database_url, redis_url, shared)
        for i in range(1, count)))
    return [first, *rest]


async def start_swarm(env: Env, nodes: list[ServerProc], count: int, executor: str,
                      name: str, delay: float = 0.0, concurrency: int = 16,
                      first: int = 0) -> Child:
    servers = [arg for node in nodes for arg in ("--server", node.url)]
    argv = [PY, "-m", "jobfleet.agent.swarm", *servers, "--count", str(count),
            "--first", str(first),
            "--executor", executor, "--concurrency", str(concurrency),
            "--instant-delay", str(delay), "--work-dir", str(env.work / f"{name}-work")]
    child = await env.children.spawn(name, argv, pipe_stdout=True,
                                     env={"JOBFLEET_ENROLL_TOKEN": nodes[0].boot["enroll_token"]})
    assert child.proc.stdout is not None
    line = await asyncio.wait_for(child.proc.stdout.readline(), 1800)
    if line.decode().strip() != f"ready {count}":
        raise RuntimeError(f"{name}: {line!r}")
    return child


async def new_database(env: Env, name: str) -> str:
    conn = await asyncpg.connect(env.pg_admin.replace("+asyncpg", ""))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return env.pg_admin.rsplit("/", 1)[0] + f"/{name}"


async def db_writes(database_url: str) -> int:
    name = database_url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        row = await conn.fetchrow(
            "SELECT tup_inserted + tup_updated + tup_deleted AS n FROM pg_stat_database "
            "WHERE datname = $1", name)
    finally:
        await conn.close()
    return int(row["n"])


async def redis_commands(env: Env) -> int:
    client = aioredis.Redis(port=env.redis_port)
    try:
        stats: Any = await client.info("stats")
        return int(stats["total_commands_processed"])
    finally:
        await client.aclose()


async def host_ids(node: ServerProc, first: int = 0, count: int | None = None) -> list[int]:
    """The ids of the swarm's hosts ``first`` .. ``first + count``."""
    from jobfleet.agent.swarm import swarm_ip

    async with node.client() as client:
        hosts = await client.list_hosts(bk_biz_id=2)
    by_ip = {h["ip"]: int(h["bk_host_id"]) for h in hosts}
    if count is None:
        return sorted(by_ip.values())
    return [by_ip[swarm_ip(i)] for i in range(first, first + count)]


async def run_job(node: ServerProc, ids: list[int], script: str = "echo hello",
                  timeout: int = 600) -> int:
    async with node.client() as client:
        answer = await client.fast_execute_script(
            script_content=base64.b64encode(script.encode()).decode(), script_language=1,
            account_alias="root", timeout=timeout, target_server={"host_id_list": ids})
    return int(answer["job_instance_id"])


async def wait_status(node: ServerProc, job_id: int, wanted: set[int] | None = None,
                      timeout: float = 600) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    async with node.client() as client:
        while True:
            status = await client.get_job_instance_status(job_id)
            job = status["job_instance"]
            if (wanted is None and status["finished"]) or (wanted and job["status"] in wanted):
                return time.perf_counter() - started, status
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"job {job_id}")
            await asyncio.sleep(0.02)


async def timed(env: Env, nodes: list[ServerProc], ids: list[int], database_url: str,
                clustered: bool) -> dict[str, float]:
    cpu0 = sum(usage(n.child.pid).cpu for n in nodes)
    writes0 = await db_writes(database_url)
    redis0 = await redis_commands(env) if clustered else 0
    began = time.perf_counter()
    job_id = await run_job(nodes[0], ids)
    _, status = await wait_status(nodes[0], job_id)
    seconds = time.perf_counter() - began
    if status["job_instance"]["status"] != 3:
        raise AssertionError(f"job {job_id} ended with {status['job_instance']['status']}")
    cpu = sum(usage(n.child.pid).cpu for n in nodes) - cpu0
    # PostgreSQL reports a backend's row counts once it has been idle a while
    await asyncio.sleep(STATS_DELAY)
    writes = await db_writes(database_url) - writes0
    commands = (await redis_commands(env) - redis0) if clustered else 0
    n = len(ids)
    return {"seconds": seconds, "cpu_ms_per_host": 1000 * cpu / n,
            "db_rows_per_host": writes / n, "redis_cmds_per_host": commands / n}


async def fanout_phase(env: Env, size: int, instant: int, real: int,
                       repeat: int) -> dict[str, Any]:
    clustered = size > 1
    database_url = await new_database(env, f"bench_{size}_{int(time.time())}")
    nodes = await start_nodes(env, size, database_url)
    out: dict[str, Any] = {"nodes": size}
    rss0 = [usage(n.child.pid).rss_mib for n in nodes]
    swarm = await start_swarm(env, nodes, instant, "instant", f"swarm-i-{size}")
    rss1 = [usage(n.child.pid).rss_mib for n in nodes]
    out["rss_kib_per_agent"] = 1024 * sum(b - a for a, b in zip(rss0, rss1, strict=True)) / instant
    ids = await host_ids(nodes[0], 0, instant)
    runs = [await timed(env, nodes, ids, database_url, clustered) for _ in range(repeat)]
    out[f"instant_{instant}"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    await env.children.stop(swarm)
    if real:
        await asyncio.sleep(2)
        # hosts of their own: the instant swarm's hosts keep their credentials
        swarm = await start_swarm(env, nodes, real, "real", f"swarm-r-{size}", first=instant)
        ids = await host_ids(nodes[0], instant, real)
        runs = [await timed(env, nodes, ids, database_url, clustered) for _ in range(repeat)]
        out[f"real_{real}"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        await env.children.stop(swarm)
    for node in nodes:
        await env.children.stop(node.child)
    return out


async def presence_on_live(env: Env, live: set[str]) -> tuple[int, int]:
    client = aioredis.Redis(port=env.redis_port)
    try:
        presence: Any = await client.hgetall("jf:presence")
    finally:
        await client.aclose()
    held = sum(1 for node in presence.values() if node.decode() in live)
    return held, len(presence)


async def failover_phase(env: Env, agents: int) -> dict[str, Any]:
    database_url = await new_database(env, f"bench_failover_{int(time.time())}")
    nodes = await start_nodes(env, 3, database_url)
    swarm = await start_swarm(env, nodes, agents, "instant", "swarm-failover", delay=25.0)
    ids = await host_ids(nodes[0])
    victim = nodes[1]
    live = {(env.work / f"{Path(database_url).name}-n{i}" / "node_id").read_text().strip()
            for i in (0, 2)}
    job_id = await run_job(nodes[0], ids)
    await asyncio.sleep(3)  # every task is out and running on its agent
    cpu0 = [usage(n.child.pid).cpu for n in (nodes[0], nodes[2])]
    killed = time.perf_counter()
    victim.child.proc.kill()
    reconnected = None
    while reconnected is None:
        held, _total = await presence_on_live(env, live)
        if held >= agents:
            reconnected = time.perf_counter() - killed
        elif time.perf_counter() - killed > 300:
            raise TimeoutError(f"only {held} of {agents} agents back")
        await asyncio.sleep(0.1)
    cpu1 = [usage(n.child.pid).cpu for n in (nodes[0], nodes[2])]
    _, status = await wait_status(nodes[0], job_id, timeout=600)
    finished = time.perf_counter() - killed
    result = {"agents": agents, "reconnected_s": reconnected, "job_finished_s_after_kill":
              finished, "job_status": status["job_instance"]["status"],
              "survivors_cpu_s_during_storm": sum(b - a for a, b in zip(cpu0, cpu1, strict=True))}
    await env.children.stop(swarm)
    for node in nodes:
        await env.children.stop(node.child)
    return result


async def terminate_phase(env: Env, repeat: int) -> dict[str, Any]:
    database_url = await new_database(env, f"bench_terminate_{int(time.time())}")
    nodes = await start_nodes(env, 3, database_url)
    swarm = await start_swarm(env, [nodes[2]], 100, "instant", "swarm-term", delay=300.0)
    ids = await host_ids(nodes[0])
    latencies = []
    for _ in range(repeat):
        job_id = await run_job(nodes[0], ids)
        await asyncio.sleep(1.5)
        began = time.perf_counter()
        async with nodes[1].client() as client:
            await client.operate_job_instance(job_instance_id=job_id, operation_code=1)
        await wait_status(nodes[1], job_id, wanted={11})
        latencies.append(time.perf_counter() - began)
    await env.children.stop(swarm)
    for node in nodes:
        await env.children.stop(node.child)
    return {"hosts": 100, "median_s": statistics.median(latencies), "max_s": max(latencies)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="jobfleet-cluster-bench-"))
    children = Children(work)
    # a directory of its own: the cluster's OS user must reach it
    pg_dir = Path(tempfile.mkdtemp(prefix="jobfleet-bench-pg-"))
    pg_admin = subprocess.run([str(ROOT / "scripts" / "pg-cluster.sh"), "start", str(pg_dir)],
                              check=True, capture_output=True, text=True).stdout.strip()
    redis_port = free_port()
    await children.spawn("redis", ["redis-server", "--port", str(redis_port), "--bind",
                                   "127.0.0.1", "--save", "", "--appendonly", "no",
                                   "--dir", str(work)])
    env = Env(children, work, pg_admin, redis_port)
    await asyncio.sleep(0.5)
    report: dict[str, Any] = {"load_before": os.getloadavg()}
    try:
        for size in (1, 3):
            report[f"{size}_node"] = await fanout_phase(env, size, args.instant, args.real,
                                                        args.repeat)
            print(json.dumps(report[f"{size}_node"]), flush=True)
        report["terminate"] = await terminate_phase(env, args.repeat + 2)
        print(json.dumps(report["terminate"]), flush=True)
        report["failover"] = await failover_phase(env, args.instant)
        print(json.dumps(report["failover"]), flush=True)
    finally:
        await children.stop_all()
        subprocess.run([str(ROOT / "scripts" / "pg-cluster.sh"), "stop", str(pg_dir)],
                       check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    report["load_after"] = os.getloadavg()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instant", type=int, default=10_000)
    parser.add_argument("--real", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 instant, 100 real, once")
    args = parser.parse_args()
    if args.quick:
        args.instant, args.real, args.repeat = 1000, 100, 1
    report = asyncio.run(bench(args))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
