"""Cron jobs: schedules that launch execution plans, and the slots they fired.

A cron's ``variables`` are the values it gives its plan's global variables, kept as
``[{id, name, type, value}]`` (``server`` instead of ``value`` for host variables)
with password values encrypted, also those given to a variable that became a password
of the plan after the cron was saved (``seal_plan_passwords``: when the plan is synced,
and when the cron is read or fires). ``next_fire_at`` is the next slot on the cron
clock (``jobfleet.domain.cron.CronClock``); it is null while the cron is paused or has
nothing left to fire. Moving it from one slot to the next, and saving, starting or
pausing the cron, are compare-and-sets on its status and slot, and ``cron_firings`` has
one row per slot, so a slot is handled once whatever the number of server processes.

A name is held by one cron of a scope (bk-job's 1245004). The API reads first, to name
the holder, and a unique index on the name decides between writers that read at once:
a create or a rename that loses to it is refused as the read would have refused it.
Crons that shared a name before names were held keep it: the later ones are
``name_shared`` and out of the index (migration 0023), and are never made anew, so the
read alone keeps new crons from their name.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import CronStatus, VariableType
from jobfleet.store.database import Database, now_ms
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import businesses, cron_firings, crons, job_instances, job_plans

FIRED = "fired"
SKIPPED = "skipped"
FAILED = "failed"


def seal_values(entries: list[dict[str, Any]], cipher: Cipher) -> list[dict[str, Any]]:
    out = []
    for entry in entries:
        item = dict(entry)
        if item.get("type") == VariableType.PASSWORD and item.get("value"):
            item["value"] = cipher.encrypt(str(item["value"]))
        out.append(item)
    return out


def open_values(raw: list[dict[str, Any]] | None, cipher: Cipher) -> list[dict[str, Any]]:
    out = []
    for entry in raw or []:
        item = dict(entry)
        if item.get("type") == VariableType.PASSWORD and item.get("value"):
            item["value"] = cipher.decrypt(str(item["value"]))
        out.append(item)
    return out


def resealed(
    entries: list[dict[str, Any]] | None, plan_variables: Any, cipher: Cipher
) -> list[dict[str, Any]] | None:
    """A cron's stored values with those given to what is now a password variable of
    its plan sealed and typed as passwords; None when there is none to seal.

    The plan's variable may have become a password after the cron was saved: its value
    was stored, and shown, as the plain value it then was."""
    secret_ids: set[Any] = set()
    secret_names: set[Any] = set()
    for var in plan_variables or []:
        if isinstance(var, dict) and var.get("type") == VariableType.PASSWORD:
            secret_ids.add(var.get("id"))
            secret_names.add(var.get("name"))
    out: list[dict[str, Any]] = []
    changed = False
    for entry in entries or []:
        item = dict(entry)
        var_id = item.get("id")
        secret = var_id in secret_ids if var_id is not None else item.get("name") in secret_names
        if secret and item.get("type") != VariableType.PASSWORD:
            value = item.get("value")
            item = {k: v for k, v in item.items() if k != "server"}
            item["type"] = int(VariableType.PASSWORD)
            item["value"] = cipher.encrypt(str(value)) if value else (value or "")
            changed = True
        out.append(item)
    return out if changed else None


async def seal_plan_passwords(
    conn: AsyncConnection, plan_id: int, cipher: Cipher, cron_id: int | None = None
) -> int:
    """Seal, in the crons launching a plan (or one of them), the values given to what
    is now a password variable of that plan; the number of crons changed."""
    plan_vars = (
        await conn.execute(select(job_plans.c.variables).where(job_plans.c.id == plan_id))
    ).scalar()
    if not any(
        isinstance(v, dict) and v.get("type") == VariableType.PASSWORD for v in plan_vars or []
    ):
        return 0
    query = select(crons.c.id, crons.c.variables).where(crons.c.plan_id == plan_id)
    if cron_id is not None:
        query = query.where(crons.c.id == cron_id)
    changed = 0
    for row in (await conn.execute(query)).all():
        fresh = resealed(row.variables, plan_vars, cipher)
        if fresh is not None:
            await conn.execute(update(crons).where(crons.c.id == row.id).values(variables=fresh))
            changed += 1
    return changed


async def refuse_launched_plans(conn: AsyncConnection, plan_ids: list[int]) -> None:
    """CONFLICT when a cron launches one of these plans (they must not be deleted)."""
    if not plan_ids:
        return
    used = (
        await conn.execute(
            select(crons.c.id, crons.c.plan_id).where(crons.c.plan_id.in_(plan_ids)).limit(1)
        )
    ).first()
    if used is not None:
        raise JobError(
            ErrorCode.CONFLICT,
            f"Job plan {used.plan_id} is launched by cron {used.id}: delete the cron first",
        )


def name_taken(name: str, holder: int | None) -> JobError:
    """bk-job's refusal of a cron name another cron of the scope holds."""
    held = "" if holder is None else f": it is cron {holder}"
    return JobError(ErrorCode.CRON_EXISTS, f"Cron job [{name}] already existed{held}")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class CronStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def business_timezone(self, bk_biz_id: int) -> str | None:
        async with self.db.connect() as conn:
            value = (
                await conn.execute(
                    select(businesses.c.timezone).where(businesses.c.bk_biz_id == bk_biz_id)
                )
            ).scalar()
        return str(value) if value else None

    # the API's side ---------------------------------------------------------
    async def create(self, values: dict[str, Any]) -> int:
        """A new cron; CRON_EXISTS when another cron of its scope took its name meanwhile."""
        now = now_ms()
        try:
            async with self.db.begin() as conn:
                res = await conn.execute(
                    insert(crons).values(
                        status=int(CronStatus.PAUSED),
                        create_time=now,
                        last_modify_time=now,
                        **values,
                    )
                )
        except IntegrityError:
            raise await self._taken(
                values["scope_type"], values["scope_id"], values["name"]
            ) from None
        return int(res.inserted_primary_key[0])  # type: ignore[index]

    async def _taken(
        self, scope_type: str, scope_id: str, name: str, cron_id: int | None = None
    ) -> JobError:
        # the unique index refused the write, so the name had a holder: the cron that won
        holder = await self.named(scope_type, scope_id, name, other_than=cron_id)
        return name_taken(name, holder)

    async def named(
        self, scope_type: str, scope_id: str, name: str, *, other_than: int | None = None
    ) -> int | None:
        """The id of a cron of the scope with this exact name (but ``other_than``)."""
        cond = [
            crons.c.scope_type == scope_type,
            crons.c.scope_id == scope_id,
            crons.c.name == name,
        ]
        if other_than is not None:
            cond.append(crons.c.id != other_than)
        async with self.db.connect() as conn:
            value = (
                await conn.execute(select(crons.c.id).where(*cond).order_by(crons.c.id).limit(1))
            ).scalar()
        return None if value is None else int(value)

    async def get(self, scope_type: str, scope_id: str, cron_id: int) -> Row[Any]:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(crons).where(
                        crons.c.id == cron_id,
                        crons.c.scope_type == scope_type,
                        crons.c.scope_id == scope_id,
                    )
                )
            ).first()
        if row is None:
            raise JobError(
                ErrorCode.CRON_NOT_EXIST,
                f"Cron {cron_id} does not exist in {scope_type} {scope_id}",
            )
        return row

    async def page(
        self,
        scope_type: str,
        scope_id: str,
        *,
        cron_id: int | None = None,
        name: str | None = None,
        status: int | None = None,
        creator: str | None = None,
        last_modify_user: str | None = None,
        create_range: tuple[int | None, int | None] = (None, None),
        modify_range: tuple[int | None, int | None] = (None, None),
        offset: int = 0,
        limit: int = 20,
    ) -> tuple[int, list[Row[Any]]]:
        """A page of crons; times in the ranges are epoch ms, both ends included."""
        cond: list[Any] = [crons.c.scope_type == scope_type, crons.c.scope_id == scope_id]
        if cron_id is not None:
            # bk-job: an id makes the other filters moot
            cond.append(crons.c.id == cron_id)
        else:
            if name:
                cond.append(crons.c.name.ilike(f"%{_escape_like(name)}%", escape="\\"))
            if status is not None:
                cond.append(crons.c.status == status)
            if creator:
                cond.append(crons.c.creator == creator)
            if last_modify_user:
                cond.append(crons.c.last_modify_user == last_modify_user)
            for column, (low, high) in (
                (crons.c.create_time, create_range),
                (crons.c.last_modify_time, modify_range),
            ):
                if low is not None:
                    cond.append(column >= low)
                if high is not None:
                    cond.append(column <= high)
        async with self.db.connect() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(crons).where(*cond))
            ).scalar_one()
            rows = await conn.execute(
                select(crons).where(*cond).order_by(crons.c.id.desc()).offset(offset).limit(limit)
            )
            return int(total), list(rows.all())

    async def change(self, seen: Row[Any], values: dict[str, Any]) -> bool:
        """Compare-and-set from the cron as read: False if it changed since (the scheduler
        fired it, or another call saved, started or paused it). A save writes back what
        it was not asked to change as it read it, so any change in between must be seen:
        each one moves ``last_modify_time`` forward, even within one millisecond."""
        slot = seen.next_fire_at
        same_slot = crons.c.next_fire_at.is_(None) if slot is None else crons.c.next_fire_at == slot
        modified = max(int(values.get("last_modify_time", now_ms())), seen.last_modify_time + 1)
        values = {**values, "last_modify_time": modified}
        renamed = "name" in values and values["name"] != seen.name
        if renamed:
            # a renamed cron holds its new name alone, as a new one would
            values["name_shared"] = False
        try:
            async with self.db.begin() as conn:
                res = await conn.execute(
                    update(crons)
                    .where(
                        crons.c.id == seen.id,
                        crons.c.status == seen.status,
                        crons.c.last_modify_time == seen.last_modify_time,
                        same_slot,
                    )
                    .values(**values)
                )
        except IntegrityError:
            if not renamed:
                raise
            raise await self._taken(
                seen.scope_type, seen.scope_id, values["name"], seen.id
            ) from None
        return res.rowcount == 1

    async def seal_passwords(self, row: Row[Any], cipher: Cipher) -> Row[Any]:
        """The cron, its values for what became password variables of its plan sealed."""
        async with self.db.begin() as conn:
            if await seal_plan_passwords(conn, row.plan_id, cipher, row.id):
                return await self.reread(conn, row.id) or row
        return row

    async def delete(self, cron_id: int) -> None:
        async with self.db.begin() as conn:
            await conn.execute(delete(crons).where(crons.c.id == cron_id))
            # SQLite may give a deleted cron's id to the next one
            await conn.execute(delete(cron_firings).where(cron_firings.c.cron_id == cron_id))

    # the scheduler's side ---------------------------------------------------
    async def due(self, now: int, limit: int) -> list[Row[Any]]:
        """Running crons whose next slot is at or before ``now`` (cron clock), oldest first."""
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(crons)
                .where(
                    crons.c.status == int(CronStatus.RUNNING),
                    crons.c.next_fire_at.is_not(None),
                    crons.c.next_fire_at <= now,
                )
                .order_by(crons.c.next_fire_at, crons.c.id)
                .limit(limit)
            )
            return list(rows.all())

    async def earliest(self) -> int | None:
        """The soonest slot of any running cron."""
        async with self.db.connect() as conn:
            value = (
                await conn.execute(
                    select(func.min(crons.c.next_fire_at)).where(
                        crons.c.status == int(CronStatus.RUNNING)
                    )
                )
            ).scalar()
        return None if value is None else int(value)

    async def running(self) -> list[Row[Any]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(crons).where(
                    crons.c.status == int(CronStatus.RUNNING), crons.c.next_fire_at.is_not(None)
                )
            )
            return list(rows.all())

    async def move(self, cron_id: int, due: int, values: dict[str, Any]) -> bool:
        """Compare-and-set outside a firing (re-aligning a schedule)."""
        async with self.db.begin() as conn:
            return await self.advance(conn, cron_id, due, values)

    @staticmethod
    async def advance(
        conn: AsyncConnection, cron_id: int, due: int, values: dict[str, Any]
    ) -> bool:
        """Move a running cron on from slot ``due``; False if another node (or an edit) did."""
        res = await conn.execute(
            update(crons)
            .where(
                crons.c.id == cron_id,
                crons.c.status == int(CronStatus.RUNNING),
                crons.c.next_fire_at == due,
            )
            .values(**values)
        )
        return res.rowcount == 1

    @staticmethod
    async def reread(conn: AsyncConnection, cron_id: int) -> Row[Any] | None:
        return (await conn.execute(select(crons).where(crons.c.id == cron_id))).first()

    @staticmethod
    async def record(
        conn: AsyncConnection,
        cron_id: int,
        slot: int,
        outcome: str,
        *,
        node: str,
        message: str = "",
        job_instance_id: int | None = None,
    ) -> None:
        await conn.execute(
            insert(cron_firings).values(
                cron_id=cron_id,
                slot=slot,
                outcome=outcome,
                message=message[:1024],
                node=node,
                job_instance_id=job_instance_id,
                create_time=now_ms(),
            )
        )

    async def firings(self, cron_id: int) -> list[Row[Any]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(cron_firings)
                .where(cron_firings.c.cron_id == cron_id)
                .order_by(cron_firings.c.slot)
            )
            return list(rows.all())

    # the history of firings, as people read it ----------------------------------
    @staticmethod
    def _firing_select() -> Any:
        """Firings with the status of the job each started (null: no job)."""
        return select(cron_firings, job_instances.c.status.label("job_status")).outerjoin(
            job_instances, job_instances.c.id == cron_firings.c.job_instance_id
        )

    async def history(
        self, cron_id: int, *, offset: int = 0, limit: int = 20
    ) -> tuple[int, list[Row[Any]]]:
        """A page of a cron's firings, the newest slot first."""
        where = cron_firings.c.cron_id == cron_id
        async with self.db.connect() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(cron_firings).where(where))
            ).scalar_one()
            rows = await conn.execute(
                self._firing_select()
                .where(where)
                .order_by(cron_firings.c.slot.desc())
                .offset(offset)
                .limit(limit)
            )
            return int(total), list(rows.all())

    async def last_firings(self, cron_ids: list[int]) -> dict[int, Row[Any]]:
        """The latest firing of each of these crons (crons that never fired are absent)."""
        if not cron_ids:
            return {}
        latest = (
            select(cron_firings.c.cron_id, func.max(cron_firings.c.slot).label("slot"))
            .where(cron_firings.c.cron_id.in_(cron_ids))
            .group_by(cron_firings.c.cron_id)
            .subquery()
        )
        query = self._firing_select().join(
            latest,
            (latest.c.cron_id == cron_firings.c.cron_id) & (latest.c.slot == cron_firings.c.slot),
        )
        async with self.db.connect() as conn:
            rows = await conn.execute(query)
            return {int(r.cron_id): r for r in rows.all()}
