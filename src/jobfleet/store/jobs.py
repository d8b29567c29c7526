"""Job instances, their steps, per-host results and output logs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Row,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.scripts import stored_script
from jobfleet.domain.status import GseErrorCode, HostStatus, RunStatus
from jobfleet.store.bulk import BulkStatement
from jobfleet.store.database import Database, now_ms
from jobfleet.store.filelogs import file_log_update
from jobfleet.store.inventory import chunks
from jobfleet.store.job_reads import JobReads
from jobfleet.store.leases import Fence, LeaseStore, lease_clock
from jobfleet.store.outbox import enqueue
from jobfleet.store.tables import job_instances, log_chunks, step_hosts, step_instances

UNFINISHED_HOST = (int(HostStatus.WAITING), int(HostStatus.RUNNING))
# a new host row's columns: those it must name, and what the others are when it does not
HOST_ROW_REQUIRED = ("execute_count", "bk_host_id", "bk_cloud_id", "ip", "status")
HOST_ROW_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(HOST_ROW_REQUIRED),
    "batch": 0,
    "ipv6": "",
    "agent_id": None,
    "exit_code": None,
    "error_code": 0,
    "tag": "",
}
_HOST_ROW_FIELDS = ("step_instance_id", *HOST_ROW_DEFAULTS)
_HOST_ROW_PICK = itemgetter(*HOST_ROW_DEFAULTS)
_CHUNK_FIELDS = ("step_instance_id", "execute_count", "bk_host_id", "seq", "content")
_FINISH_FIELDS = ("_step", "_count", "_host", "_status", "_exit", "_err", "_tag", "_start", "_end")


@dataclass
class NewStep:
    name: str
    type: int
    values: dict[str, Any]
    hosts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class NewJob:
    values: dict[str, Any]
    steps: list[NewStep]


@dataclass(slots=True)
class HostResult:
    """One host's outcome, as the engine writes it. Not frozen: a frozen dataclass
    sets each field through ``object.__setattr__``, three times the cost of the whole
    record, and a 10,000-host job makes 10,000 of these."""

    step_instance_id: int
    execute_count: int
    bk_host_id: int
    status: int
    exit_code: int | None = None
    start_time: int | None = None
    end_time: int | None = None
    tag: str = ""
    error_code: int = 0
    # variables the step set on this host
    variables: dict[str, str] | None = None


class LostJob(Exception):
    """The job was claimed again since its driver's claim (by another node, or by this
    one for a new driver): what the old driver would write is not written."""

    def __init__(self, job_id: int | None, node_id: str) -> None:
        super().__init__(f"job {job_id} is no longer driven by node {node_id}")
        self.job_id = job_id
        self.node_id = node_id


class JobStore(JobReads):
    """Jobs written and read (the reads are in ``store/job_reads.py``)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        # which node drives each active job (columns of the job's row)
        self.leases = LeaseStore(db)
        dialect = sqlite if db.is_sqlite else postgresql
        self._insert_chunks = BulkStatement(
            dialect.insert(log_chunks)
            .values({name: bindparam(name) for name in _CHUNK_FIELDS})
            .on_conflict_do_nothing(),
            _CHUNK_FIELDS,
        )
        self._finish_host = (
            update(step_hosts)
            .where(
                step_hosts.c.step_instance_id == bindparam("_step"),
                step_hosts.c.execute_count == bindparam("_count"),
                step_hosts.c.bk_host_id == bindparam("_host"),
                # executemany cannot expand IN lists
                or_(
                    step_hosts.c.status == UNFINISHED_HOST[0],
                    step_hosts.c.status == UNFINISHED_HOST[1],
                ),
            )
            .values(
                status=bindparam("_status"),
                exit_code=bindparam("_exit"),
                error_code=bindparam("_err"),
                tag=bindparam("_tag"),
                start_time=func.coalesce(bindparam("_start"), step_hosts.c.start_time),
                end_time=bindparam("_end"),
                total_time=bindparam("_end")
                - func.coalesce(bindparam("_start"), step_hosts.c.start_time, bindparam("_end")),
            )
        )

        # only the few results that carry variables pay for the JSON column
        self._finish_host_vars = self._finish_host.values(variables=bindparam("_vars", type_=JSON))
        self._finish_hosts = BulkStatement(self._finish_host, _FINISH_FIELDS)
        self._insert_hosts = BulkStatement(
            insert(step_hosts).values({name: bindparam(name) for name in _HOST_ROW_FIELDS}),
            _HOST_ROW_FIELDS,
        )

    # A job's driver writes its job's and steps' state through its ``JobLease``: the
    # write lands only while the job's row names the node and generation of the
    # driver's claim, checked in the same statement. A claim changes those columns
    # under the row's lock, so a driver that lost the job cannot write after the claim,
    # even from a call under way when its task was cancelled; it learns so from
    # ``LostJob``. The writes without a fence are the API's (an operator's decision).

    async def claim(self, job_id: int, node_id: str, ttl: float) -> JobLease | None:
        """Take the job for a driver on ``node_id``: its lease, or None if another
        node's lease holds or the job is not active (``LeaseStore.claim``)."""
        fence = await self.leases.claim(job_id, node_id, ttl)
        return JobLease(self, fence) if fence is not None else None

    @staticmethod
    def _job_owned(fence: Fence | None) -> list[ColumnElement[bool]]:
        if fence is None:
            return []
        return [
            job_instances.c.owner_node == fence.node_id,
            job_instances.c.lease_gen == fence.generation,
        ]

    @staticmethod
    def _step_owned(fence: Fence | None) -> list[ColumnElement[bool]]:
        if fence is None:
            return []
        return [
            step_instances.c.job_instance_id == fence.job_id,
            exists().where(
                job_instances.c.id == fence.job_id,
                job_instances.c.owner_node == fence.node_id,
                job_instances.c.lease_gen == fence.generation,
            ),
        ]

    @staticmethod
    async def _lost_unless_owned(conn: AsyncConnection, fence: Fence | None) -> None:
        """After a fenced write changed nothing: raise ``LostJob`` if the job was
        claimed again since ``fence`` (else the write's own condition failed)."""
        if fence is None:
            return
        found = (
            await conn.execute(
                select(job_instances.c.owner_node, job_instances.c.lease_gen).where(
                    job_instances.c.id == fence.job_id
                )
            )
        ).first()
        if found is None or (found[0], found[1]) != (fence.node_id, fence.generation):
            raise LostJob(fence.job_id, fence.node_id)

    # creation ---------------------------------------------------------------
    async def create(
        self, job: NewJob, conn: AsyncConnection | None = None
    ) -> tuple[int, list[int]]:
        """Write the job, its steps and one row per target host in one transaction
        (``conn``'s, when given)."""
        if conn is not None:
            return await self._create(conn, job)
        async with self.db.begin() as own:
            return await self._create(own, job)

    async def _create(self, conn: AsyncConnection, job: NewJob) -> tuple[int, list[int]]:
        res = await conn.execute(insert(job_instances).values(**job.values))
        job_id = int(res.inserted_primary_key[0])  # type: ignore[index]
        step_ids: list[int] = []
        for order, step in enumerate(job.steps):
            values = step.values
            script = values.get("script_content")
            if script:  # a ScriptText is true whatever it holds
                content, config = stored_script(script, values.get("config"))
                values = {**values, "script_content": content, "config": config}
            res = await conn.execute(
                insert(step_instances).values(
                    job_instance_id=job_id,
                    step_order=order,
                    name=step.name,
                    type=step.type,
                    **values,
                )
            )
            step_id = int(res.inserted_primary_key[0])  # type: ignore[index]
            step_ids.append(step_id)
            await self._insert_host_rows(conn, step_id, step.hosts)
        return job_id, step_ids

    async def _insert_host_rows(
        self, conn: AsyncConnection, step_id: int, hosts: list[dict[str, Any]]
    ) -> None:
        """A step's host rows in one driver call (each a tuple, not a parameter dict)."""
        known = HOST_ROW_DEFAULTS.keys()
        if all(h.keys() == known for h in hosts):
            # every column named (the engine's own rows): taken in one C call a row
            pick = _HOST_ROW_PICK
            await self._insert_hosts.run(conn, [(step_id, *pick(h)) for h in hosts])
            return
        if any(h.keys() - known or any(k not in h for k in HOST_ROW_REQUIRED) for h in hosts):
            # a column the fast path does not carry, or one missing: SQLAlchemy's way
            rows = [{**h, "step_instance_id": step_id} for h in hosts]
            for part in chunks(rows):
                await conn.execute(insert(step_hosts), list(part))
            return
        defaults = tuple(HOST_ROW_DEFAULTS.items())
        await self._insert_hosts.run(
            conn, [(step_id, *[h.get(k, d) for k, d in defaults]) for h in hosts]
        )

    # writes -----------------------------------------------------------------
    async def mark_running(
        self,
        step_id: int,
        execute_count: int,
        host_ids: Sequence[int],
        agent_ids: dict[int, str] | None = None,
    ) -> None:
        now = now_ms()
        async with self.db.begin() as conn:
            for part in chunks(list(host_ids)):
                await conn.execute(
                    update(step_hosts)
                    .where(
                        step_hosts.c.step_instance_id == step_id,
                        step_hosts.c.execute_count == execute_count,
                        step_hosts.c.bk_host_id.in_(part),
                        step_hosts.c.status == int(HostStatus.WAITING),
                    )
                    # bk-job reports GSE's "handling" (115) beside a running host; bk-nodeman
                    # reads it
                    .values(
                        status=int(HostStatus.RUNNING),
                        error_code=int(GseErrorCode.RUNNING),
                        start_time=now,
                    )
                )

    async def ingest(
        self,
        chunks_: list[dict[str, Any]],
        finals: list[HostResult],
        file_updates: list[dict[str, Any]] | None = None,
    ) -> None:
        """Store a batch of output chunks and final results in one transaction.

        Repeats are harmless: chunks are keyed by (task, seq) and a final result
        only lands on a host that has not finished.
        """
        async with self.db.begin() as conn:
            await self._ingest(conn, chunks_, finals)
            if file_updates:
                await conn.execute(file_log_update(), file_updates)

    async def _ingest(
        self, conn: AsyncConnection, chunks_: list[dict[str, Any]], finals: list[HostResult]
    ) -> None:
        await self._insert_chunks.run(conn, [tuple(c[k] for k in _CHUNK_FIELDS) for c in chunks_])
        await self._finish_hosts.run(
            conn, [_finish_row(r) for r in finals if r.variables is None]
        )
        with_vars = [
            {**_finish_params(r), "_vars": r.variables} for r in finals if r.variables is not None
        ]
        if with_vars:
            await conn.execute(self._finish_host_vars, with_vars)

    async def update_step(self, step_id: int, **values: Any) -> None:
        await self._update_step(None, step_id, None, values)

    async def _update_step(
        self, fence: Fence | None, step_id: int, expected: int | None, values: dict[str, Any]
    ) -> bool:
        where = [step_instances.c.id == step_id, *self._step_owned(fence)]
        if expected is not None:
            where.append(step_instances.c.status == expected)
        async with self.db.begin() as conn:
            res = await conn.execute(update(step_instances).where(*where).values(**values))
            if not res.rowcount:
                await self._lost_unless_owned(conn, fence)
            return bool(res.rowcount)

    async def new_attempt(
        self,
        step: Row[Any],
        *,
        failed_only: bool,
        node_id: str,
        ttl: float,
        conn: AsyncConnection | None = None,
    ) -> bool:
        """Start the step again as attempt ``execute_count + 1`` and hand its job to ``node_id``.

        With ``failed_only`` the hosts that succeeded keep their result as status 3
        (succeeded last time); every other host waits to run again. Earlier
        attempts stay as they were. False if the step changed meanwhile.
        """
        if conn is None:
            async with self.db.begin() as own:
                return await self.new_attempt(
                    step, failed_only=failed_only, node_id=node_id, ttl=ttl, conn=own
                )
        count = step.execute_count
        res = await conn.execute(
            update(step_instances)
            .where(
                step_instances.c.id == step.id,
                step_instances.c.status == step.status,
                step_instances.c.execute_count == count,
            )
            .values(
                execute_count=count + 1,
                status=int(RunStatus.BLANK),
                current_batch=0,
                start_time=None,
                end_time=None,
                total_time=None,
            )
        )
        if not res.rowcount:
            return False
        old = await conn.execute(
            select(step_hosts).where(
                step_hosts.c.step_instance_id == step.id,
                step_hosts.c.execute_count == count,
            )
        )
        rows = []
        for row in old:
            kept = failed_only and HostStatus(row.status).succeeded
            rows.append(
                {
                    **HOST_ROW_DEFAULTS,
                    "execute_count": count + 1,
                    "bk_host_id": row.bk_host_id,
                    "batch": row.batch,
                    "bk_cloud_id": row.bk_cloud_id,
                    "ip": row.ip,
                    "ipv6": row.ipv6,
                    "agent_id": row.agent_id,
                    "status": int(HostStatus.LAST_SUCCESS if kept else HostStatus.WAITING),
                    "exit_code": row.exit_code if kept else None,
                    "tag": row.tag if kept else "",
                }
            )
        await self._insert_host_rows(conn, step.id, rows)
        await self._reopen(conn, step.job_instance_id, node_id, ttl)
        return True

    async def continue_job(
        self, step: Row[Any], status: int, node_id: str, ttl: float, conn: AsyncConnection
    ) -> bool:
        """Give a step of a finished job a passing status and hand the job to ``node_id``."""
        res = await conn.execute(
            update(step_instances)
            .where(step_instances.c.id == step.id, step_instances.c.status == step.status)
            .values(status=status, end_time=step.end_time or now_ms())
        )
        if not res.rowcount:
            return False
        await self._reopen(conn, step.job_instance_id, node_id, ttl)
        return True

    async def _reopen(self, conn: AsyncConnection, job_id: int, node_id: str, ttl: float) -> None:
        """A finished job runs again (an operator retried or skipped a step)."""
        await conn.execute(
            update(job_instances)
            .where(job_instances.c.id == job_id)
            .values(
                status=int(RunStatus.RUNNING),
                end_time=None,
                total_time=None,
                owner_node=node_id,
                lease_until=lease_clock() + ttl,
            )
        )

    async def update_step_if(self, step_id: int, expected: int, **values: Any) -> bool:
        """Change a step only while its status is ``expected``; False if it was not."""
        return await self._update_step(None, step_id, expected, values)

    async def change_step_if(
        self, step_id: int, expected: int, change: Callable[[Row[Any]], dict[str, Any]]
    ) -> bool:
        """Write what ``change`` makes of the step as it is now, while its status is
        ``expected``; False if it was not. The row is locked from the read to the write,
        so that two requests that both change its config (two approvers confirming at
        once) each see the other's change instead of overwriting it."""
        where = step_instances.c.id == step_id
        async with self.db.begin() as conn:
            query = select(step_instances).where(where)
            if self.db.is_sqlite:
                # SQLite has no row locks: an update takes its one write lock now
                await conn.execute(update(step_instances).where(where).values(id=step_id))
            else:
                query = query.with_for_update()
            row = (await conn.execute(query)).first()
            if row is None or row.status != expected:
                return False
            await conn.execute(update(step_instances).where(where).values(**change(row)))
            return True

    async def terminate_waiting(self, job_id: int) -> bool:
        """End a job created with ``start_task=false`` before it starts: the job, each
        step and each waiting host terminated (hosts as 403, with the error code and
        times of a host a terminate ends in a running job before its task was sent), in
        one transaction (the caller then finishes the job); False if it was no longer
        waiting."""
        now = now_ms()
        async with self.db.begin() as conn:
            res = await conn.execute(
                update(job_instances)
                .where(job_instances.c.id == job_id, job_instances.c.status == RunStatus.BLANK)
                .values(status=int(RunStatus.TERMINATED))
            )
            if not res.rowcount:
                return False
            step_ids = (
                (
                    await conn.execute(
                        select(step_instances.c.id).where(
                            step_instances.c.job_instance_id == job_id
                        )
                    )
                )
                .scalars()
                .all()
            )
            await conn.execute(
                update(step_instances)
                .where(step_instances.c.job_instance_id == job_id)
                .values(status=int(RunStatus.TERMINATED), end_time=now, total_time=0)
            )
            for part in chunks(list(step_ids)):
                await conn.execute(
                    update(step_hosts)
                    .where(
                        step_hosts.c.step_instance_id.in_(part),
                        step_hosts.c.status.in_(UNFINISHED_HOST),
                    )
                    .values(
                        status=int(HostStatus.GSE_TASK_TERMINATE_SUCCESS),
                        error_code=int(GseErrorCode.TERMINATED),
                        end_time=now,
                        total_time=0,
                    )
                )
            return True

    async def update_job(self, job_id: int, **values: Any) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                update(job_instances).where(job_instances.c.id == job_id).values(**values)
            )

    async def _update_job_if(self, fence: Fence, expected: int, values: dict[str, Any]) -> bool:
        async with self.db.begin() as conn:
            res = await conn.execute(
                update(job_instances)
                .where(
                    job_instances.c.id == fence.job_id,
                    job_instances.c.status == expected,
                    *self._job_owned(fence),
                )
                .values(**values)
            )
            if not res.rowcount:
                await self._lost_unless_owned(conn, fence)
            return bool(res.rowcount)

    async def mark_stopping(self, job_id: int) -> bool:
        """Mark a started, unfinished job as terminating (10); False if it had finished,
        was already terminating or had not started."""
        terminable = [
            int(s)
            for s in RunStatus
            if not s.finished and s not in (RunStatus.BLANK, RunStatus.STOPPING)
        ]
        async with self.db.begin() as conn:
            res = await conn.execute(
                update(job_instances)
                .where(job_instances.c.id == job_id, job_instances.c.status.in_(terminable))
                .values(status=int(RunStatus.STOPPING))
            )
            return bool(res.rowcount)

    async def finish_job(
        self,
        job_id: int,
        status: int,
        callback: tuple[str, str, int] | None,
        extra: Sequence[dict[str, Any]] = (),
        end_time: int | None = None,
    ) -> bool:
        """Final job status and, in the same transaction, its callback and ``extra`` rows
        (``kind, target, payload, max_attempts``: notifications) in the outbox; a job's
        driver finishes it through its ``JobLease``, this is for a job that never
        started."""
        return await self._finish_job(None, job_id, status, callback, extra, end_time)

    async def _finish_job(
        self,
        fence: Fence | None,
        job_id: int,
        status: int,
        callback: tuple[str, str, int] | None,
        extra: Sequence[dict[str, Any]],
        end_time: int | None,
        unless_stopping: bool = False,
    ) -> bool:
        """``unless_stopping``: write nothing, and answer False, if a terminate was taken
        (the job is terminating, 10) since the caller chose ``status``: the operator was
        told it was taken."""
        now = end_time or now_ms()
        async with self.db.begin() as conn:
            job = (
                await conn.execute(
                    select(job_instances.c.start_time, job_instances.c.create_time).where(
                        job_instances.c.id == job_id
                    )
                )
            ).one()
            started = job.start_time or job.create_time
            # in the update itself: a terminate is taken by a conditional update of the
            # same row (``mark_stopping``), so exactly one of the two sees the other
            not_stopping = (
                [job_instances.c.status != int(RunStatus.STOPPING)] if unless_stopping else []
            )
            res = await conn.execute(
                update(job_instances)
                .where(job_instances.c.id == job_id, *self._job_owned(fence), *not_stopping)
                .values(
                    status=status,
                    end_time=now,
                    total_time=now - started,
                    owner_node=None,
                    lease_until=None,
                )
            )
            if not res.rowcount and unless_stopping:
                status_now = (
                    await conn.execute(
                        select(job_instances.c.status).where(
                            job_instances.c.id == job_id, *self._job_owned(fence)
                        )
                    )
                ).scalar()
                if status_now == RunStatus.STOPPING:
                    return False
            if not res.rowcount and fence is not None:
                # nor its callback and notifications: the job's driver sends those
                raise LostJob(job_id, fence.node_id)
            await enqueue(conn, job_id, callback, extra, now)
            return True


