"""What the console's hosts page costs the database for a business of N hosts: the
counts per agent state, one page of 100 hosts, the topology tree, and the same with a
label filter (read in Python) and with an address filter.

    .venv/bin/python bench/host_pages.py [--hosts 10000] [--repeat 5] [--pg URL]

SQLite in a temporary directory, or the PostgreSQL database at ``--pg`` (an empty one:
the bench migrates it and fills it).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from jobfleet.store.database import Database
from jobfleet.store.host_pages import HostPages, HostQuery
from jobfleet.store.inventory import Inventory
from jobfleet.store.tables import hosts
from jobfleet.store.topology import TopologyStore

BIZ = 2


async def fill(db: Database, count: int) -> None:
    now = int(time.time() * 1000)
    rows = [
        {
            "bk_biz_id": BIZ,
            "bk_cloud_id": 0,
            "ip": f"127.{i // 65536}.{i // 256 % 256}.{i % 256}",
            "ipv6": "",
            "agent_id": f"agent-{i}" if i % 4 else None,
            "alive": i % 2,
            "labels": {"shard": str(i % 10), "env": "prod"},
            "hostname": f"host-{i}",
            "os_type": "linux",
            "os_name": "Debian GNU/Linux 12",
            "agent_version": "0.1.0",
            "last_seen": now,
            "create_time": now,
        }
        for i in range(count)
    ]
    async with db.begin() as conn:
        for start in range(0, count, 5000):
            await conn.execute(insert(hosts), rows[start : start + 5000])
    ids = sorted(h.bk_host_id for h in await Inventory(db).list(bk_biz_id=BIZ))
    topo = TopologyStore(db)
    for s in range(10):
        a_set = await topo.create_set(BIZ, f"set-{s}")
        for m in range(10):
            module = await topo.create_module(BIZ, a_set["id"], f"module-{m}")
            chunk = ids[(s * 10 + m) :: 100]
            await topo.move_hosts(BIZ, chunk, [module["id"]], False)


async def timed(repeat: int, step: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        await step()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), min(seconds)


async def run(url: str, count: int, repeat: int) -> None:
    db = Database(url)
    await db.migrate()
    try:
        await fill(db, count)
        pages = HostPages(db)
        cases = {
            "all hosts": HostQuery(bk_biz_id=BIZ),
            "state alive": HostQuery(bk_biz_id=BIZ, state="alive"),
            "address text": HostQuery(bk_biz_id=BIZ, text="10.0.1"),
            "label shard=3": HostQuery(bk_biz_id=BIZ, label="shard=3"),
        }
        print(f"{count} hosts, {url.split(':')[0]}, median (min) of {repeat}")
        for name, query in cases.items():

            async def step(q: HostQuery = query) -> None:
                await pages.counts(q)
                await pages.page(q, 0, 100)
                await pages.tree(BIZ)

            median, best = await timed(repeat, step)
            print(f"  {name:14} counts + page + tree: {median * 1000:7.1f} ms ({best * 1000:.1f})")
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg", help="an empty PostgreSQL database (SQLAlchemy URL)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.pg or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        asyncio.run(run(url, args.hosts, args.repeat))


if __name__ == "__main__":
    main()
