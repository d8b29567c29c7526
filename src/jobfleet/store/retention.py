"""Deleting what is older than its retention period, a bounded batch per transaction."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, delete, exists, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.status import FINISHED_RUN_STATUSES, RunStatus
from jobfleet.store.database import Database
from jobfleet.store.tables import (
    audit_log,
    blob_parts,
    blob_readers,
    blobs,
    cron_firings,
    file_logs,
    heal_decisions,
    job_instances,
    job_plans,
    job_templates,
    log_chunks,
    outbox,
    proc_operations,
    proc_results,
    step_hosts,
    step_instances,
)

# blob ids are uuid4 hex: any such token in a plan, template or live step names a blob
BLOB_ID = re.compile(r"\b[0-9a-f]{32}\b")
FINAL = [int(s) for s in FINISHED_RUN_STATUSES]
# asked of the status index one value each; "not finished" would read all of it, a
# row for every job kept
UNFINISHED = [int(s) for s in RunStatus if s not in FINISHED_RUN_STATUSES]


def _purgeable(before_ms: int) -> list[ColumnElement[bool]]:
    """What lets a job go: finished, before ``before_ms``, and no callback or notice of
    it still being retried (its retry span may outlast a short job period)."""
    return [
        # nearly every job is finished: "+ 0" keeps SQLite (with sampled statistics, or
        # none before the first ANALYZE) from reading all of them by the status index and
        # sorting them to keep the oldest few
        (job_instances.c.status + 0).in_(FINAL),
        or_(job_instances.c.end_time.is_(None), job_instances.c.end_time < before_ms),
        ~exists().where(
            outbox.c.job_instance_id == job_instances.c.id, outbox.c.state == "pending"
        ),
    ]


class RetentionStore:
    def __init__(self, db: Database, blob_root: Path) -> None:
        self.db = db
        self.blob_root = blob_root

    async def purge_jobs(self, before_ms: int, limit: int) -> int:
        """Jobs that finished before ``before_ms``, with every row they own."""
        async with self.db.begin() as conn:
            ids = await self._old_finished_jobs(conn, before_ms, limit)
            if not ids:
                return 0
            # the job rows go first, each only if it still may: one retried or continued
            # since it was picked runs again (or has a callback pending again), and keeps
            # everything it owns
            gone = list(
                (
                    await conn.execute(
                        delete(job_instances)
                        .where(job_instances.c.id.in_(ids), *_purgeable(before_ms))
                        .returning(job_instances.c.id)
                    )
                ).scalars()
            )
            if not gone:
                return 0
            # named by a subquery, not listed: a job may own more steps than a statement
            # takes arguments (asyncpg: 32,767)
            steps = select(step_instances.c.id).where(step_instances.c.job_instance_id.in_(gone))
            for table in (log_chunks, step_hosts, file_logs):
                await conn.execute(delete(table).where(table.c.step_instance_id.in_(steps)))
            await conn.execute(
                delete(step_instances).where(step_instances.c.job_instance_id.in_(gone))
            )
            await conn.execute(delete(outbox).where(outbox.c.job_instance_id.in_(gone)))
        return len(gone)

    async def _old_finished_jobs(
        self, conn: AsyncConnection, before_ms: int, limit: int
    ) -> list[int]:
        return list(
            (
                await conn.execute(
                    select(job_instances.c.id)
                    # created before is indexed; finished before is what is kept by
                    .where(job_instances.c.create_time < before_ms, *_purgeable(before_ms))
                    .order_by(job_instances.c.create_time)
                    .limit(limit)
                )
            ).scalars()
        )

    async def purge_audit(self, before_ms: int, limit: int) -> int:
        return await self._purge_older(audit_log, before_ms, limit)

    async def purge_heal_decisions(self, before_ms: int, limit: int) -> int:
        return await self._purge_older(heal_decisions, before_ms, limit)

    async def purge_proc_operations(self, before_ms: int, limit: int) -> int:
        """At most ``limit`` GSE process operations created before ``before_ms``, with
        their per-host results; how many operations went."""
        return await self._purge_older(
            proc_operations, before_ms, limit,
            key=proc_operations.c.task_id, children=(proc_results.c.task_id,),
        )

    async def purge_cron_firings(self, before_ms: int, limit: int) -> int:
        """At most ``limit`` cron firings recorded before ``before_ms``, oldest first; the
        latest firing of each cron stays whatever its age, for its cron's pages."""
        newer = cron_firings.alias("newer")
        superseded = (
            select(newer.c.slot)
            .where(newer.c.cron_id == cron_firings.c.cron_id, newer.c.slot > cron_firings.c.slot)
            .exists()
        )
        async with self.db.begin() as conn:
            keys = [
                (int(r.cron_id), int(r.slot))
                for r in await conn.execute(
                    select(cron_firings.c.cron_id, cron_firings.c.slot)
                    .where(cron_firings.c.create_time < before_ms, superseded)
                    .order_by(cron_firings.c.create_time)
                    .limit(limit)
                )
            ]
            if keys:
                await conn.execute(
                    delete(cron_firings).where(
                        tuple_(cron_firings.c.cron_id, cron_firings.c.slot).in_(keys)
                    )
                )
        return len(keys)

    async def _purge_older(
        self,
        table: Table,
        before_ms: int,
        limit: int,
        *,
        key: Column[Any] | None = None,
        children: tuple[Column[Any], ...] = (),
    ) -> int:
        """At most ``limit`` rows of ``table`` created before ``before_ms``, oldest first,
        with the rows whose ``children`` columns name them. ``key`` is the row's id.

        Found in the order of the creation time's index: in the id's order a batch read
        every younger row until it had ``limit`` old ones, all of the table when none
        was left."""
        column = table.c.id if key is None else key
        async with self.db.begin() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(column)
                        .where(table.c.create_time < before_ms)
                        .order_by(table.c.create_time)
                        .limit(limit)
                    )
                ).scalars()
            )
            if ids:
                for child in children:
                    await conn.execute(delete(child.table).where(child.in_(ids)))
                await conn.execute(delete(table).where(column.in_(ids)))
        return len(ids)

    async def blobs_in_use(self, changed_since: int | None = None) -> set[str]:
        """Blobs that plans, templates and jobs not yet finished still name; with
        ``changed_since`` (epoch ms), of the plans and templates only those saved since."""
        found: set[str] = set()
        async with self.db.connect() as conn:
            for table in (job_templates, job_plans):
                query = select(table.c.steps)
                if changed_since is not None:
                    query = query.where(table.c.last_modify_time >= changed_since)
                for value in (await conn.execute(query)).scalars():
                    _collect(value, found)
            live = select(job_instances.c.id).where(job_instances.c.status.in_(UNFINISHED))
            live_steps = select(step_instances.c.id).where(
                step_instances.c.job_instance_id.in_(live)
            )
            for value in (
                await conn.execute(
                    select(step_instances.c.config).where(step_instances.c.id.in_(live_steps))
                )
            ).scalars():
                _collect(value, found)
            rows = await conn.execute(
                select(file_logs.c.blob_id).where(
                    file_logs.c.step_instance_id.in_(live_steps), file_logs.c.blob_id.is_not(None)
                )
            )
            found.update(str(r) for r in rows.scalars())
        return found

    async def purge_blobs(
        self, before_ms: int, limit: int, keep: set[str], after: str
    ) -> tuple[str, int]:
        """Blobs created before ``before_ms`` and not in ``keep``, ids past ``after``;
        their files go too. The last id looked at ("" when none is left) and how many went."""
        async with self.db.begin() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(blobs.c.id)
                        .where(blobs.c.create_time < before_ms, blobs.c.id > after)
                        .order_by(blobs.c.id)
                        .limit(limit)
                    )
                ).scalars()
            )
            doomed = [i for i in ids if i not in keep]
            if doomed:
                await conn.execute(delete(blob_readers).where(blob_readers.c.blob_id.in_(doomed)))
                await conn.execute(delete(blob_parts).where(blob_parts.c.blob_id.in_(doomed)))
                await conn.execute(delete(blobs).where(blobs.c.id.in_(doomed)))
        # rows first: a reader then finds no row rather than a row without its file
        await asyncio.to_thread(self._unlink, doomed)
        return (ids[-1] if len(ids) == limit else ""), len(doomed)

    def _unlink(self, ids: list[str]) -> None:
        for blob_id in ids:
            for path in (
                self.blob_root / blob_id,
                self.blob_root / f"{blob_id}.part",
                self.blob_root / f"{blob_id}.pieces",
            ):
                path.unlink(missing_ok=True)


def _collect(value: Any, found: set[str]) -> None:
    if value is None:
        return
    found.update(BLOB_ID.findall(value if isinstance(value, str) else repr(value)))
