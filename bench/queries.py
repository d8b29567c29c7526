"""Query costs on a finished job of N hosts, on SQLite and on PostgreSQL, each set
against the bare SQL the answer needs, measured in the same run.

For each backend a jobfleet server runs as its own process (SQLite in a temporary
data dir; or a database of its own in a PostgreSQL cluster started with
scripts/pg-cluster.sh), one swarm process holds N hosts (the instant executor,
printing one line per task), and one job runs on all of them. Then, with one HTTP
client over a kept-alive connection:

- ``get_job_instance_status`` with ``return_ip_result``: p50 and p95 of the wall time,
  the body's size raw and with ``Accept-Encoding: gzip``; floor: the bare SELECT of the
  step's host rows through the same driver (sqlite3 or asyncpg), fetched in full;
- ``batch_get_job_instance_ip_log`` for 500 hosts (the bk-job route, its limit) and
  jobfleet's own route for 2,000 hosts; floor: the bare SELECT of those hosts' output;
- ``get_job_instance_ip_log`` for one host by IP (costs what one host costs);
- result visibility: jobs of one host each; the client polls the status every 5 ms and
  counts from the host's ``end_time`` (stamped by the agent when the task ended, same
  machine clock) to the first answer that shows the host finished.

    .venv/bin/python bench/queries.py [--count 10000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enroll import start_server
from fanout import PY, Children, ServerProc, free_port, wait_alive

ROOT = Path(__file__).resolve().parent.parent
V3 = "/api/c/compapi/v2/jobv3/"
OWN = "/api/jobfleet/v1/"
OUTPUT = "hello from the instant executor\n"
BIZ = 2


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


class Api:
    def __init__(self, server: ServerProc) -> None:
        boot = server.boot
        auth = json.dumps({"bk_app_code": boot["bk_app_code"],
                           "bk_app_secret": boot["bk_app_secret"],
                           "bk_username": boot["admin_user"]})
        self.http = httpx.AsyncClient(base_url=server.url, transport=httpx.AsyncHTTPTransport(),
                                      timeout=120, headers={"X-Bkapi-Authorization": auth})

    async def call(self, path: str, body: dict[str, Any], *, gzip_ok: bool = False,
                   ) -> tuple[Any, int]:
        """The answer's data and the bytes that crossed the wire."""
        headers = {"Accept-Encoding": "gzip" if gzip_ok else "identity"}
        response = await self.http.post(path, json=body, headers=headers)
        answer = response.json()
        if not answer.get("result"):
            raise RuntimeError(f"{path}: {answer.get('code')} {answer.get('message')}")
        return answer.get("data"), response.num_bytes_downloaded

    async def close(self) -> None:
        await self.http.aclose()


async def run_job(api: Api, host_ids: list[int], name: str) -> int:
    data, _ = await api.call(V3 + "fast_execute_script", {
        "bk_scope_type": "biz", "bk_scope_id": str(BIZ),
        "script_content": base64.b64encode(b"echo hello").decode(), "script_language": 1,
        "account_alias": "root", "timeout": 600, "task_name": name,
        "target_server": {"host_id_list": host_ids}})
    return int(data["job_instance_id"])


async def wait_finished(api: Api, job_id: int, poll: float) -> dict[str, Any]:
    while True:
        data, _ = await api.call(V3 + "get_job_instance_status", {
            "bk_scope_type": "biz", "bk_scope_id": str(BIZ), "job_instance_id": job_id,
            "return_ip_result": True})
        if data["finished"]:
            return dict(data)
        await asyncio.sleep(poll)


class Floor:
    """The bare SQL of an answer, through the same driver the server uses."""

    def __init__(self, database_url: str | None, data: Path) -> None:
        self.url = database_url
        self.path = data / "jobfleet.db"

    async def fetch(self, sql: str, args: list[Any]) -> int:
        if self.url is None:
            with sqlite3.connect(self.path) as conn:
                return len(conn.execute(re.sub(r"\$\d+", "?", sql), args).fetchall())
        conn = await asyncpg.connect(self.url.replace("+asyncpg", ""))
        try:
            return len(await conn.fetch(sql, *args))
        finally:
            await conn.close()