class JobLease:
    """A driver's hold on its job, from the claim that gave it the job
    (``JobStore.claim``). Every write of the job's and its steps' state by the driver
    goes through it, and lands only while no later claim took the job (``LostJob``
    else)."""

    def __init__(self, store: JobStore, fence: Fence) -> None:
        self._store = store
        self.fence = fence

    @property
    def job_id(self) -> int:
        return self.fence.job_id

    async def update_step(self, step_id: int, **values: Any) -> None:
        await self._store._update_step(self.fence, step_id, None, values)

    async def update_step_if(self, step_id: int, expected: int, **values: Any) -> bool:
        """As ``JobStore.update_step_if``, for the driver."""
        return await self._store._update_step(self.fence, step_id, expected, values)

    async def update_job_if(self, expected: int, **values: Any) -> bool:
        """Change the job only while its status is ``expected``; False if it was not."""
        return await self._store._update_job_if(self.fence, expected, values)

    async def finish(
        self,
        status: int,
        callback: tuple[str, str, int] | None,
        extra: Sequence[dict[str, Any]] = (),
        end_time: int | None = None,
        unless_stopping: bool = False,
    ) -> bool:
        """As ``JobStore.finish_job``, for the driver; ``unless_stopping``: as for
        ``JobStore._finish_job``."""
        return await self._store._finish_job(
            self.fence, self.job_id, status, callback, extra, end_time, unless_stopping
        )


def _finish_row(r: HostResult) -> tuple[Any, ...]:
    """``_FINISH_FIELDS`` of a result."""
    return (
        r.step_instance_id,
        r.execute_count,
        r.bk_host_id,
        r.status,
        r.exit_code,
        r.error_code,
        r.tag,
        r.start_time,
        r.end_time or now_ms(),
    )


def _finish_params(r: HostResult) -> dict[str, Any]:
    return {
        "_step": r.step_instance_id,
        "_count": r.execute_count,
        "_host": r.bk_host_id,
        "_status": r.status,
        "_exit": r.exit_code,
        "_err": r.error_code,
        "_tag": r.tag,
        "_start": r.start_time,
        "_end": r.end_time or now_ms(),
    }
