"""Reads of job instances, their steps, per-host results and output logs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    Row,
    Select,
    and_,
    cast,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.host_addresses import by_address
from jobfleet.store.database import Database
from jobfleet.store.inventory import chunks
from jobfleet.store.tables import job_instances, log_chunks, step_hosts, step_instances

# a host's result as queries show it: every column but the variables it set
RESULT_COLUMNS = [c for c in step_hosts.c if c.name != "variables"]


class JobReads:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def job(self, job_id: int) -> Row[Any] | None:
        async with self.db.connect() as conn:
            return (
                await conn.execute(select(job_instances).where(job_instances.c.id == job_id))
            ).first()

    async def job_and_steps(self, job_id: int) -> tuple[Row[Any] | None, list[Row[Any]]]:
        """A job and its steps on one connection (a status poll reads both)."""
        async with self.db.connect() as conn:
            job = (
                await conn.execute(select(job_instances).where(job_instances.c.id == job_id))
            ).first()
            return (job, await self.steps(job_id, conn)) if job is not None else (None, [])

    async def steps(self, job_id: int, conn: AsyncConnection | None = None) -> list[Row[Any]]:
        query = (
            select(step_instances)
            .where(step_instances.c.job_instance_id == job_id)
            .order_by(step_instances.c.step_order)
        )
        if conn is not None:
            return list((await conn.execute(query)).all())
        async with self.db.connect() as c:
            return list((await c.execute(query)).all())

    async def step(self, step_id: int) -> Row[Any] | None:
        async with self.db.connect() as conn:
            return (
                await conn.execute(select(step_instances).where(step_instances.c.id == step_id))
            ).first()

    async def hosts(
        self,
        step_id: int,
        execute_count: int,
        *,
        host_ids: Sequence[int] | None = None,
        statuses: Sequence[int] | None = None,
        batch: int | None = None,
        tag: str | None = None,
        ip_contains: str | None = None,
        output_contains: str | None = None,
    ) -> list[Row[Any]]:
        """The step's host rows of one attempt, filtered in SQL: by host ids, statuses,
        rolling batch, tag, part of an address (IPv4 or IPv6), and ``output_contains``
        (hosts whose output holds it within one stored chunk)."""
        sh = step_hosts.c
        query = select(step_hosts).where(
            sh.step_instance_id == step_id, sh.execute_count == execute_count
        )
        if statuses is not None:
            query = query.where(sh.status.in_(list(statuses)))
        if batch is not None:
            query = query.where(sh.batch == batch)
        if tag is not None:
            query = query.where(sh.tag == tag)
        if ip_contains:
            query = query.where(
                or_(
                    sh.ip.contains(ip_contains, autoescape=True),
                    sh.ipv6.contains(ip_contains, autoescape=True),
                )
            )
        if output_contains:
            query = query.where(
                sh.bk_host_id.in_(self._with_output(step_id, execute_count, output_contains))
            )
        query = query.order_by(sh.bk_host_id)
        async with self.db.connect() as conn:
            if host_ids is None:
                return list((await conn.execute(query)).all())
            found: list[Row[Any]] = []
            for part in chunks(sorted(set(host_ids))):
                found.extend(await conn.execute(query.where(sh.bk_host_id.in_(part))))
            return found

    async def hosts_at(
        self, step_id: int, execute_count: int, addresses: Sequence[tuple[int, str]]
    ) -> list[Row[Any]]:
        """The step's host rows that ``addresses`` name, as a job's ``ip_list`` names
        hosts: an address names the host whose (cloud, ip) it is, else the one host
        whose agent reported it as its IPv6 address (an agent says what it likes in its
        hello: its claim never answers for another host). What is looked up costs what
        it asks for, not the whole step."""
        sh = step_hosts.c
        # a host found by its ip in one chunk and by its IPv6 address in another is one
        rows_found: dict[int, Row[Any]] = {}
        pairs: set[tuple[int, str]] = set()
        async with self.db.connect() as conn:
            for part in chunks(sorted(set(addresses)), 2000):
                wanted = [(int(cloud), ip) for cloud, ip in part]
                rows = await conn.execute(
                    select(step_hosts).where(
                        sh.step_instance_id == step_id,
                        sh.execute_count == execute_count,
                        sh.ip.in_({ip for _, ip in wanted}) | sh.ipv6.in_({ip for _, ip in wanted}),
                    )
                )
                pairs.update(wanted)
                for row in rows:
                    rows_found.setdefault(row.bk_host_id, row)
        named = by_address(rows_found.values(), lambda r: (r.bk_cloud_id, r.ip, r.ipv6))
        found: dict[int, Row[Any]] = {}
        for pair, rows_of in named.items():
            if pair in pairs:
                for row in rows_of:
                    found[row.bk_host_id] = row
        return [found[h] for h in sorted(found)]

    async def hosts_of_steps(
        self, steps: Sequence[Row[Any]], *, results_only: bool = False
    ) -> dict[int, list[Row[Any]]]:
        """The latest attempt's host rows of each step, in one query. ``results_only``:
        without the variables each host set (a JSON document to decode per row)."""
        if not steps:
            return {}
        cond = or_(
            *[
                and_(
                    step_hosts.c.step_instance_id == s.id,
                    step_hosts.c.execute_count == s.execute_count,
                )
                for s in steps
            ]
        )
        found: dict[int, list[Row[Any]]] = {s.id: [] for s in steps}
        async with self.db.connect() as conn:
            columns = RESULT_COLUMNS if results_only else list(step_hosts.c)
            for row in await conn.execute(
                select(*columns).where(cond).order_by(step_hosts.c.bk_host_id)
            ):
                found[row.step_instance_id].append(row)
        return found

    async def status_counts(
        self, step_id: int, execute_count: int, batch: int | None = None
    ) -> dict[int, int]:
        query = select(step_hosts.c.status, func.count()).where(
            step_hosts.c.step_instance_id == step_id,
            step_hosts.c.execute_count == execute_count,
        )
        if batch is not None:
            query = query.where(step_hosts.c.batch == batch)
        async with self.db.connect() as conn:
            rows = await conn.execute(query.group_by(step_hosts.c.status))
            return {int(r[0]): int(r[1]) for r in rows}

    async def logs(
        self, step_id: int, execute_count: int, host_ids: Sequence[int]
    ) -> dict[int, str]:
        parts: dict[int, list[str]] = {h: [] for h in host_ids}
        async with self.db.connect() as conn:
            for part in chunks(list(host_ids), 1000):
                rows = await conn.execute(
                    select(log_chunks.c.bk_host_id, log_chunks.c.content)
                    .where(
                        log_chunks.c.step_instance_id == step_id,
                        log_chunks.c.execute_count == execute_count,
                        log_chunks.c.bk_host_id.in_(part),
                    )
                    .order_by(log_chunks.c.bk_host_id, log_chunks.c.seq)
                )
                for host_id, content in rows:
                    parts[host_id].append(content)
        return {h: "".join(p) for h, p in parts.items()}

    @staticmethod
    def _with_output(step_id: int, execute_count: int, keyword: str) -> Select[Any]:
        return (
            select(log_chunks.c.bk_host_id)
            .where(
                log_chunks.c.step_instance_id == step_id,
                log_chunks.c.execute_count == execute_count,
                log_chunks.c.content.contains(keyword, autoescape=True),
            )
            .distinct()
        )

    async def hosts_with_output(self, step_id: int, execute_count: int, keyword: str) -> set[int]:
        """Hosts whose output holds ``keyword`` (within one stored chunk of output)."""
        async with self.db.connect() as conn:
            rows = await conn.execute(self._with_output(step_id, execute_count, keyword))
            return {int(r[0]) for r in rows}

    async def list_jobs(
        self,
        *,
        scope_type: str,
        scope_id: str,
        start_ms: int,
        end_ms: int,
        filters: dict[str, Any],
        offset: int,
        limit: int,
    ) -> tuple[int, list[Row[Any]]]:
        cond = [job_instances.c.scope_type == scope_type, job_instances.c.scope_id == scope_id]
        if filters.get("job_instance_id"):
            cond.append(job_instances.c.id == filters["job_instance_id"])
        else:
            cond += [job_instances.c.create_time >= start_ms, job_instances.c.create_time <= end_ms]
            for key, col in (
                ("operator", job_instances.c.operator),
                ("launch_mode", job_instances.c.launch_mode),
                ("type", job_instances.c.type),
                ("status", job_instances.c.status),
                ("job_cron_id", job_instances.c.cron_id),
            ):
                if filters.get(key) is not None:
                    cond.append(col == filters[key])
            if filters.get("name"):
                cond.append(job_instances.c.name.contains(filters["name"], autoescape=True))
            if filters.get("ip"):
                # the few host results of that address, found by its index, name their
                # jobs: asked of each job of the range instead (a correlated EXISTS, as
                # SQLite runs one), it costs a lookup per job; PostgreSQL plans both alike
                ran_there = (
                    select(step_instances.c.job_instance_id)
                    .select_from(step_hosts)
                    .join(step_instances, step_instances.c.id == step_hosts.c.step_instance_id)
                    .where(step_hosts.c.ip == filters["ip"])
                )
                cond.append(job_instances.c.id.in_(ran_there))
        async with self.db.connect() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(job_instances).where(*cond))
            ).scalar_one()
            rows = await conn.execute(
                select(job_instances)
                .where(*cond)
                .order_by(job_instances.c.create_time.desc(), job_instances.c.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return int(total), list(rows.all())

    async def newest_steps_of_status(
        self,
        *,
        scope_type: str,
        scope_ids: Sequence[str],
        start_ms: int,
        end_ms: int,
        status: int,
        per_scope: int,
        step_type: int,
    ) -> list[tuple[Row[Any], Row[Any]]]:
        """The steps of type ``step_type`` in ``status`` of each scope's ``per_scope``
        newest jobs in ``status`` created in the range: (job, step) pairs, newest job
        first, in step order. Two statements whatever the number of scopes: a query
        per scope would cost a round trip each, a hundred for an admin's home page."""
        if not scope_ids:
            return []
        newest = func.row_number().over(
            partition_by=job_instances.c.scope_id,
            order_by=(job_instances.c.create_time.desc(), job_instances.c.id.desc()),
        )
        ranked = (
            select(job_instances, newest.label("rank_in_scope"))
            .where(
                job_instances.c.scope_type == scope_type,
                job_instances.c.scope_id.in_(list(scope_ids)),
                job_instances.c.status == status,
                job_instances.c.create_time >= start_ms,
                job_instances.c.create_time <= end_ms,
            )
            .subquery()
        )
        async with self.db.connect() as conn:
            jobs = (
                await conn.execute(
                    select(*(ranked.c[c.name] for c in job_instances.c))
                    .where(ranked.c.rank_in_scope <= per_scope)
                    .order_by(ranked.c.create_time.desc(), ranked.c.id.desc())
                )
            ).all()
            if not jobs:
                return []
            by_id = {job.id: job for job in jobs}
            found: dict[int, list[Row[Any]]] = {job.id: [] for job in jobs}
            for part in chunks(list(by_id)):
                for step in await conn.execute(
                    select(step_instances)
                    .where(
                        step_instances.c.job_instance_id.in_(part),
                        step_instances.c.type == step_type,
                        step_instances.c.status == status,
                    )
                    .order_by(step_instances.c.job_instance_id, step_instances.c.step_order)
                ):
                    found[step.job_instance_id].append(step)
        return [(by_id[job_id], step) for job_id, steps in found.items() for step in steps]

    def _bytes(self) -> ColumnElement[int]:
        """A log chunk's length in bytes, not characters, on both backends."""
        content = log_chunks.c.content
        if self.db.is_sqlite:
            return func.length(cast(content, LargeBinary))
        return func.octet_length(content)

    async def log_bytes(self, step_id: int, execute_count: int) -> dict[int, int]:
        """The bytes of output stored for each host of one attempt of a step that has
        any (the sizes only: no log is read)."""
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(log_chunks.c.bk_host_id, func.sum(self._bytes()))
                .where(
                    log_chunks.c.step_instance_id == step_id,
                    log_chunks.c.execute_count == execute_count,
                )
                .group_by(log_chunks.c.bk_host_id)
            )
            return {int(host): int(size or 0) for host, size in rows}

    async def open_tasks(
        self, keys: Sequence[tuple[int, int, int]]
    ) -> dict[tuple[int, int, int], tuple[int, int]]:
        """Of these (step, attempt, host) tasks, those that exist: the host's status and
        the bytes of output stored for it. One query per thousand tasks."""
        stored = (
            select(func.coalesce(func.sum(self._bytes()), 0))
            .where(
                log_chunks.c.step_instance_id == step_hosts.c.step_instance_id,
                log_chunks.c.execute_count == step_hosts.c.execute_count,
                log_chunks.c.bk_host_id == step_hosts.c.bk_host_id,
            )
            .scalar_subquery()
        )
        key = tuple_(
            step_hosts.c.step_instance_id, step_hosts.c.execute_count, step_hosts.c.bk_host_id
        )
        found: dict[tuple[int, int, int], tuple[int, int]] = {}
        async with self.db.connect() as conn:
            for part in chunks(list(keys), 1000):
                rows = await conn.execute(
                    select(
                        step_hosts.c.step_instance_id,
                        step_hosts.c.execute_count,
                        step_hosts.c.bk_host_id,
                        step_hosts.c.status,
                        stored,
                    ).where(key.in_(list(part)))
                )
                for step_id, count, host, status, size in rows:
                    found[(int(step_id), int(count), int(host))] = (int(status), int(size or 0))
        return found

    async def ping(self) -> None:
        """Raises unless the database answers."""
        async with self.db.connect() as conn:
            await conn.execute(select(1))
