"""List and query routes on a database a year old, against the same routes on a small one.

For each backend (SQLite in a temporary data dir; PostgreSQL in a cluster started with
scripts/pg-cluster.sh) and each size (``--floor-scale``, then ``--scale``), a jobfleet
server migrates an empty database and stops; the bench fills the store's tables in bulk
(``executemany`` on SQLite, ``COPY`` on PostgreSQL, then PostgreSQL's ``ANALYZE`` as its
autovacuum would have run; SQLite's are the sampled ANALYZE the server runs as it
starts), starts the server again and times each route over one kept-alive connection
(p50 and p95 of ``--repeat`` calls). The periodic queries (retention, cron scheduler,
outbox) have no route: they are timed through their store classes in the bench's
process. Each probe then runs once more through the store in the bench's process, which
records the SQL it sends and prints its plan (``EXPLAIN QUERY PLAN`` / ``EXPLAIN``).

At ``--scale 1``: 1,000,000 jobs (a step, a host result and a log chunk each) over 50
businesses and 85 days (inside the default 90-day retention), 20,000 scripts of 3
versions, 5,000 templates and plans, 2,000 crons, 100,000 audit rows, 100,000
self-healing decisions, 50,000 outbox rows, 20,000 hosts, 10 accounts per business.

    flock /work/bench.lock .venv/bin/python bench/list_scale.py [--scale 1] \\
        [--floor-scale 0.001] [--backends sqlite,postgresql] [--plans]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import JSON, Boolean, Float, Integer, Table, event
from sqlalchemy.engine import Connection

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout import PY, Children, ServerProc, free_port
from jobfleet.store.accounts import AccountStore
from jobfleet.store.audit import AuditLog, AuditQuery
from jobfleet.store.crons import CronStore
from jobfleet.store.database import Database
from jobfleet.store.host_pages import HostPages, HostQuery
from jobfleet.store.job_reads import JobReads
from jobfleet.store.outbox import OutboxStore
from jobfleet.store.plans import PlanStore
from jobfleet.store.retention import RetentionStore
from jobfleet.store.scripts import ScriptStore
from jobfleet.store.tables import (
    accounts,
    audit_log,
    businesses,
    crons,
    heal_decisions,
    heal_rules,
    hosts,
    job_instances,
    job_plans,
    job_templates,
    log_chunks,
    outbox,
    script_versions,
    scripts,
    step_hosts,
    step_instances,
)
from jobfleet.store.templates import ListFilter

ROOT = Path(__file__).resolve().parent.parent
V3 = "/api/c/compapi/v2/jobv3/"
OWN = "/api/jobfleet/v1/"
BIZ = 2
DAY_MS = 86_400_000
SPAN_DAYS = 85
FULL = {
    "businesses": 50, "jobs": 1_000_000, "scripts": 20_000, "templates": 5_000,
    "crons": 2_000, "audit": 100_000, "heal": 100_000, "outbox": 50_000, "hosts": 20_000,
}
OPERATORS = [f"user{i}" for i in range(20)]


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# filling -----------------------------------------------------------------------------


def _blank(table: Table) -> dict[str, Any]:
    """A value for every column a raw INSERT must name (Python-side defaults included)."""
    out: dict[str, Any] = {}
    for column in table.c:
        default = column.default
        if default is not None and getattr(default, "is_scalar", False):
            out[column.name] = default.arg  # type: ignore[attr-defined]
        elif column.nullable:
            out[column.name] = None
        elif isinstance(column.type, JSON):
            out[column.name] = "{}"
        elif isinstance(column.type, Boolean):
            out[column.name] = False
        elif isinstance(column.type, Float):
            out[column.name] = 0.0
        elif isinstance(column.type, Integer):
            out[column.name] = 0
        else:
            out[column.name] = ""
    return out


@dataclass
class Batch:
    table: Table
    columns: list[str]
    rows: Iterator[tuple[Any, ...]]


def batch(table: Table, varying: list[str], rows: Iterator[tuple[Any, ...]]) -> Batch:
    """Rows of ``table`` giving ``varying`` per row; every other column its default."""
    keys = {c.name for c in table.primary_key.columns}
    fixed = {k: v for k, v in _blank(table).items() if k not in varying and k not in keys}
    tail = tuple(fixed.values())
    return Batch(table, varying + list(fixed), (r + tail for r in rows))


@dataclass
class Load:
    scale: float
    now: int = field(default_factory=lambda: int(time.time() * 1000))

    def n(self, what: str) -> int:
        return max(1, int(FULL[what] * self.scale))

    @property
    def biz_ids(self) -> list[int]:
        return [BIZ + i for i in range(FULL["businesses"])]

    def when(self, i: int, count: int) -> int:
        """Spread over the last SPAN_DAYS, oldest first, the newest a minute ago."""
        return self.now - 60_000 - (count - 1 - i) * (SPAN_DAYS * DAY_MS // max(count, 1))

    def batches(self, existing_biz: set[int]) -> Iterator[Batch]:
        rnd = random.Random(7)
        biz = self.biz_ids
        nb = len(biz)
        yield batch(businesses, ["bk_biz_id", "name", "create_time"],
                    ((b, f"biz-{b}", self.now) for b in biz if b not in existing_biz))
        nh = self.n("hosts")
        yield batch(hosts, ["bk_host_id", "bk_biz_id", "ip", "create_time", "labels"],
                    ((h + 1, biz[h % nb], f"127.{h // 65536}.{h // 256 % 256}.{h % 256}",
                      self.now, "{}") for h in range(nh)))
        yield batch(accounts, ["bk_biz_id", "account", "alias", "create_time",
                               "last_modify_time"],
                    ((b, f"acct{k}", f"acct{k}", self.now, self.now)
                     for b in biz for k in range(10)))
        nj = self.n("jobs")
        statuses = [3] * 18 + [4, 8]
        jobs_cols = ["id", "bk_biz_id", "scope_type", "scope_id", "name", "type",
                     "launch_mode", "operator", "app_code", "status", "cron_id",
                     "create_time", "start_time", "end_time", "total_time"]
        ncron = self.n("crons")

        def job_rows() -> Iterator[tuple[Any, ...]]:
            for i in range(nj):
                b = biz[i % nb]
                t = self.when(i, nj)
                mode = 3 if i % 10 == 0 else 1 + i % 2
                yield (i + 1, b, "biz", str(b), f"job-{i % 1000} of {b}", 1 + i % 2, mode,
                       OPERATORS[i % 20], "bench", statuses[i % 20],
                       (i // 10) % ncron + 1 if mode == 3 else None, t, t, t + 1000, 1000)

        yield batch(job_instances, jobs_cols, job_rows())
        yield batch(step_instances, ["id", "job_instance_id", "step_order", "name", "type",
                                     "status", "create_time", "start_time", "end_time"],
                    ((i + 1, i + 1, 1, "step", 1, statuses[i % 20], t, t, t + 1000)
                     for i in range(nj) for t in (self.when(i, nj),)))
        yield batch(step_hosts, ["step_instance_id", "execute_count", "bk_host_id",
                                 "bk_cloud_id", "ip", "status", "exit_code"],
                    ((i + 1, 0, i % nh + 1, 0,
                      f"127.{(i % nh) // 65536}.{(i % nh) // 256 % 256}.{i % nh % 256}", 9, 0)
                     for i in range(nj)))
        yield batch(log_chunks, ["step_instance_id", "execute_count", "bk_host_id", "seq",
                                 "content"],
                    ((i + 1, 0, i % nh + 1, 0, "hello\n") for i in range(nj)))
        ns = self.n("scripts")
        yield batch(scripts, ["id", "bk_biz_id", "name", "script_language", "create_time",
                              "last_modify_time"],
                    ((f"s{k:07d}", biz[k % nb], f"script {k}", 1, self.when(k, ns),
                      self.when(k, ns)) for k in range(ns)))
        yield batch(script_versions, ["id", "script_id", "version", "content", "status",
                                      "create_time", "last_modify_time"],
                    ((k * 3 + v + 1, f"s{k:07d}", f"v{v}", "echo hello", 1 if v == 2 else 2,
                      self.now, self.now) for k in range(ns) for v in range(3)))
        nt = self.n("templates")
        yield batch(job_templates, ["id", "bk_biz_id", "name", "steps", "variables",
                                    "create_time", "last_modify_time"],
                    ((k + 1, biz[k % nb], f"template {k}", "[]", "[]", self.when(k, nt),
                      self.when(k, nt)) for k in range(nt)))
        yield batch(job_plans, ["id", "bk_biz_id", "template_id", "template_version", "name",
                                "steps", "variables", "create_time", "last_modify_time"],
                    ((k + 1, biz[k % nb], k + 1, 1, f"plan {k}", "[]", "[]", self.when(k, nt),
                      self.when(k, nt)) for k in range(nt)))
        # paused crons: the scheduler of the server under test fires none
        yield batch(crons, ["id", "bk_biz_id", "scope_type", "scope_id", "name", "plan_id",
                            "status", "expression", "create_time", "last_modify_time"],
                    ((k + 1, biz[k % nb], "biz", str(biz[k % nb]), f"cron {k}", k % nt + 1, 2,
                      "0 3 * * *", self.when(k, ncron), self.when(k, ncron))
                     for k in range(ncron)))
        na = self.n("audit")
        yield batch(audit_log, ["id", "create_time", "app_code", "username", "action",
                                "scope_type", "scope_id", "resource_type", "resource_id"],
                    ((k + 1, self.when(k, na), "bench", OPERATORS[k % 20],
                      ("execute_script", "update_template", "create_script")[k % 3], "biz",
                      str(biz[k % nb]), "job", str(k)) for k in range(na)))
        yield batch(heal_rules, ["id", "bk_biz_id", "name", "secret", "match", "job_plan_id",
                                 "variables", "operator", "create_time", "last_modify_time"],
                    ((k + 1, b, f"rule {b}", "x", "{}", 1, "{}", "admin", self.now, self.now)
                     for k, b in enumerate(biz)))
        nd = self.n("heal")
        yield batch(heal_decisions, ["id", "rule_id", "bk_biz_id", "decision", "hosts",
                                     "variables", "create_time"],
                    ((k + 1, k % nb + 1, biz[k % nb], "started", "[]", "{}", self.when(k, nd))
                     for k in range(nd)))
        no = self.n("outbox")
        yield batch(outbox, ["id", "kind", "job_instance_id", "target", "payload",
                             "attempts", "max_attempts", "next_attempt_at", "state",
                             "create_time", "done_time"],
                    ((k + 1, "callback", k * max(1, nj // no) + 1, "x", "{}", 1, 5,
                      self.when(k, no) / 1000, "done" if k % 50 else "failed",
                      self.when(k, no), self.when(k, no)) for k in range(no)))
        del rnd


def fill_sqlite(path: Path, load: Load) -> dict[str, int]:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    existing = {int(r[0]) for r in conn.execute("SELECT bk_biz_id FROM businesses")}
    counts: dict[str, int] = {}
    for b in load.batches(existing):
        marks = ",".join("?" * len(b.columns))
        sql = f"INSERT INTO {b.table.name} ({','.join(b.columns)}) VALUES ({marks})"
        before = conn.total_changes
        while True:
            part = [r for _, r in zip(range(50_000), b.rows, strict=False)]
            if not part:
                break
            conn.executemany(sql, part)
        counts[b.table.name] = counts.get(b.table.name, 0) + conn.total_changes - before
        conn.commit()
    conn.close()
    return counts


async def fill_postgresql(url: str, load: Load) -> dict[str, int]:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        existing = {int(r[0]) for r in await conn.fetch("SELECT bk_biz_id FROM businesses")}
        counts: dict[str, int] = {}
        for b in load.batches(existing):
            n = 0
            while True:
                part = [r for _, r in zip(range(50_000), b.rows, strict=False)]
                if not part:
                    break
                await conn.copy_records_to_table(b.table.name, records=part, columns=b.columns)
                n += len(part)
            counts[b.table.name] = counts.get(b.table.name, 0) + n
            if "id" in b.columns and isinstance(b.table.c.id.type, Integer):
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{b.table.name}', 'id'), "
                    f"(SELECT max(id) FROM {b.table.name}))")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return counts


async def start_server(children: Children, data: Path, name: str, database_url: str | None,
                       extra: list[str]) -> ServerProc:
    argv = [PY, "-m", "jobfleet", "server", "--data-dir", str(data), "--host", "127.0.0.1",
            "--port", str(port := free_port()), "--agent-port", str(free_port()),
            "--log-level", "warning", *extra,
            *(["--database-url", database_url] if database_url else [])]
    child = await children.spawn(name, argv)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport()) as http:
        deadline = time.monotonic() + 300
        while True:
            if not child.alive:
                raise RuntimeError(f"{name} exited; see {children.log_dir}/{name}.log")
            try:
                if (await http.get(url + "/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within 300 s")
            await asyncio.sleep(0.05)
    boot = json.loads((data / "bootstrap.json").read_text())
    return ServerProc(child, url, boot)


# the routes --------------------------------------------------------------------------


class Api:
    def __init__(self, url: str, boot: dict[str, Any]) -> None:
        auth = json.dumps({"bk_app_code": boot["bk_app_code"],
                           "bk_app_secret": boot["bk_app_secret"],
                           "bk_username": boot["admin_user"]})
        self.url = url
        self.boot = boot
        self.http = httpx.AsyncClient(base_url=url, transport=httpx.AsyncHTTPTransport(),
                                      timeout=300, headers={"X-Bkapi-Authorization": auth})
        self.console = httpx.AsyncClient(base_url=url, transport=httpx.AsyncHTTPTransport(),
                                         timeout=300, headers={"Origin": url})

    async def get(self, path: str, params: dict[str, Any]) -> Any:
        response = await self.http.get(path, params=params)
        answer = response.json()
        if not answer.get("result"):
            raise RuntimeError(f"{path}: {answer.get('code')} {answer.get('message')}")
        return answer.get("data")

    async def login(self) -> None:
        response = await self.console.post("/login", data={
            "username": self.boot["admin_user"], "password": self.boot["admin_password"],
            "next": "/"})
        if response.status_code != 303 or "error" in response.headers.get("location", ""):
            raise RuntimeError(f"console login: {response.status_code}")

    async def page(self, path: str, params: dict[str, Any]) -> None:
        response = await self.console.get(path, params=params)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code}")

    async def close(self) -> None:
        await self.http.aclose()
        await self.console.aclose()


@dataclass
class Stores:
    db: Database

    def __post_init__(self) -> None:
        from jobfleet.store.secrets import Cipher  # noqa: F401  (only its type is needed)

        self.jobs = JobReads(self.db)
        self.scripts = ScriptStore(self.db)
        self.plans = PlanStore(self.db, None)  # type: ignore[arg-type]
        self.crons = CronStore(self.db)
        self.accounts = AccountStore(self.db)
        self.audit = AuditLog(self.db)
        self.outbox = OutboxStore(self.db)
        self.retention = RetentionStore(self.db, Path("/nonexistent"))
        self.hosts = HostPages(self.db)


Call = Callable[[], Awaitable[Any]]


@dataclass
class Probe:
    name: str
    route: Call | None
    store: Callable[[Stores], Awaitable[Any]]


def probes(api: Api, load: Load) -> list[Probe]:
    scope = {"bk_scope_type": "biz", "bk_scope_id": str(BIZ)}
    end = load.now
    start = end - 30 * DAY_MS
    old_job = 1 + len(load.biz_ids) * 3  # a job of business BIZ from the first days
    nj = load.n("jobs")
    deep = max(0, min(1000, nj // len(load.biz_ids) // 3))

    def jobs(**filters: Any) -> Probe:
        label = ", ".join(f"{k}={v}" for k, v in filters.items()) or "30 days"
        params = {**scope, "create_time_start": start, "create_time_end": end, "length": 20,
                  **filters}
        own = {k: v for k, v in filters.items() if k != "start"}
        if "job_cron_id" in own:
            own["job_cron_id"] = int(own["job_cron_id"])
        return Probe(
            f"get_job_instance_list {label}",
            lambda: api.get(V3 + "get_job_instance_list", params),
            lambda s: s.jobs.list_jobs(scope_type="biz", scope_id=str(BIZ), start_ms=start,
                                       end_ms=end, filters=own,
                                       offset=int(filters.get("start", 0)), limit=20))

    script_id = "s0000000"
    some_cron = 1 + len(load.biz_ids) * 0  # cron 1 is of business BIZ

    async def home_store(s: Stores) -> None:
        await s.jobs.list_jobs(scope_type="biz", scope_id=str(BIZ), start_ms=end - 7 * DAY_MS,
                               end_ms=end, filters={"status": 4}, offset=0, limit=20)
        # the confirmations waiting in each of the admin's businesses (status 7, type 3)
        await s.jobs.newest_steps_of_status(
            scope_type="biz", scope_ids=[str(b) for b in load.biz_ids],
            start_ms=end - 30 * DAY_MS, end_ms=end, status=7, per_scope=50, step_type=3)

    async def status_store(s: Stores) -> None:
        _job, steps = await s.jobs.job_and_steps(old_job)
        await s.jobs.hosts_of_steps(steps, results_only=True)

    async def log_store(s: Stores) -> None:
        await s.jobs.hosts_at(old_job, 0, [(0, "127.0.0.0")])
        await s.jobs.logs(old_job, 0, [1])

    return [
        jobs(),
        jobs(status=4),
        jobs(status=2),
        jobs(operator="user3"),
        jobs(type=2),
        jobs(name="job-7 of"),
        jobs(job_cron_id=str(some_cron)),
        jobs(launch_mode=3),
        jobs(ip="127.0.0.9"),
        jobs(start=deep),
        Probe("get_script_list",
              lambda: api.get(V3 + "get_script_list", {**scope, "length": 20}),
              lambda s: s.scripts.list_scripts(BIZ, limit=20)),
        Probe("get_script_version_list",
              lambda: api.get(V3 + "get_script_version_list",
                              {**scope, "script_id": script_id}),
              lambda s: s.scripts.list_versions(BIZ, script_id)),
        Probe("get_job_plan_list",
              lambda: api.get(V3 + "get_job_plan_list", {**scope, "length": 20}),
              lambda s: s.plans.list_plans([BIZ], ListFilter(), limit=20)),
        Probe("get_cron_list",
              lambda: api.get(V3 + "get_cron_list", {**scope, "length": 20}),
              lambda s: s.crons.page("biz", str(BIZ), limit=20)),
        Probe("get_account_list",
              lambda: api.get(V3 + "get_account_list", {**scope, "length": 20}),
              lambda s: s.accounts.list(BIZ, limit=20)),
        Probe("get_job_instance_status (old job)",
              lambda: api.get(V3 + "get_job_instance_status",
                              {**scope, "job_instance_id": old_job, "return_ip_result": True}),
              status_store),
        Probe("get_job_instance_ip_log (old job)",
              lambda: api.get(V3 + "get_job_instance_ip_log",
                              {**scope, "job_instance_id": old_job,
                               "step_instance_id": old_job, "bk_cloud_id": 0,
                               "ip": "127.0.0.0"}),
              log_store),
        Probe("get_job_instance_global_var_value (old job)",
              lambda: api.get(V3 + "get_job_instance_global_var_value",
                              {**scope, "job_instance_id": old_job}),
              lambda s: s.jobs.steps(old_job)),
        Probe("audit search, business scope",
              lambda: api.get(OWN + "audit/entries", {**scope, "length": 20}),
              lambda s: s.audit.query(AuditQuery(scope_type="biz", scope_id=str(BIZ)),
                                      limit=20)),
        Probe("audit search, all (admin)",
              lambda: api.get(OWN + "audit/entries", {"length": 20}),
              lambda s: s.audit.query(AuditQuery(), limit=20)),
        Probe("console /jobs",
              lambda: api.page("/jobs", {"biz": BIZ}),
              lambda s: s.jobs.list_jobs(scope_type="biz", scope_id=str(BIZ),
                                         start_ms=start, end_ms=end, filters={}, offset=0,
                                         limit=50)),
        Probe("console / (running and failed jobs)",
              lambda: api.page("/", {"biz": BIZ}), home_store),
        Probe("console /hosts",
              lambda: api.page("/hosts", {"biz": BIZ}),
              lambda s: s.hosts.page(HostQuery(bk_biz_id=BIZ), 0, 100)),
        Probe("console /audit",
              lambda: api.page("/audit", {}),
              lambda s: s.audit.recent(200)),
        Probe("cron scheduler: due", None, lambda s: s.crons.due(load.now // 1000, 100)),
        Probe("cron scheduler: earliest", None, lambda s: s.crons.earliest()),
        Probe("cron scheduler: running", None, lambda s: s.crons.running()),
        Probe("outbox: due", None, lambda s: s.outbox.due(time.time(), 100)),
        Probe("retention: audit (nothing due)", None,
              lambda s: s.retention.purge_audit(load.now - 400 * DAY_MS, 500)),
        Probe("retention: heal decisions (nothing due)", None,
              lambda s: s.retention.purge_heal_decisions(load.now - 400 * DAY_MS, 500)),
        Probe("retention: jobs (nothing due)", None,
              lambda s: s.retention.purge_jobs(load.now - 400 * DAY_MS, 500)),
    ]


class Recorder:
    """The SQL a store call sends, and its plans."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.seen: list[tuple[str, Any]] = []
        self.on = False
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Connection, _cursor: Any, statement: str, parameters: Any,
                _context: Any, _many: bool) -> None:
        if self.on and not statement.lstrip().upper().startswith("EXPLAIN"):
            self.seen.append((statement, parameters))

    async def plans(self, call: Callable[[], Awaitable[Any]]) -> list[tuple[str, list[str]]]:
        self.seen, self.on = [], True
        try:
            await call()
        finally:
            self.on = False
        out = []
        prefix = "EXPLAIN QUERY PLAN " if self.db.is_sqlite else "EXPLAIN "
        for statement, parameters in self.seen:
            if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                out.append((statement, []))
                continue
            async with self.db.connect() as conn:
                rows = (await conn.exec_driver_sql(prefix + statement, parameters)).all()
            lines = ([f"{'  ' * 0}{r[-1]}" for r in rows] if self.db.is_sqlite
                     else [str(r[0]) for r in rows])
            out.append((statement, lines))
        return out


