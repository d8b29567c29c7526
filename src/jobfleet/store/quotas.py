"""Running-job quotas: the limits of businesses and apps, and how many of their jobs run.

A job counts as running while its status is active (``ACTIVE_JOB``); a limit of
``None`` means no limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import RunStatus
from jobfleet.store.database import Database
from jobfleet.store.leases import ACTIVE_JOB
from jobfleet.store.tables import apps, businesses, job_instances


@dataclass(frozen=True)
class Limits:
    """The limits of one business and one app."""

    biz_limit: int | None
    app_limit: int | None

    @property
    def limited(self) -> bool:
        return self.biz_limit is not None or self.app_limit is not None


async def limits(conn: AsyncConnection, bk_biz_id: int, app_code: str) -> Limits:
    biz = (
        select(businesses.c.max_running_jobs)
        .where(businesses.c.bk_biz_id == bk_biz_id)
        .scalar_subquery()
    )
    app = select(apps.c.max_running_jobs).where(apps.c.app_code == app_code).scalar_subquery()
    row = (await conn.execute(select(biz, app))).one()
    return Limits(row[0], row[1])


async def lock(conn: AsyncConnection, found: Limits, bk_biz_id: int, app_code: str) -> None:
    """Hold the rows of the limits until ``conn`` commits, so that submissions of one
    business (or app) count and insert one after another.

    PostgreSQL locks the rows; SQLite has no row locks, and an update is what makes it
    take its single write lock now instead of at the first insert.
    """
    sqlite = conn.dialect.name == "sqlite"
    targets = []
    if found.biz_limit is not None:
        targets.append((businesses, businesses.c.bk_biz_id == bk_biz_id, "max_running_jobs"))
    if found.app_limit is not None:
        targets.append((apps, apps.c.app_code == app_code, "max_running_jobs"))
    # always business before app, so two submissions never wait on each other in a cycle
    for table, where, column in targets:
        if sqlite:
            await conn.execute(update(table).where(where).values({column: table.c[column]}))
            return  # one write lock covers every table
        await conn.execute(select(table.c[column]).where(where).with_for_update())


async def running(conn: AsyncConnection, bk_biz_id: int, app_code: str) -> tuple[int, int]:
    """Active jobs of the business and of the app, in one pass over the status index."""
    row = (
        await conn.execute(
            select(
                func.coalesce(
                    func.sum(case((job_instances.c.bk_biz_id == bk_biz_id, 1), else_=0)), 0
                ),
                func.coalesce(
                    func.sum(case((job_instances.c.app_code == app_code, 1), else_=0)), 0
                ),
            ).where(
                job_instances.c.status.in_(ACTIVE_JOB),
                or_(job_instances.c.bk_biz_id == bk_biz_id, job_instances.c.app_code == app_code),
            )
        )
    ).one()
    return int(row[0]), int(row[1])


class QuotaStore:
    """Reading and setting the limits (the API's side)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def business(self, bk_biz_id: int) -> tuple[int | None, int]:
        """The business's limit and its running jobs."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(businesses.c.max_running_jobs).where(businesses.c.bk_biz_id == bk_biz_id)
                )
            ).first()
            if row is None:
                raise JobError(ErrorCode.BIZ_NOT_EXIST, f"Business {bk_biz_id} does not exist")
            count = (
                await conn.execute(
                    select(func.count()).where(
                        job_instances.c.status.in_(ACTIVE_JOB),
                        job_instances.c.bk_biz_id == bk_biz_id,
                    )
                )
            ).scalar_one()
            return row[0], int(count)

    async def app(self, app_code: str) -> tuple[int | None, int]:
        """The app's limit and its running jobs."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(apps.c.max_running_jobs).where(apps.c.app_code == app_code)
                )
            ).first()
            if row is None:
                raise JobError(ErrorCode.NOT_FOUND, f"App {app_code!r} does not exist")
            count = (
                await conn.execute(
                    select(func.count()).where(
                        job_instances.c.status.in_(ACTIVE_JOB),
                        job_instances.c.app_code == app_code,
                    )
                )
            ).scalar_one()
            return row[0], int(count)

    async def set_business(self, bk_biz_id: int, limit: int | None) -> None:
        async with self.db.begin() as conn:
            res = await conn.execute(
                update(businesses)
                .where(businesses.c.bk_biz_id == bk_biz_id)
                .values(max_running_jobs=limit)
            )
        if not res.rowcount:
            raise JobError(ErrorCode.BIZ_NOT_EXIST, f"Business {bk_biz_id} does not exist")

    async def set_app(self, app_code: str, limit: int | None) -> None:
        async with self.db.begin() as conn:
            res = await conn.execute(
                update(apps).where(apps.c.app_code == app_code).values(max_running_jobs=limit)
            )
        if not res.rowcount:
            raise JobError(ErrorCode.NOT_FOUND, f"App {app_code!r} does not exist")


async def start_waiting(conn: AsyncConnection, job_id: int, **values: object) -> bool:
    """Start a job created with ``start_task=false``; False if it was no longer waiting."""
    res = await conn.execute(
        update(job_instances)
        .where(job_instances.c.id == job_id, job_instances.c.status == int(RunStatus.BLANK))
        .values(**values)
    )
    return bool(res.rowcount)
