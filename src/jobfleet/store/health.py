"""What probes and metrics ask of the database: is it there, how fast, is its schema
current, and a few cheap aggregated counts."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, text

from jobfleet.domain.status import RunStatus
from jobfleet.store.database import Database
from jobfleet.store.notify import EMAIL, WEBHOOK
from jobfleet.store.revisions import shipped_head
from jobfleet.store.tables import hosts, job_instances, outbox, step_hosts, step_instances

# a job in one of these has host tasks that still move
LIVE_JOB_STATUSES = (
    RunStatus.BLANK,
    RunStatus.RUNNING,
    RunStatus.WAITING_USER,
    RunStatus.STOPPING,
    RunStatus.ROLLING_WAITING,
)


def connection_lost(error: BaseException) -> bool:
    """Is this the database gone away (refused, reset, a connection invalidated, none free
    in time), rather than a statement it refused?"""
    if isinstance(error, ConnectionError | sa_exc.TimeoutError):
        return True
    return isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated


def head_revision() -> str | None:
    """The newest migration this program ships."""
    return shipped_head()


@dataclass
class Counts:
    # job instances by status (every job the store holds)
    jobs: dict[int, int] = field(default_factory=dict)
    # host tasks of jobs still running, by host status
    host_tasks: dict[int, int] = field(default_factory=dict)
    # hosts of the inventory by whether their agent is connected
    hosts_alive: int = 0
    hosts_dead: int = 0
    # outbox rows waiting to be delivered, by kind (callback, webhook, email)
    outbox_pending: dict[str, int] = field(default_factory=dict)


class Health:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ping(self) -> float:
        """Seconds one round trip to the database takes; raises when it is not there."""
        started = time.perf_counter()
        async with self.db.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return time.perf_counter() - started

    async def answers(self, timeout: float = 5.0) -> bool:
        """Does the database answer a round trip within ``timeout`` seconds?"""
        try:
            await asyncio.wait_for(self.ping(), timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            return False
        return True

    async def revision(self) -> str | None:
        """The migration the database is at (none: not migrated)."""
        revisions = await self.db.revisions()
        return revisions[0] if revisions else None

    async def counts(self) -> Counts:
        counts = Counts()
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(job_instances.c.status, func.count()).group_by(job_instances.c.status)
            )
            counts.jobs = {int(status): int(n) for status, n in rows}
            live_steps = (
                select(step_instances.c.id)
                .join(job_instances, job_instances.c.id == step_instances.c.job_instance_id)
                .where(job_instances.c.status.in_([int(s) for s in LIVE_JOB_STATUSES]))
            )
            rows = await conn.execute(
                select(step_hosts.c.status, func.count())
                .where(step_hosts.c.step_instance_id.in_(live_steps))
                .group_by(step_hosts.c.status)
            )
            counts.host_tasks = {int(status): int(n) for status, n in rows}
            rows = await conn.execute(
                select(hosts.c.alive, func.count()).group_by(hosts.c.alive)
            )
            for alive, n in rows:
                if alive:
                    counts.hosts_alive += int(n)
                else:
                    counts.hosts_dead += int(n)
            rows = await conn.execute(
                select(outbox.c.kind, func.count())
                .where(outbox.c.state == "pending")
                .group_by(outbox.c.kind)
            )
            counts.outbox_pending = dict.fromkeys(("callback", WEBHOOK, EMAIL), 0)
            counts.outbox_pending.update({str(kind): int(n) for kind, n in rows})
        return counts
