"""Distribute one file to N hosts with fast_transfer_file, next to the cost of plain cp.

    python bench/transfer.py [--size-mib 1024] [--hosts 10] [--repeat 2] [--small-mib 128]
                             [--peers]

A server and N + 1 agent processes (one source, N targets) run on this machine,
each a host on its own loopback address. Timing runs from the fast_transfer_file
call to ``finished: true``. The floor copies the same file with ``cp`` to N
destinations on the same disk, N at a time. Aggregate throughput = N x size /
time. Peak RSS (VmHWM) of the server and the agents is read from /proc, and the
run is repeated with a smaller file to show that the server's memory does not
grow with the file size. Everything listens on and talks to 127.0.0.1 only.

``--peers`` gives every agent a peer port (``--peer-port``): the targets then take
the file's pieces from each other (peer-to-peer) and the server sends each piece
about once; the table says how many bytes left the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

PY = sys.executable  # never a pyenv shim: it adds ~85 ms to every start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def make_file(path: Path, mib: int) -> None:
    block = os.urandom(1024 * 1024)
    with path.open("wb") as fh:
        for i in range(mib):
            fh.write(block[i % 13:] + block[:i % 13])
        fh.flush()
        os.fsync(fh.fileno())


def drop_targets(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    subprocess.run(["sync"], check=False)


class Fleet:
    def __init__(self, work: Path, hosts: int, peers: bool = False) -> None:
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.server = self._spawn(["server", "--data-dir", str(work / "server"), "--port",
                                   str(self.port), "--agent-port", "0", "--log-level", "warning"])
        self._wait_http()
        boot = json.loads((work / "server" / "bootstrap.json").read_text())
        self.auth = {"X-Bkapi-Authorization": json.dumps({
            "bk_app_code": boot["bk_app_code"], "bk_app_secret": boot["bk_app_secret"],
            "bk_username": boot["admin_user"]})}
        self.ips = [f"127.0.3.{i}" for i in range(1, hosts + 2)]
        token_env = {"JOBFLEET_ENROLL_TOKEN": boot["enroll_token"]}
        self.agents = [self._spawn(["agent", "--server", self.url, "--state-dir", str(work / ip),
                                    "--ip", ip, "--log-level", "warning",
                                    *(["--peer-port", "0", "--peer-listen", ip,
                                       "--peer-address", ip] if peers else [])], token_env)
                       for ip in self.ips]
        self.http = httpx.Client(base_url=self.url, headers=self.auth, timeout=60,
                                 trust_env=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            hosts_alive = self.http.get("/api/jobfleet/v1/hosts").json()["data"]
            if sum(1 for h in hosts_alive if h["alive"]) == len(self.ips):
                return
            time.sleep(0.2)
        raise RuntimeError("agents did not connect")

    def _spawn(self, args: list[str],
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([PY, "-m", "jobfleet", *args], stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc

    def _wait_http(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", trust_env=False).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def transfer(self, path: Path, target: Path) -> float:
        body = {"bk_biz_id": 2, "account_alias": "root", "file_target_path": f"{target}/",
                "file_source_list": [{"file_list": [str(path)], "account": {"alias": "root"},
                                      "server": {"ip_list": [{"ip": self.ips[0],
                                                              "bk_cloud_id": 0}]}}],
                "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0}
                                              for ip in self.ips[1:]]}}
        started = time.perf_counter()
        answer = self.http.post("/api/bk-job/prod/api/v3/fast_transfer_file", json=body).json()
        if not answer["result"]:
            raise RuntimeError(answer)
        job_id = answer["data"]["job_instance_id"]
        while True:
            data = self.http.get("/api/bk-job/prod/api/v3/get_job_instance_status",
                                 params={"bk_biz_id": 2, "job_instance_id": job_id}).json()
            if data["data"]["finished"]:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        if data["data"]["job_instance"]["status"] != 3:
            raise RuntimeError(f"transfer failed: {data}")
        return elapsed

    def close(self) -> None:
        self.http.close()
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def cp_floor(path: Path, root: Path, hosts: int) -> tuple[float, float]:
    """cp to every destination at once; (until cp returns, until the bytes are on disk).

    jobfleet fsyncs every file it writes before reporting success, cp does not,
    so both times are reported."""
    dests = [root / f"d{i}" for i in range(hosts)]
    for d in dests:
        d.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    procs = [subprocess.Popen(["cp", str(path), str(d / path.name)]) for d in dests]
    for proc in procs:
        if proc.wait() != 0:
            raise RuntimeError("cp failed")
    copied = time.perf_counter() - started
    subprocess.run(["sync"], check=True)
    return copied, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--small-mib", type=int, default=128)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--peers", action="store_true", help="agents share pieces (p2p)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jobfleet-transfer-", dir="/var/tmp"))
    fleet = Fleet(work, args.hosts, args.peers)
    results: dict[str, Any] = {}
    try:
        for label, mib in (("small", args.small_mib), ("large", args.size_mib)):
            source = work / f"payload-{mib}.bin"
            make_file(source, mib)
            ours, floor, synced = [], [], []
            for _ in range(args.repeat):
                drop_targets(work / "targets")
                ours.append(fleet.transfer(source, work / "targets"))
                drop_targets(work / "floor")
                copied, flushed = cp_floor(source, work / "floor", args.hosts)
                floor.append(copied)
                synced.append(flushed)
            total = mib * args.hosts
            results[label] = {
                "mib": mib, "ours_s": statistics.median(ours), "floor_s": statistics.median(floor),
                "synced_s": statistics.median(synced),
                "ours_mb_s": total / statistics.median(ours),
                "floor_mb_s": total / statistics.median(floor),
                "synced_mb_s": total / statistics.median(synced),
                "server_rss_mib": peak_rss_mib(fleet.server.pid),
                "agent_rss_mib": max(peak_rss_mib(a.pid) for a in fleet.agents)}
            source.unlink()
    finally:
        fleet.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"| file | hosts | jobfleet s | cp x{args.hosts} s | cp x{args.hosts} + sync s | "
          "jobfleet MB/s | cp MB/s | cp+sync MB/s | ratio to cp | ratio to cp+sync | "
          "server peak RSS MiB | agent peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results.values():
        print(f"| {r['mib']} MiB | {args.hosts} | {r['ours_s']:.2f} | {r['floor_s']:.2f} | "
              f"{r['synced_s']:.2f} | {r['ours_mb_s']:.0f} | {r['floor_mb_s']:.0f} | "
              f"{r['synced_mb_s']:.0f} | {r['ours_mb_s'] / r['floor_mb_s']:.2f} | "
              f"{r['ours_mb_s'] / r['synced_mb_s']:.2f} | {r['server_rss_mib']:.0f} | "
              f"{r['agent_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
