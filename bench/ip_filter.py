"""The job list filtered by ip on a million jobs: the statements before and after the
address index (migration 0024), alternated on one filled database per backend.

Fills a database as ``bench/list_scale.py --scale 1`` does (1,000,000 jobs of a step and
a host result each over 50 businesses and 85 days; each address ran 50 jobs), then
times the count and the page ``JobReads.list_jobs`` sends for business 2's last 30 days
(~7,000 jobs): "before" is the correlated EXISTS without the index, "after" the IN over
the index. 127.0.0.9 ran no job of business 2, 127.0.0.50 ran 17 in the range. Prints
each plan once per backend and PostgreSQL's own execution times (EXPLAIN ANALYZE).

    pg=$(mktemp -d); url=$(scripts/pg-cluster.sh start $pg)
    flock /work/bench.lock .venv/bin/python bench/ip_filter.py --pg-url $url --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobfleet.store.database import Database
from list_scale import DAY_MS, Load, fill_postgresql, fill_sqlite

IPS = ("127.0.0.9", "127.0.0.50")
INDEX = "CREATE INDEX ix_step_hosts_ip ON step_hosts (ip)"


def statements(now: int, ip: str, after: bool) -> list[str]:
    if after:
        ran = ("job_instances.id IN (SELECT step_instances.job_instance_id FROM step_hosts "
               "JOIN step_instances ON step_instances.id = step_hosts.step_instance_id "
               f"WHERE step_hosts.ip = '{ip}')")
    else:
        ran = ("EXISTS (SELECT 1 FROM step_instances JOIN step_hosts "
               "ON step_hosts.step_instance_id = step_instances.id WHERE "
               f"step_instances.job_instance_id = job_instances.id AND step_hosts.ip = '{ip}')")
    where = (f"scope_type = 'biz' AND scope_id = '2' AND create_time >= {now - 30 * DAY_MS} "
             f"AND create_time <= {now} AND {ran}")
    return [f"SELECT count(*) FROM job_instances WHERE {where}",
            f"SELECT * FROM job_instances WHERE {where} "
            "ORDER BY create_time DESC, id DESC LIMIT 20 OFFSET 0"]


def line(backend: str, rnd: int, after: bool, ip: str, times: list[float]) -> str:
    return (f"{backend} round {rnd} {'after ' if after else 'before'} ip={ip}: count+page "
            f"median {statistics.median(times):.1f} ms (min {min(times):.1f}, "
            f"max {max(times):.1f})")


async def postgresql(admin: str, rounds: int, repeat: int) -> None:
    name = "jf_ip_filter"
    conn = await asyncpg.connect(admin.replace("+asyncpg", ""))
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = admin.rsplit("/", 1)[0] + "/" + name
    db = Database(url)
    await db.migrate()
    await db.close()
    load = Load(1.0)
    await fill_postgresql(url, load)
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        for rnd in range(1, rounds + 1):
            for after in (False, True):
                await conn.execute("DROP INDEX IF EXISTS ix_step_hosts_ip")
                if after:
                    await conn.execute(INDEX)
                await conn.execute("ANALYZE step_hosts")
                for ip in IPS:
                    times = []
                    for _ in range(repeat):
                        t = time.perf_counter()
                        for s in statements(load.now, ip, after):
                            await conn.fetch(s)
                        times.append((time.perf_counter() - t) * 1000)
                    took = []
                    for s in statements(load.now, ip, after):
                        plan = [r[0] for r in await conn.fetch("EXPLAIN (ANALYZE) " + s)]
                        took.append(plan[-1].split(": ")[1])
                        if rnd == 1:
                            print("\n".join("    " + p for p in plan))
                    print(line("postgresql", rnd, after, ip, times)
                          + f"; execution {' + '.join(took)}", flush=True)
    finally:
        await conn.close()
        conn = await asyncpg.connect(admin.replace("+asyncpg", ""))
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def sqlite(rounds: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "jobfleet.db"
        db = Database(f"sqlite+aiosqlite:///{path}")
        await db.migrate()
        await db.close()
        load = Load(1.0)
        fill_sqlite(path, load)
        conn = sqlite3.connect(path, isolation_level=None)
        for rnd in range(1, rounds + 1):
            for after in (False, True):
                conn.execute("DROP INDEX IF EXISTS ix_step_hosts_ip")
                if after:
                    conn.execute(INDEX)
                # the sample the server takes at start and hourly
                conn.execute("PRAGMA analysis_limit=400")
                conn.execute("ANALYZE")
                for ip in IPS:
                    times = []
                    for _ in range(repeat):
                        t = time.perf_counter()
                        for s in statements(load.now, ip, after):
                            conn.execute(s).fetchall()
                        times.append((time.perf_counter() - t) * 1000)
                    if rnd == 1:
                        for s in statements(load.now, ip, after):
                            plan = conn.execute("EXPLAIN QUERY PLAN " + s).fetchall()
                            print("    " + " | ".join(str(r[-1]) for r in plan))
                    print(line("sqlite", rnd, after, ip, times), flush=True)
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/ip_filter.py")
    parser.add_argument("--pg-url", help="a PostgreSQL server's admin URL (none: SQLite only)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    if args.pg_url:
        asyncio.run(postgresql(args.pg_url, args.rounds, args.repeat))
    asyncio.run(sqlite(args.rounds, args.repeat))


if __name__ == "__main__":
    main()
