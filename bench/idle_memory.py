"""The idle server's memory: RSS of a server with no agent, on a new data dir (the
first start, which builds the schema) and started again on it (every later start),
then after one ``/readyz`` and one ``/metrics``; each after ``--settle`` seconds.

    .venv/bin/python bench/idle_memory.py [--repeat 3] [--settle 3]

Run it with ``PYTHONPATH=<an export of another revision>/src`` to measure that one
with the same script.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enroll import start_server
from fanout import Children, free_port, usage


async def one(settle: float) -> tuple[float, float, float]:
    work = Path(tempfile.mkdtemp(prefix="jobfleet-idle-"))
    children = Children(work)
    data = work / "server"
    port, agent_port = free_port(), free_port()
    try:
        server = await start_server(children, data, port, agent_port, "server")
        await asyncio.sleep(settle)
        first = usage(server.child.pid).rss_mib
        await children.stop(server.child)
        server = await start_server(children, data, port, agent_port, "server2")
        await asyncio.sleep(settle)
        again = usage(server.child.pid).rss_mib
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport()) as http:
            await http.get(server.url + "/readyz")
            await http.get(server.url + "/metrics")
        await asyncio.sleep(settle)
        probed = usage(server.child.pid).rss_mib
        await children.stop(server.child)
    finally:
        await children.stop_all()
    shutil.rmtree(work, ignore_errors=True)
    return first, again, probed


async def bench(repeat: int, settle: float) -> None:
    rows = [await one(settle) for _ in range(repeat)]
    for name, i in (("first start", 0), ("started again", 1), ("then /readyz, /metrics", 2)):
        values = [r[i] for r in rows]
        print(f"{name:24s} median {statistics.median(values):6.1f} MiB "
              f"({', '.join(f'{v:.1f}' for v in values)})")


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/idle_memory.py")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args()
    asyncio.run(bench(args.repeat, args.settle))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
