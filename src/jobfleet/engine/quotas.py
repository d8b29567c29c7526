"""Running-job quotas, enforced where a job starts running (docs/notifications.md).

The check runs inside the transaction that creates (or starts) the job. When the
business or the app has a limit, that transaction first locks the limit's row
(PostgreSQL) or takes SQLite's write lock, then counts: two submissions of one
business therefore count one after the other, on one node or many, and a quota is
never exceeded. Without limits nothing is locked and the check is one read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store import quotas
from jobfleet.store.database import Database


async def check(conn: AsyncConnection, bk_biz_id: int, app_code: str) -> None:
    """Raise 1244032 (business) or 1244033 (app) when one more running job does not fit."""
    found = await quotas.limits(conn, bk_biz_id, app_code)
    if not found.limited:
        return
    await quotas.lock(conn, found, bk_biz_id, app_code)
    biz_running, app_running = await quotas.running(conn, bk_biz_id, app_code)
    if found.biz_limit is not None and biz_running >= found.biz_limit:
        raise JobError(
            ErrorCode.RUNNING_JOB_QUOTA_SCOPE,
            f"Business {bk_biz_id} already runs {biz_running} jobs, its limit "
            f"(max_running_jobs {found.biz_limit}); try again when one has finished",
        )
    if found.app_limit is not None and app_running >= found.app_limit:
        raise JobError(
            ErrorCode.RUNNING_JOB_QUOTA_APP,
            f"App {app_code!r} already runs {app_running} jobs, its limit "
            f"(max_running_jobs {found.app_limit}); try again when one has finished",
        )


@asynccontextmanager
async def admitted(
    db: Database, bk_biz_id: int, app_code: str, conn: AsyncConnection | None = None
) -> AsyncIterator[AsyncConnection]:
    """A transaction (``conn``'s, when given) in which one more running job fits the
    quotas; write the job in it, so that the check holds until it commits."""
    if conn is not None:
        await check(conn, bk_biz_id, app_code)
        yield conn
        return
    async with db.begin() as own:
        await check(own, bk_biz_id, app_code)
        yield own


async def start_waiting(db: Database, job: Row[Any], **values: Any) -> bool:
    """Start a job created with ``start_task=false`` if it fits the quotas; False if it
    was no longer waiting."""
    async with admitted(db, job.bk_biz_id, job.app_code) as conn:
        return await quotas.start_waiting(conn, job.id, **values)
