"""An alert storm on one self-healing rule: how long the last webhook call waits.

``--calls`` webhook calls posted at once to one rule, each of ``--alerts`` firing alerts
naming hosts of the business (one host an alert, every alert its own fingerprint), on a
server in this process (SQLite in a temporary directory, or ``--database-url``). The
rule starts its plan (no agent runs it) until its rate limit (10 jobs a window), then
skips; every alert gets its decision. Prints each call's answer time, the last one's,
and the decisions' count by outcome.

    PYTHONPATH=. .venv/bin/python bench/heal_storm.py [--calls 10] [--alerts 500] \
        [--database-url URL]

(``PYTHONPATH=.``: the server is started as the integration tests start theirs.) A
PostgreSQL URL names a cluster where a fresh database is made for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import hmac
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.integration.harness import run_server
from tests.integration.test_self_healing import OWN, SECRET, make_plan

from jobfleet.store.database import now_ms
from jobfleet.store.tables import hosts


def payload(call: int, alerts: int) -> bytes:
    items = []
    for i in range(alerts):
        ip = f"127.1.{i // 250}.{i % 250 + 1}"
        labels = {"alertname": "HighDisk", "severity": "critical", "instance": ip}
        items.append({"status": "firing", "labels": labels, "annotations": {},
                      "fingerprint": hashlib.sha256(f"{call}-{ip}".encode()).hexdigest()[:16]})
    return json.dumps({"version": "4", "status": "firing", "alerts": items}).encode()


async def fresh_database(url: str) -> str:
    """A new, empty PostgreSQL database next to the one ``url`` names."""
    name = f"heal_storm_{os.getpid()}"
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    await engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/jobfleet.db"
        if url.startswith("postgresql"):
            url = await fresh_database(url)
        async with run_server(Path(tmp), url) as running:
            server = running.server
            async with server.db.begin() as conn:
                await conn.execute(insert(hosts), [
                    {"bk_biz_id": 2, "bk_cloud_id": 0, "ip": f"127.1.{i // 250}.{i % 250 + 1}",
                     "hostname": "", "bk_host_id": 10_000 + i, "create_time": now_ms()}
                    for i in range(args.alerts)])
            plan_id = await make_plan(running.wire, "true")
            made = await running.wire.post(f"{OWN}/businesses/2/heal-rules", {
                "name": "storm", "job_plan_id": plan_id, "secret": SECRET,
                "host_variable": "target", "variables": {"alarm": "{{alertname}}"}})
            assert made["result"], made
            rule_id = made["data"]["id"]
            bodies = [payload(c, args.alerts) for c in range(args.calls)]

            async def post(http: httpx.AsyncClient, body: bytes) -> tuple[float, Any]:
                digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                began = time.perf_counter()
                resp = await http.post(f"{OWN}/heal/hooks/{rule_id}", content=body, headers={
                    "X-Jobfleet-Signature": f"sha256={digest}",
                    "Content-Type": "application/json"})
                return time.perf_counter() - began, resp.json()

            async with httpx.AsyncClient(base_url=running.url, trust_env=False,
                                         timeout=600) as http:
                began = time.perf_counter()
                answers = await asyncio.gather(*(post(http, b) for b in bodies))
                total = time.perf_counter() - began
            outcomes: collections.Counter[str] = collections.Counter()
            for _took, answer in answers:
                assert answer["result"], answer
                outcomes.update(d["decision"] for d in answer["data"]["decisions"])
            times = sorted(t for t, _ in answers)
            decided = sum(outcomes.values())
            print(f"database: {url.split(':')[0]}  calls: {args.calls} x {args.alerts} alerts")
            print(f"answers, s: first {times[0]:.2f}  median {statistics.median(times):.2f}  "
                  f"last {times[-1]:.2f}  (all posted at once; {total:.2f} s in all)")
            print(f"per decision: {total / decided * 1000:.2f} ms  decisions: {dict(outcomes)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--alerts", type=int, default=500)
    parser.add_argument("--database-url", default="")
    asyncio.run(main(parser.parse_args()))