async def timed(call: Call, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


@dataclass
class Figures:
    fill_s: float
    counts: dict[str, int]
    ms: dict[str, list[float]]
    plans: dict[str, list[tuple[str, list[str]]]]


async def one_size(children: Children, work: Path, backend: str, admin: str | None,
                   load: Load, args: argparse.Namespace, tag: str) -> Figures:
    data = work / f"{backend}-{tag}"
    url = None
    if admin is not None:
        name = f"list_{tag}"
        conn = await asyncpg.connect(admin.replace("+asyncpg", ""))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        url = admin.rsplit("/", 1)[0] + f"/{name}"
    keep = ["--retain-jobs", "400d", "--retain-audit", "400d", "--retain-heal", "400d"]
    server = await start_server(children, data, f"{backend}-{tag}", url, keep)
    await children.stop(server.child)
    started = time.perf_counter()
    if url is None:
        counts = fill_sqlite(data / "jobfleet.db", load)
    else:
        counts = await fill_postgresql(url, load)
    fill_s = time.perf_counter() - started
    print(f"  {backend} {tag}: filled in {fill_s:.1f} s: "
          + ", ".join(f"{k} {v:,}" for k, v in counts.items()), flush=True)
    server = await start_server(children, data, f"{backend}-{tag}b", url, keep)
    api = Api(server.url, server.boot)
    db = Database(url or f"sqlite+aiosqlite:///{data / 'jobfleet.db'}")
    stores = Stores(db)
    recorder = Recorder(db)
    ms: dict[str, list[float]] = {}
    plans: dict[str, list[tuple[str, list[str]]]] = {}
    try:
        await api.login()
        for probe in probes(api, load):
            st = probe.store
            call = probe.route or (lambda st=st: st(stores))  # type: ignore[misc]
            try:
                await call()
                ms[probe.name] = await timed(call, args.repeat)
            except Exception as exc:  # one broken probe does not end the run
                print(f"    {probe.name}: {exc!r}", flush=True)
                ms[probe.name] = [float("nan")]
            if args.plans or tag == "large":
                plans[probe.name] = await recorder.plans(lambda st=st: st(stores))
    finally:
        await api.close()
        await db.close()
        await children.stop(server.child)
    return Figures(fill_s, counts, ms, plans)


def report(backend: str, floor: Figures, large: Figures, show_plans: bool) -> list[str]:
    lines = [f"{backend}: p50 (p95) ms, floor at {floor.counts.get('job_instances', 0):,} "
             f"jobs, large at {large.counts.get('job_instances', 0):,} "
             f"(filled in {large.fill_s:.0f} s)"]
    for name, values in large.ms.items():
        base = floor.ms.get(name, [float("nan")])
        p50, f50 = pct(values, 0.5), pct(base, 0.5)
        lines.append(f"  {name:52s} {p50:8.1f} ({pct(values, 0.95):8.1f})   floor "
                     f"{f50:6.1f}   x{p50 / max(f50, 0.01):6.1f}")
    if show_plans:
        for name, found in large.plans.items():
            lines.append(f"  -- {name}")
            for statement, plan in found:
                lines.append("     " + " ".join(statement.split())[:300])
                lines.extend(f"       | {p}" for p in plan)
    return lines


async def bench(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="jobfleet-listscale-"))
    children = Children(work)
    load_start = Path("/proc/loadavg").read_text().split()[:3]
    pg_dir: Path | None = None
    try:
        for backend in args.backends.split(","):
            admin = None
            if backend == "postgresql":
                pg_dir = Path(tempfile.mkdtemp(prefix="jobfleet-listscale-pg-"))
                admin = subprocess.run(
                    [str(ROOT / "scripts" / "pg-cluster.sh"), "start", str(pg_dir)],
                    check=True, capture_output=True, text=True).stdout.strip()
            floor = await one_size(children, work, backend, admin, Load(args.floor_scale),
                                   args, "small")
            large = await one_size(children, work, backend, admin, Load(args.scale), args,
                                   "large")
            print("\n".join(report(backend, floor, large, not args.no_plans)), flush=True)
            if pg_dir is not None:
                subprocess.run([str(ROOT / "scripts" / "pg-cluster.sh"), "stop", str(pg_dir)],
                               check=False, capture_output=True)
                shutil.rmtree(pg_dir, ignore_errors=True)
                pg_dir = None
    finally:
        await children.stop_all()
        if pg_dir is not None:
            subprocess.run([str(ROOT / "scripts" / "pg-cluster.sh"), "stop", str(pg_dir)],
                           check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    load_end = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load {' '.join(load_start)} -> {' '.join(load_end)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/list_scale.py")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--floor-scale", type=float, default=0.001)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--plans", action="store_true", help="also record the floor's plans")
    parser.add_argument("--no-plans", action="store_true", help="print no plans")
    args = parser.parse_args(argv)
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
