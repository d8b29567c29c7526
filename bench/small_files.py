"""Distribute a directory of many small files to N hosts, next to the cost of cp -r + sync.

    python bench/small_files.py [--files 1000] [--size-kib 4] [--hosts 10] [--repeat 1]
                                [--peers]

A server and N + 1 agent processes (one source, N targets) run on this machine,
each a host on its own loopback address (``bench/transfer.py``'s fleet). The source
directory holds ``--files`` files of ``--size-kib`` KiB spread over a few
subdirectories, with a few different modes. Timing runs from the
fast_transfer_file call to ``finished: true``. The floor copies the same tree with
``cp -r`` to N destinations on the same disk, N at a time, then ``sync`` (jobfleet
reports a file done only once it is durable). Afterwards every target is checked:
every file present, byte-exact, with its mode. Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transfer import Fleet, drop_targets

API = "/api/bk-job/prod/api/v3"
MODES = (0o644, 0o600, 0o755, 0o640)
PER_DIR = 250


def make_tree(root: Path, files: int, size: int) -> dict[str, tuple[bytes, int]]:
    """``files`` files under ``root``; returns rel path -> (content, mode)."""
    expected: dict[str, tuple[bytes, int]] = {}
    seed = os.urandom(size + 64)
    for i in range(files):
        rel = f"d{i // PER_DIR:03d}/f{i:06d}.conf"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = i.to_bytes(8, "big") + seed[i % 64 : i % 64 + size - 8]
        path.write_bytes(data)
        mode = MODES[i % len(MODES)]
        os.chmod(path, mode)
        expected[rel] = (data, mode)
    subprocess.run(["sync"], check=True)
    return expected


def check_target(root: Path, expected: dict[str, tuple[bytes, int]]) -> list[str]:
    """What is wrong with one target's copy (empty: every file byte-exact, with its mode)."""
    wrong = []
    for rel, (data, mode) in expected.items():
        path = root / rel
        try:
            st = path.stat()
            got = path.read_bytes()
        except OSError as exc:
            wrong.append(f"{path}: {exc}")
            continue
        if got != data:
            wrong.append(f"{path}: content differs")
        if st.st_mode & 0o7777 != mode:
            wrong.append(f"{path}: mode {oct(st.st_mode & 0o7777)} != {oct(mode)}")
    extra = sum(1 for p in root.rglob("*") if p.is_file()) - len(expected)
    if extra:
        wrong.append(f"{root}: {extra} files more than expected")
    return wrong


def transfer(fleet: Fleet, source: str, target: Path) -> tuple[float, int]:
    """Seconds from the call to ``finished: true``, and the job's id."""
    body = {"bk_biz_id": 2, "account_alias": "root", "file_target_path": f"{target}/",
            "file_source_list": [{"file_list": [source], "account": {"alias": "root"},
                                  "server": {"ip_list": [{"ip": fleet.ips[0],
                                                          "bk_cloud_id": 0}]}}],
            "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0}
                                          for ip in fleet.ips[1:]]}}
    started = time.perf_counter()
    answer = fleet.http.post(f"{API}/fast_transfer_file", json=body).json()
    if not answer["result"]:
        raise RuntimeError(answer)
    job_id = int(answer["data"]["job_instance_id"])
    while True:
        data = fleet.http.get(f"{API}/get_job_instance_status",
                              params={"bk_biz_id": 2, "job_instance_id": job_id}).json()
        if data["data"]["finished"]:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    if data["data"]["job_instance"]["status"] != 3:
        raise RuntimeError(f"transfer failed: {str(data)[:2000]}")
    return elapsed, job_id


def check_logs(fleet: Fleet, job_id: int, files: int) -> list[str]:
    """Every target's file log has every file downloaded, the source's every file uploaded."""
    status = fleet.http.get(f"{API}/get_job_instance_status",
                            params={"bk_biz_id": 2, "job_instance_id": job_id}).json()
    step_id = status["data"]["step_instance_list"][0]["step_instance_id"]
    logs = fleet.http.post(f"{API}/batch_get_job_instance_ip_log", json={
        "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
        "ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in fleet.ips]}).json()
    wrong = []
    by_ip = {h["ip"]: h["file_logs"] or [] for h in logs["data"]["file_task_logs"] or []}
    for n, ip in enumerate(fleet.ips):
        mode = 0 if n == 0 else 1
        done = sum(1 for f in by_ip.get(ip, []) if f["mode"] == mode and f["status"] == 4
                   and f["src_path"].endswith(".conf"))
        if done != files:
            wrong.append(f"{ip}: {done} of {files} files {'up' if mode == 0 else 'down'}loaded")
    return wrong


def cp_floor(tree: Path, root: Path, hosts: int) -> float:
    """cp -r of the tree to every destination at once, then sync."""
    for i in range(hosts):
        (root / f"d{i}").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    procs = [subprocess.Popen(["cp", "-rp", str(tree), str(root / f"d{i}/")])
             for i in range(hosts)]
    for proc in procs:
        if proc.wait() != 0:
            raise RuntimeError("cp failed")
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size-kib", type=int, default=4)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--peers", action="store_true", help="agents have peer ports")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jobfleet-small-", dir="/var/tmp"))
    fleet = Fleet(work, args.hosts, args.peers)
    ours: list[float] = []
    floors: list[float] = []
    try:
        tree = work / "tree"
        expected = make_tree(tree, args.files, args.size_kib * 1024)
        for _ in range(args.repeat):
            drop_targets(work / "targets")
            elapsed, job_id = transfer(fleet, f"{tree}/", work / "targets")
            ours.append(elapsed)
            # every host writes under the same target path on this one machine: the tree
            # is checked on disk, and each host's file log says it wrote every file
            wrong = check_target(work / "targets" / "tree", expected)
            wrong += check_logs(fleet, job_id, args.files)
            if wrong:
                raise RuntimeError(f"{len(wrong)} problems, first: {wrong[:5]}")
            drop_targets(work / "floor")
            floors.append(cp_floor(tree, work / "floor", args.hosts))
            for i in range(args.hosts):
                wrong = check_target(work / "floor" / f"d{i}" / "tree", expected)
                if wrong:
                    raise RuntimeError(f"floor copy wrong: {wrong[:5]}")
    finally:
        fleet.close()
        shutil.rmtree(work, ignore_errors=True)
    ours_s, floor_s = statistics.median(ours), statistics.median(floors)
    total = args.files * args.hosts
    print(f"| files | KiB | hosts | jobfleet s | files/s | cp -r x{args.hosts} + sync s | "
          "files/s | ratio (jobfleet / floor time) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.files} | {args.size_kib} | {args.hosts} | {ours_s:.2f} | {total / ours_s:.0f} "
          f"| {floor_s:.2f} | {total / floor_s:.0f} | {ours_s / floor_s:.1f} |")
    print(f"runs: jobfleet {[round(x, 2) for x in ours]} floor {[round(x, 2) for x in floors]}")


if __name__ == "__main__":
    main()
