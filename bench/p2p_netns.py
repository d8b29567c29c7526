"""Peer-to-peer file distribution over rate-limited links, in network namespaces.

    sudo python bench/p2p_netns.py [--size-mib 256] [--hosts 20] [--rate-mbit 100]
    sudo python bench/p2p_netns.py --quick          # 64 MiB to 10 hosts

Creates one namespace for the server and one per host, each with a veth pair into
a bridge (itself in a namespace of its own), every link limited to ``--rate-mbit``
in both directions with ``tc``; runs a real server and real agents inside them
(``ip netns exec``). The file is uploaded to the server first (over its loopback,
not its link), then sent with ``fast_transfer_file``, timed from the call to
``finished``:

- one host: the floor, next to the link's own time (size / rate);
- every host through the server alone (agents without a peer port);
- every host peer-to-peer (agents with ``--peer-port``).

The server's transmitted bytes are read from its interface. Everything this
creates (namespaces, links, processes, files) is removed at the end, also after
a failure or ctrl-C. Traffic stays inside the namespaces. Needs root, ``ip``, ``tc``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PY = sys.executable
HERE = Path(__file__).resolve()
SUBNET = "10.213"
PORT, AGENT_PORT, PEER_PORT = 8080, 8443, 7070


def ip_of(i: int) -> str:
    """Address of member ``i`` (0 is the server)."""
    return f"{SUBNET}.{i // 250}.{i % 250 + 1}"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


class Topology:
    """The namespaces, links and rate limits; ``remove`` undoes all of it."""

    def __init__(self, hosts: int, rate_mbit: int) -> None:
        tag = f"jfp{os.getpid() % 100000}"
        self.bridge_ns = f"{tag}-br"
        self.names = [f"{tag}-srv"] + [f"{tag}-h{k}" for k in range(1, hosts + 1)]
        self.rate = f"{rate_mbit}mbit"
        self.created: list[str] = []

    def build(self) -> None:
        sh("ip", "netns", "add", self.bridge_ns)
        self.created.append(self.bridge_ns)
        sh("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, ns in enumerate(self.names):
            sh("ip", "netns", "add", ns)
            self.created.append(ns)
            port = f"p{i}"
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth",
               "peer", "name", port, "netns", self.bridge_ns)
            sh("ip", "-n", ns, "addr", "add", f"{ip_of(i)}/16", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
            # both directions of the host's link: what it sends, and what reaches it
            for where, dev in ((ns, "eth0"), (self.bridge_ns, port)):
                sh("ip", "netns", "exec", where, "tc", "qdisc", "add", "dev", dev, "root",
                   "tbf", "rate", self.rate, "burst", "256kb", "latency", "100ms")

    def remove(self) -> None:
        for ns in reversed(self.created):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], check=False,
                           stderr=subprocess.DEVNULL)
        self.created.clear()


# --- inside the server's namespace --------------------------------------------------


class Fleet:
    def __init__(self, work: Path, names: list[str]) -> None:
        import httpx

        self.work = work
        self.names = names
        self.url = f"http://{ip_of(0)}:{PORT}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.agents: list[subprocess.Popen[bytes]] = []
        self.server = self._spawn(None, ["server", "--data-dir", str(work / "server"),
                                         "--host", ip_of(0), "--port", str(PORT),
                                         "--agent-port", str(AGENT_PORT),
                                         "--log-level", "warning"])
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", trust_env=False).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        boot = json.loads((work / "server" / "bootstrap.json").read_text())
        self.token = boot["enroll_token"]
        self.http = httpx.Client(base_url=self.url, timeout=120, trust_env=False, headers={
            "X-Bkapi-Authorization": json.dumps({
                "bk_app_code": boot["bk_app_code"], "bk_app_secret": boot["bk_app_secret"],
                "bk_username": boot["admin_user"]})})

    def _spawn(self, ns: str | None, args: list[str]) -> subprocess.Popen[bytes]:
        prefix = ["ip", "netns", "exec", ns] if ns else []
        proc = subprocess.Popen([*prefix, PY, "-m", "jobfleet", *args], stdin=subprocess.DEVNULL,
                                start_new_session=True,
                                env={**os.environ, "JOBFLEET_ENROLL_TOKEN": self.token}
                                if ns else None)
        self.procs.append(proc)
        return proc

    def start_agents(self, peers: bool) -> None:
        self.stop_agents()
        for k, ns in enumerate(self.names[1:], start=1):
            ip = ip_of(k)
            extra = ["--peer-port", str(PEER_PORT), "--peer-listen", ip,
                     "--peer-address", ip] if peers else []
            self.agents.append(self._spawn(ns, ["agent", "--server", self.url, "--state-dir",
                                                str(self.work / f"agent-{k}"), "--ip", ip,
                                                "--log-level", "warning", *extra]))
        wanted = {ip_of(k) for k in range(1, len(self.names))}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            hosts = self.http.get("/api/jobfleet/v1/hosts").json()["data"]
            # a restarted agent is alive once it said hello again (with or without a port)
            if wanted <= {h["ip"] for h in hosts if h["alive"]}:
                time.sleep(3)
                return
            time.sleep(0.5)
        raise RuntimeError("agents did not connect")

    def stop_agents(self) -> None:
        for proc in self.agents:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.agents:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.agents.clear()
        # the server marks them offline after their connections close
        time.sleep(1)

    def upload(self, path: Path) -> str:
        with path.open("rb") as fh:
            answer = self.http.post("/api/jobfleet/v1/files", params={
                "name": path.name, "bk_biz_id": 2}, content=fh).json()
        if not answer["result"]:
            raise RuntimeError(answer)
        return str(answer["data"]["path"])

    def transfer(self, source: str, targets: list[str], dest: Path) -> float:
        body = {"bk_biz_id": 2, "account_alias": "root", "file_target_path": f"{dest}/",
                "file_source_list": [{"file_type": 2, "file_list": [source]}],
                "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in targets]}}
        started = time.perf_counter()
        answer = self.http.post("/api/bk-job/prod/api/v3/fast_transfer_file", json=body).json()
        if not answer["result"]:
            raise RuntimeError(answer)
        job = answer["data"]["job_instance_id"]
        while True:
            data = self.http.get("/api/bk-job/prod/api/v3/get_job_instance_status",
                                 params={"bk_biz_id": 2, "job_instance_id": job}).json()
            if data["data"]["finished"]:
                break
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        if data["data"]["job_instance"]["status"] != 3:
            raise RuntimeError(f"transfer failed: {json.dumps(data)[:2000]}")
        return elapsed

    def close(self) -> None:
        self.http.close()
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)


def tx_bytes() -> int:
    return int(Path("/sys/class/net/eth0/statistics/tx_bytes").read_text())


def make_file(path: Path, mib: int) -> None:
    block = os.urandom(1024 * 1024)
    with path.open("wb") as fh:
        for i in range(mib):
            fh.write(block[i % 13:] + block[:i % 13])


def inner(args: argparse.Namespace) -> None:
    names = args.names.split(",")
    hosts = len(names) - 1
    work = Path(args.work)
    fleet = Fleet(work, names)
    results: dict[str, Any] = {}
    try:
        payload = work / "payload.bin"
        make_file(payload, args.size_mib)
        source = fleet.upload(payload)
        payload.unlink()
        everyone = [ip_of(k) for k in range(1, hosts + 1)]
        runs = [("one host", False, everyone[:1]), ("through the server", False, everyone),
                ("peer-to-peer", True, everyone)]
        for label, peers, targets in runs:
            if label == "through the server" and args.skip_server:
                continue
            fleet.start_agents(peers)
            dest = work / "targets"
            shutil.rmtree(dest, ignore_errors=True)
            sent = tx_bytes()
            seconds = fleet.transfer(source, targets, dest)
            results[label] = {"hosts": len(targets), "seconds": seconds,
                              "server_mib": (tx_bytes() - sent) / 2**20}
            print(f"{label}: {len(targets)} hosts {seconds:.1f} s", file=sys.stderr, flush=True)
            shutil.rmtree(dest, ignore_errors=True)
    finally:
        fleet.close()
    print(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--rate-mbit", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="64 MiB to 10 hosts")
    parser.add_argument("--skip-server", action="store_true",
                        help="leave out the (slow) through-the-server run")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--names", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args)
        return
    if args.quick:
        args.size_mib, args.hosts = 64, 10
    if os.geteuid() != 0:
        sys.exit("needs root (ip netns, tc)")
    load = Path("/proc/loadavg").read_text().split()[:3]
    topology = Topology(args.hosts, args.rate_mbit)
    work = Path(tempfile.mkdtemp(prefix="jobfleet-p2p-", dir="/var/tmp"))
    # ctrl-C and kill both end in the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        topology.build()
        command = ["ip", "netns", "exec", topology.names[0], PY, str(HERE), "--inner",
                   "--names", ",".join(topology.names), "--work", str(work),
                   "--size-mib", str(args.size_mib)]
        if args.skip_server:
            command.append("--skip-server")
        out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True,
                             cwd=HERE.parent.parent).stdout
        results = json.loads(out.strip().splitlines()[-1])
    finally:
        topology.remove()
        shutil.rmtree(work, ignore_errors=True)
    link_s = args.size_mib * 2**20 * 8 / (args.rate_mbit * 1e6)
    one = results["one host"]["seconds"]
    print(f"load before: {' '.join(load)}; after: "
          f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print(f"{args.size_mib} MiB, {args.hosts} hosts, {args.rate_mbit} Mbit/s per link; "
          f"link time for one copy {link_s:.1f} s")
    print("| run | hosts | seconds | x one host | x link time | server sent MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, r in results.items():
        print(f"| {label} | {r['hosts']} | {r['seconds']:.1f} | {r['seconds'] / one:.2f} | "
              f"{r['seconds'] / link_s:.2f} | {r['server_mib']:.0f} |")


if __name__ == "__main__":
    main()
