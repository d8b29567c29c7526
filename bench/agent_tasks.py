"""What the agent's executor spends per script task, beyond the spawn itself.

No server and no protocol: the real :class:`ProcessExecutor` (cgroup containment
as root, its watchdog, an in-memory script) runs N ``echo hello`` tasks, 16 at a
time, in one process; the floor (``bench/fanout.py``'s: the same
``bash --noprofile --norc /dev/fd/N`` spawns by asyncio, with nothing else) runs
right after it in the same process, round after round. Every task is checked (status
9, output exactly ``hello\\n``). Per task: the process's own CPU (what the agent
adds shows as the difference from the floor's) and its reaped children's.

    .venv/bin/python bench/agent_tasks.py [--tasks 1000] [--rounds 3] [--times 2]
                                          [--before-src /path/to/other/tree/src]

``--before-src`` measures another tree's agent (e.g. main's) the same way, in
turn with this tree's, ``--times`` times each, so that both see the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRIPT = "echo hello"
EXPECTED = "hello\n"


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


async def _agent_round(executor: Any, n: int, tag: str, concurrency: int) -> list[float]:
    from jobfleet.agent.task import TaskSpec

    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> bool:
        async with slots:
            out: list[str] = []

            async def collect(text: str) -> None:
                out.append(text)

            spec = TaskSpec(id=f"{tag}:{i}", lang=1, script=SCRIPT, args=[], account="root",
                            timeout=60, env={}, max_output=1 << 20)
            result = await executor.run(spec, collect)
            return bool(result.status == 9 and "".join(out) == EXPECTED)

    before = _cpu()
    started = time.perf_counter()
    ok = await asyncio.gather(*(one(i) for i in range(n)))
    seconds = time.perf_counter() - started
    after = _cpu()
    if not all(ok):
        raise SystemExit(f"{n - sum(ok)} of {n} tasks failed")
    return [seconds, after[0] - before[0], after[1] - before[1]]


async def measure(n: int, rounds: int, concurrency: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import jobfleet
    from fanout import floor
    from jobfleet.agent.executor import ProcessExecutor
    from jobfleet.agent.processes import reap_without_threads

    reap_without_threads(asyncio.get_running_loop())
    executor = ProcessExecutor(Path(tempfile.mkdtemp(prefix="jobfleet-agent-tasks-")))
    agent: list[list[float]] = []
    floors: list[list[float]] = []
    try:
        await _agent_round(executor, 50, "warm", concurrency)
        for r in range(rounds):
            agent.append(await _agent_round(executor, n, f"r{r}", concurrency))
            f = await floor(n, concurrency)
            if f["ok"] != n:
                raise SystemExit(f"floor: {n - f['ok']} of {n} spawns failed")
            floors.append([f["seconds"], f["cpu"], f["children_cpu"]])
    finally:
        executor.close()

    def med(rows: list[list[float]], k: int) -> float:
        return statistics.median(row[k] for row in rows)

    return {"src": str(Path(jobfleet.__file__).parent.parent), "n": n,
            "containment": executor.containment,
            "agent": [med(agent, k) for k in range(3)], "floor": [med(floors, k) for k in range(3)]}


def _child(src: str | None, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    argv = [sys.executable, __file__, "--tasks", str(args.tasks), "--rounds", str(args.rounds),
            "--concurrency", str(args.concurrency), "--child"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _line(label: str, r: dict[str, Any]) -> str:
    n = r["n"]
    a, f = r["agent"], r["floor"]
    return (f"| {label} | {r['containment']} | {a[0]:.3f} | {f[0]:.3f} | {a[0] / f[0]:.2f}x | "
            f"{a[1] / n * 1e3:.3f} | {f[1] / n * 1e3:.3f} | {(a[1] - f[1]) / n * 1e3:.3f} | "
            f"{a[2] / n * 1e3:.3f} | {f[2] / n * 1e3:.3f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per process")
    parser.add_argument("--times", type=int, default=2, help="processes per tree, in turn")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--before-src", help="another tree's src directory to measure too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args.tasks, args.rounds, args.concurrency))))
        return 0
    print(f"load at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| tree | containment | agent s | floor s | ratio | agent CPU ms/task | "
          "floor CPU ms/task | extra ms/task | agent children ms/task | floor children ms/task |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for _ in range(args.times):
        if args.before_src:
            print(_line("before", _child(args.before_src, args)), flush=True)
        print(_line("this tree", _child(None, args)), flush=True)
    print(f"load at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
