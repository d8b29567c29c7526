"""Distribute a file from a third-party HTTP file source (file_type 3) to N hosts.

    python bench/file_source_download.py [--size-mib 512] [--small-mib 64] [--hosts 4]

A server and N agent processes run on this machine, each agent a host on its own
loopback address, and an HTTP artifact server (basic authentication) serves the
file from disk. Timing runs from the fast_transfer_file call to ``finished:
true``: the server downloads the file into its file store (the step's first
phase), then the targets fetch it. The floor is one plain streamed download of
the same file to disk. Peak RSS (VmHWM) of the server is read from /proc after a
small and after a large file, to show that the download phase does not hold the
file in memory. Everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from transfer import Fleet, drop_targets, make_file, peak_rss_mib

USER, PASSWORD = "bench", "bench-secret"


class SourceFleet(Fleet):
    """The fleet of ``transfer.py`` with a server that may fetch from loopback."""

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> Any:
        if args[0] == "server":
            args = [*args, "--callback-allow", "127.0.0.0/8"]
        return super()._spawn(args, env)


def artifact_server(root: Path) -> ThreadingHTTPServer:
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = root / self.path.lstrip("/")
            if self.headers.get("Authorization") != expected or not path.is_file():
                self.send_response(401 if path.is_file() else 404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            with path.open("rb") as fh:
                shutil.copyfileobj(fh, self.wfile, 1 << 20)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def api(fleet: Fleet, name: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = fleet.http.post(f"/api/bk-job/prod/api/v3/{name}", json={"bk_biz_id": 2, **body})
    data = answer.json()
    if not data["result"]:
        raise RuntimeError(data)
    return dict(data["data"])


def distribute(fleet: Fleet, name: str, target: Path) -> float:
    started = time.perf_counter()
    job = api(fleet, "fast_transfer_file", {
        "account_alias": "root", "file_target_path": f"{target}/",
        "file_source_list": [{"file_type": 3, "file_source_code": "bench", "file_list": [name]}],
        "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in fleet.ips]}})
    while True:
        data = fleet.http.get("/api/bk-job/prod/api/v3/get_job_instance_status", params={
            "bk_biz_id": 2, "job_instance_id": job["job_instance_id"]}).json()["data"]
        if data["finished"]:
            break
        time.sleep(0.05)
    if data["job_instance"]["status"] != 3:
        raise RuntimeError(f"transfer failed: {data}")
    return time.perf_counter() - started


def floor(url: str, dest: Path) -> float:
    started = time.perf_counter()
    with httpx.stream("GET", url, auth=(USER, PASSWORD), trust_env=False) as resp, \
            dest.open("wb") as fh:
        for chunk in resp.iter_bytes(1 << 20):
            fh.write(chunk)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--small-mib", type=int, default=64)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jobfleet-source-", dir="/var/tmp"))
    (work / "files").mkdir()
    source = artifact_server(work / "files")
    base = f"http://127.0.0.1:{source.server_address[1]}"
    # Fleet's first host is a source host in transfer.py; here every host is a target
    fleet = SourceFleet(work, args.hosts - 1)
    rows = []
    try:
        cred = api(fleet, "create_credential", {"name": "bench", "type": "USERNAME_PASSWORD",
                                               "credential_username": USER,
                                               "credential_password": PASSWORD})
        api(fleet, "create_file_source", {"code": "bench", "alias": "bench", "type": "HTTP",
                                          "access_params": {"base_url": base},
                                          "credential_id": cred["id"]})
        for label, mib in (("small", args.small_mib), ("large", args.size_mib)):
            name = f"payload-{mib}.bin"
            make_file(work / "files" / name, mib)
            ours, plain = [], []
            for _ in range(args.repeat):
                drop_targets(work / "targets")
                ours.append(distribute(fleet, name, work / "targets"))
                plain.append(floor(f"{base}/{name}", work / "floor.bin"))
            rows.append((label, mib, statistics.median(ours), statistics.median(plain),
                         peak_rss_mib(fleet.server.pid)))
            (work / "files" / name).unlink()
    finally:
        fleet.close()
        source.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print("| file | MiB | hosts | jobfleet s (download + distribution) | one plain download s "
          "| server peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, mib, ours_s, plain_s, rss in rows:
        print(f"| {label} | {mib} | {args.hosts} | {ours_s:.2f} | {plain_s:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
