"""The outbox: job callbacks, notification webhooks and mails waiting to be delivered.

Rows are added in the transaction that sets a job's final status (``enqueue``), so a
delivery survives a restart. A sender claims a due row by pushing its next attempt
into the future with a conditional update, so two nodes never send the same attempt,
and records each attempt's outcome on the row.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.store.database import Database
from jobfleet.store.tables import outbox


async def enqueue(
    conn: AsyncConnection,
    job_id: int,
    callback: tuple[str, str, int] | None,
    extra: Sequence[dict[str, Any]],
    now: int,
) -> None:
    """Add a job's callback (``url, payload, max_attempts``) and ``extra`` rows
    (``kind, target, payload, max_attempts``: notifications) in ``conn``'s transaction."""
    if callback is not None:
        url, payload, attempts = callback
        await conn.execute(
            insert(outbox).values(
                kind="callback",
                job_instance_id=job_id,
                target=url,
                payload=payload,
                attempts=0,
                max_attempts=attempts,
                next_attempt_at=time.time(),
                state="pending",
                last_error="",
                create_time=now,
            )
        )
    if extra:
        await conn.execute(
            insert(outbox),
            [
                {
                    "job_instance_id": job_id,
                    "attempts": 0,
                    "next_attempt_at": time.time(),
                    "state": "pending",
                    "last_error": "",
                    "create_time": now,
                    **row,
                }
                for row in extra
            ],
        )


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def due(self, now: float, limit: int) -> list[Row[Any]]:
        """Pending rows whose next attempt is due, the longest waiting first."""
        async with self.db.connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(outbox)
                        .where(outbox.c.state == "pending", outbox.c.next_attempt_at <= now)
                        .order_by(outbox.c.next_attempt_at)
                        .limit(limit)
                    )
                ).all()
            )

    async def claim(self, row: Row[Any], until: float, node_id: str) -> bool:
        """Take ``row``'s attempt (its next attempt moves to ``until``); False if
        another node took it or it changed since it was read."""
        async with self.db.begin() as conn:
            claimed = await conn.execute(
                update(outbox)
                .where(
                    outbox.c.id == row.id,
                    outbox.c.state == "pending",
                    outbox.c.next_attempt_at == row.next_attempt_at,
                )
                .values(next_attempt_at=until, lease_owner=node_id)
            )
        return bool(claimed.rowcount)

    async def hold(self, row_ids: Sequence[int], due_by: float, until: float) -> None:
        """Put off these rows, read as due by ``due_by``, to ``until`` without counting an
        attempt; a row claimed or changed since is left as it is."""
        if not row_ids:
            return
        async with self.db.begin() as conn:
            await conn.execute(
                update(outbox)
                .where(
                    outbox.c.id.in_(row_ids),
                    outbox.c.state == "pending",
                    outbox.c.next_attempt_at <= due_by,
                )
                .values(next_attempt_at=until)
            )

    async def record(self, row_id: int, values: dict[str, object]) -> None:
        """An attempt's outcome: attempts, last error, and the state or next attempt."""
        async with self.db.begin() as conn:
            await conn.execute(update(outbox).where(outbox.c.id == row_id).values(**values))

    async def add(self, kind: str, target: str, payload: str, max_attempts: int) -> int:
        """One row of no job (a notification config's test message), due now."""
        async with self.db.begin() as conn:
            res = await conn.execute(
                insert(outbox).values(
                    kind=kind,
                    job_instance_id=None,
                    target=target,
                    payload=payload,
                    attempts=0,
                    max_attempts=max_attempts,
                    next_attempt_at=time.time(),
                    state="pending",
                    last_error="",
                    create_time=int(time.time() * 1000),
                )
            )
            return int(res.inserted_primary_key[0])  # type: ignore[index]

    async def get(self, row_id: int) -> Row[Any] | None:
        async with self.db.connect() as conn:
            return (await conn.execute(select(outbox).where(outbox.c.id == row_id))).first()