async def measure(api: Api, floor: Floor, job_id: int, host_ids: list[int], ips: list[str],
                  repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    status, _ = await api.call(V3 + "get_job_instance_status", {
        "bk_scope_type": "biz", "bk_scope_id": str(BIZ), "job_instance_id": job_id})
    step = status["step_instance_list"][0]
    step_id = int(step["step_instance_id"])
    body = {"bk_scope_type": "biz", "bk_scope_id": str(BIZ), "job_instance_id": job_id,
            "return_ip_result": True}

    async def status_raw() -> None:
        data, size = await api.call(V3 + "get_job_instance_status", body)
        out["status_raw_bytes"] = size
        assert len(data["step_instance_list"][0]["step_ip_result_list"]) == len(host_ids)

    async def status_gzip() -> None:
        _, out["status_gzip_bytes"] = await api.call(V3 + "get_job_instance_status", body,
                                                     gzip_ok=True)

    out["status_ms"] = await timed(status_raw, repeat)
    out["status_gzip_ms"] = await timed(status_gzip, repeat)
    rows_sql = ("SELECT * FROM step_hosts WHERE step_instance_id = $1 AND execute_count = $2 "
                "ORDER BY bk_host_id")
    out["status_floor_ms"] = await timed(lambda: floor.fetch(rows_sql, [step_id, 0]), repeat)

    for n, prefix in ((500, V3), (2000, OWN)):
        wanted = host_ids[-n:]
        log_body = {"bk_scope_type": "biz", "bk_scope_id": str(BIZ), "job_instance_id": job_id,
                    "step_instance_id": step_id, "host_id_list": wanted}

        async def logs(body: dict[str, Any] = log_body, prefix: str = prefix,
                       n: int = n) -> None:
            data, _ = await api.call(prefix + "batch_get_job_instance_ip_log", body,
                                     gzip_ok=True)
            got = data["script_task_logs"]
            assert len(got) == n and all(x["log_content"] == OUTPUT for x in got), "bad logs"

        try:
            out[f"logs_{n}_ms"] = await timed(logs, max(3, repeat // 2))
        except RuntimeError as exc:  # a server without jobfleet's own route
            print(f"  logs of {n} hosts: {exc}", flush=True)
            out[f"logs_{n}_ms"] = [float("nan")]
        marks = ",".join(str(int(h)) for h in wanted)
        log_sql = ("SELECT bk_host_id, content FROM log_chunks WHERE step_instance_id = $1 AND "
                   f"execute_count = $2 AND bk_host_id IN ({marks}) ORDER BY bk_host_id, seq")
        out[f"logs_{n}_floor_ms"] = await timed(lambda s=log_sql: floor.fetch(s, [step_id, 0]),
                                                max(3, repeat // 2))

    one = {"bk_scope_type": "biz", "bk_scope_id": str(BIZ), "job_instance_id": job_id,
           "step_instance_id": step_id, "bk_cloud_id": 0, "ip": ips[len(ips) // 2]}

    async def one_log() -> None:
        data, _ = await api.call(V3 + "get_job_instance_ip_log", one)
        assert data["log_content"] == OUTPUT

    out["log_one_by_ip_ms"] = await timed(one_log, repeat)
    return out


async def visibility(api: Api, host_ids: list[int], runs: int) -> list[float]:
    """Milliseconds from a host's end_time to the first status answer that shows it."""
    lags = []
    for i in range(runs):
        job_id = await run_job(api, [host_ids[i]], f"visibility {i}")
        body = {"bk_scope_type": "biz", "bk_scope_id": str(BIZ), "job_instance_id": job_id,
                "return_ip_result": True}
        while True:
            data, _ = await api.call(V3 + "get_job_instance_status", body)
            seen = time.time() * 1000
            hosts = data["step_instance_list"][0].get("step_ip_result_list") or []
            if hosts and hosts[0].get("end_time") and hosts[0]["status"] == 9:
                lags.append(seen - int(hosts[0]["end_time"]))
                break
            await asyncio.sleep(0.005)
        await wait_finished(api, job_id, 0.05)
    return lags


async def new_database(admin_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_url.replace("+asyncpg", ""))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


async def backend(children: Children, work: Path, name: str, database_url: str | None,
                  args: argparse.Namespace) -> dict[str, Any]:
    data = work / name
    server = await start_server(children, data, free_port(), free_port(), name,
                                database_url=database_url)
    argv = [PY, "-m", "jobfleet.agent.swarm", "--server", server.url,
            "--count", str(args.count), "--executor", "instant",
            "--instant-output", OUTPUT, "--work-dir", str(work / f"{name}-swarm")]
    swarm = await children.spawn(f"{name}-swarm", argv, pipe_stdout=True,
                                 env={"JOBFLEET_ENROLL_TOKEN": server.boot["enroll_token"]})
    assert swarm.proc.stdout is not None
    await asyncio.wait_for(swarm.proc.stdout.readline(), 1800)
    from jobfleet.agent.swarm import swarm_ip

    ips = [swarm_ip(i) for i in range(args.count)]
    host_ids = await wait_alive(server, ips, [swarm], timeout=600)
    api = Api(server)
    try:
        job_id = await run_job(api, host_ids, f"queries {args.count}")
        started = time.perf_counter()
        await wait_finished(api, job_id, 0.2)
        out = {"job_s": time.perf_counter() - started}
        out.update(await measure(api, Floor(database_url, data), job_id, host_ids, ips,
                                 args.repeat))
        out["visibility_ms"] = await visibility(api, host_ids, args.visibility_runs)
    finally:
        await api.close()
        await children.stop(swarm)
        await children.stop(server.child)
    return out


def report(name: str, out: dict[str, Any]) -> list[str]:
    def row(what: str, key: str, floor: str | None = None) -> str:
        p50, p95 = pct(out[key], 0.5), pct(out[key], 0.95)
        text = f"  {what:44s} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms"
        if floor:
            f50 = pct(out[floor], 0.5)
            text += f"  floor p50 {f50:7.1f} ms  ratio {p50 / max(f50, 0.01):5.1f}x"
        return text

    return [
        f"{name}: job on all hosts finished in {out['job_s']:.2f} s (polled every 0.2 s)",
        row("status + ip results (identity)", "status_ms", "status_floor_ms"),
        row("status + ip results (gzip)", "status_gzip_ms", "status_floor_ms"),
        f"  status body: {out['status_raw_bytes']:,} bytes raw, "
        f"{out['status_gzip_bytes']:,} bytes gzip",
        row("bk-job batch log, 500 hosts (gzip)", "logs_500_ms", "logs_500_floor_ms"),
        row("jobfleet batch log, 2000 hosts (gzip)", "logs_2000_ms", "logs_2000_floor_ms"),
        row("one host's log by IP", "log_one_by_ip_ms"),
        row("result visible after the task ended", "visibility_ms"),
    ]


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="jobfleet-queries-"))
    children = Children(work)
    results: dict[str, Any] = {"load_start": Path("/proc/loadavg").read_text().split()[:3]}
    pg_dir: Path | None = None
    try:
        for name in args.backends.split(","):
            url = None
            if name == "postgresql":
                pg_dir = Path(tempfile.mkdtemp(prefix="jobfleet-queries-pg-"))
                admin = subprocess.run(
                    [str(ROOT / "scripts" / "pg-cluster.sh"), "start", str(pg_dir)],
                    check=True, capture_output=True, text=True).stdout.strip()
                url = await new_database(admin, "queries")
            results[name] = await backend(children, work, name, url, args)
            print("\n".join(report(name, results[name])), flush=True)
    finally:
        await children.stop_all()
        if pg_dir is not None:
            subprocess.run([str(ROOT / "scripts" / "pg-cluster.sh"), "stop", str(pg_dir)],
                           check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    results["load_end"] = Path("/proc/loadavg").read_text().split()[:3]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/queries.py")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--visibility-runs", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    results = asyncio.run(bench(args))
    print(f"load {' '.join(results['load_start'])} -> {' '.join(results['load_end'])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
