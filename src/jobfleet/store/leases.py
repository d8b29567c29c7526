"""Job leases: which node drives an active job, and until when.

A lease is two columns of the job's row (``owner_node``, ``lease_until``, in
epoch seconds). A node renews its leases while it lives; an active job whose
lease lapsed (its node died) may be claimed by any node.

Lease times are written and compared in the database's clock (``lease_clock``),
never a node's: nodes whose clocks disagree still agree on which leases lapsed, so
a node whose clock runs ahead cannot take a job whose driver still renews it, and
one whose clock lags cannot hold a dead node's job past its lease.

Every claim bumps the job's ``lease_gen``, and gives its driver the ``Fence`` its
writes are conditioned on (``store/jobs.py``, ``JobLease``): the node and that
generation. A driver of an earlier claim, on another node or on this same one (its
lease lapsed or was given up while it was stuck), writes nothing once the job was
claimed again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from jobfleet.domain.status import FINISHED_RUN_STATUSES, RunStatus
from jobfleet.store.database import Database
from jobfleet.store.tables import job_instances, step_instances

ACTIVE_JOB = tuple(
    int(s) for s in RunStatus if s not in FINISHED_RUN_STATUSES and s is not RunStatus.BLANK
)


# tests give one node of a cluster a skewed clock through this (the machine's clock
# stays as it is); never set in a deployment
CLOCK_OFFSET_ENV = "JOBFLEET_TEST_CLOCK_OFFSET"


def node_clock() -> float:
    """This node's wall clock (epoch seconds). Leases never read it (they use
    ``lease_clock``); it is compared with the database's to report skew."""
    return time.time() + float(os.environ.get(CLOCK_OFFSET_ENV) or 0.0)


class lease_clock(FunctionElement[float]):
    """The database's clock in epoch seconds, as a SQL expression: the one clock of
    every lease expiry written or compared."""

    type = Float()
    inherit_cache = True
    name = "lease_clock"


@compiles(lease_clock, "sqlite")
def _sqlite_clock(element: lease_clock, compiler: SQLCompiler, **kw: Any) -> str:
    # julianday keeps milliseconds; a single node's database, so one clock anyway
    return "((julianday('now') - 2440587.5) * 86400.0)"


@compiles(lease_clock, "postgresql")
def _postgresql_clock(element: lease_clock, compiler: SQLCompiler, **kw: Any) -> str:
    # clock_timestamp, not now(): now() stands still for a whole transaction
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


@dataclass(frozen=True)
class Fence:
    """One claim of a job: its driver's writes land only while the job's row still
    names this node and generation."""

    job_id: int
    node_id: str
    generation: int


class LeaseStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claimable(self, node_id: str) -> list[int]:
        """Active jobs that this node may drive: its own, unowned, or with a lapsed lease."""
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(job_instances.c.id).where(
                    job_instances.c.status.in_(ACTIVE_JOB),
                    or_(
                        job_instances.c.owner_node == node_id,
                        job_instances.c.owner_node.is_(None),
                        job_instances.c.lease_until < lease_clock(),
                    ),
                )
            )
            return [int(r[0]) for r in rows]

    async def claim(self, job_id: int, node_id: str, ttl: float) -> Fence | None:
        """Take the job for a driver on ``node_id``, as a new generation of its lease
        (None if another node's lease holds, or the job is not active)."""
        async with self.db.begin() as conn:
            generation = await self._take(conn, job_id, node_id, ttl, new_generation=True)
            return None if generation is None else Fence(job_id, node_id, generation)

    async def take(self, job_id: int, node_id: str, ttl: float) -> bool:
        """Hold the job's lease for ``node_id`` until the driver it launches claims the
        job (``claim``), without a new generation: a driver of this node that claimed
        the job since the caller last looked keeps writing (False as for ``claim``)."""
        async with self.db.begin() as conn:
            return await self._take(conn, job_id, node_id, ttl, new_generation=False) is not None

    @staticmethod
    async def _take(
        conn: AsyncConnection, job_id: int, node_id: str, ttl: float, *, new_generation: bool
    ) -> int | None:
        """The lease's generation once taken, None if it was not."""
        values: dict[str, Any] = {"owner_node": node_id, "lease_until": lease_clock() + ttl}
        if new_generation:
            values["lease_gen"] = job_instances.c.lease_gen + 1
        res = await conn.execute(
            update(job_instances)
            .where(
                job_instances.c.id == job_id,
                job_instances.c.status.in_(ACTIVE_JOB),
                or_(
                    job_instances.c.owner_node == node_id,
                    job_instances.c.owner_node.is_(None),
                    job_instances.c.lease_until < lease_clock(),
                ),
            )
            .values(**values)
            .returning(job_instances.c.lease_gen)
        )
        generation = res.scalar()
        return None if generation is None else int(generation)

    async def renew(self, node_id: str, ttl: float, given_up: Iterable[int] = ()) -> None:
        """Renew this node's leases but those of ``given_up`` jobs."""
        skip = sorted(given_up)
        where = [job_instances.c.owner_node == node_id, job_instances.c.status.in_(ACTIVE_JOB)]
        if skip:
            where.append(job_instances.c.id.not_in(skip))
        async with self.db.begin() as conn:
            await conn.execute(
                update(job_instances).where(*where).values(lease_until=lease_clock() + ttl)
            )

    async def clock_skew(self) -> float:
        """How far this node's clock runs ahead of the database's (negative: behind),
        in seconds, within half a round trip."""
        async with self.db.connect() as conn:
            before = node_clock()
            theirs = float((await conn.execute(select(lease_clock()))).scalar_one())
            after = node_clock()
        return (before + after) / 2 - theirs

    async def give_up(self, job_id: int, node_id: str) -> None:
        """Let the lease of a job this node holds lapse now: any node may claim it."""
        async with self.db.begin() as conn:
            await conn.execute(
                update(job_instances)
                .where(job_instances.c.id == job_id, job_instances.c.owner_node == node_id)
                .values(lease_until=0.0)
            )

    async def owner_of_job(self, job_id: int) -> str | None:
        """The node driving an active job now, if any: a lapsed lease names a node that
        may be dead, and what is sent there waits for nobody until the job is claimed
        again (its next driver starts from the store)."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(job_instances.c.owner_node).where(
                        job_instances.c.id == job_id,
                        job_instances.c.status.in_(ACTIVE_JOB),
                        job_instances.c.lease_until >= lease_clock(),
                    )
                )
            ).first()
        return row[0] if row is not None else None

    async def owners_of_steps(self, step_ids: list[int]) -> dict[int, str]:
        """The nodes driving the active jobs of these steps, by step; a step whose job's
        lease lapsed has none (as ``owner_of_job``)."""
        if not step_ids:
            return {}
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(step_instances.c.id, job_instances.c.owner_node)
                .join(job_instances, job_instances.c.id == step_instances.c.job_instance_id)
                .where(
                    step_instances.c.id.in_(sorted(set(step_ids))),
                    job_instances.c.status.in_(ACTIVE_JOB),
                    job_instances.c.owner_node.is_not(None),
                    job_instances.c.lease_until >= lease_clock(),
                )
            )
            return {int(r[0]): str(r[1]) for r in rows}
