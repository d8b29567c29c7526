"""Execution plans: a template's steps and variables copied at the plan's last sync,
with each step enabled or not and the plan's own variable values.

Plans name steps and variables by their ids in the template, which is what lets
a sync keep a plan's choices (``jobfleet.domain.plans.synced``). Secrets are
stored as the template stores them (``store/templates.py``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Row, Select, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.plans import enable, synced, with_values
from jobfleet.domain.templates import check_description, check_name
from jobfleet.domain.variables import Variable
from jobfleet.store.crons import refuse_launched_plans, seal_plan_passwords
from jobfleet.store.database import new_stamps, now_ms
from jobfleet.store.tables import job_plans, job_templates
from jobfleet.store.templates import (
    ListFilter,
    SealedRows,
    list_filters,
    name_holder,
    seal_steps,
    seal_variables,
    template_row,
    write_lock,
    writing,
)


def _no_plan(plan_id: int) -> JobError:
    return JobError(ErrorCode.JOB_PLAN_NOT_EXIST, f"Job plan {plan_id} does not exist")


def _plan_select() -> Select[Any]:
    need_update = (job_plans.c.template_version != job_templates.c.version).label("need_update")
    return select(job_plans, need_update).join(
        job_templates, job_templates.c.id == job_plans.c.template_id
    )


class PlanStore(SealedRows):
    async def plan(self, plan_id: int) -> Row[Any] | None:
        async with self.db.connect() as conn:
            return (await conn.execute(select(job_plans).where(job_plans.c.id == plan_id))).first()

    async def get_plan(self, biz_ids: Collection[int], plan_id: int) -> Row[Any]:
        """A plan with ``need_update`` (its template changed since the plan's last sync)."""
        async with self.db.connect() as conn:
            return await self._plan_row(conn, biz_ids, plan_id)

    async def list_plans(
        self,
        biz_ids: Collection[int],
        filters: ListFilter,
        *,
        template_id: int | None = None,
        offset: int = 0,
        limit: int = 20,
    ) -> tuple[int, list[Row[Any]]]:
        cond = [job_plans.c.bk_biz_id.in_(list(biz_ids)), *list_filters(job_plans, filters)]
        async with self.db.connect() as conn:
            if template_id is not None:
                await template_row(conn, biz_ids, template_id)
                cond.append(job_plans.c.template_id == template_id)
            total = (
                await conn.execute(select(func.count()).select_from(job_plans).where(*cond))
            ).scalar_one()
            rows = await conn.execute(
                _plan_select().where(*cond).order_by(job_plans.c.id).offset(offset).limit(limit)
            )
            return int(total), list(rows.all())

    async def create_plan(
        self,
        biz_ids: Collection[int],
        template_id: int,
        name: Any,
        enabled_step_ids: Collection[int] | None,
        values: Any,
        user: str,
        description: Any = None,
    ) -> int:
        """A plan of the template's steps (those in ``enabled_step_ids`` enabled, all when
        None) and variables (the template's defaults overridden by ``values``)."""
        name, description = check_name(name), check_description(description)
        async with writing(self.db) as conn:
            # held until the plan is in: a delete of the template waits, or went first
            tpl = await template_row(conn, biz_ids, template_id, lock=True)
            steps = self.steps(tpl)
            enable(steps, enabled_step_ids)
            variables = with_values(self.variables(tpl), values)
            return await self.insert(conn, tpl, name, description, steps, variables, user)

    async def update_plan(
        self,
        biz_ids: Collection[int],
        plan_id: int,
        *,
        user: str,
        name: Any = None,
        description: Any = None,
        enabled_step_ids: Collection[int] | None = None,
        values: Any = None,
    ) -> Row[Any]:
        """Change what is given: the name, description, enabled steps, variable values
        (the others keep their current value)."""
        async with writing(self.db) as conn:
            row = await self._plan_row(conn, biz_ids, plan_id, lock=True)
            steps = self.steps(row)
            if enabled_step_ids is not None:
                enable(steps, enabled_step_ids)
            changes: dict[str, Any] = {
                "steps": seal_steps(steps, self.cipher),
                "variables": seal_variables(with_values(self.variables(row), values), self.cipher),
                "last_modify_user": user,
                "last_modify_time": now_ms(),
            }
            if name is not None:
                changes["name"] = check_name(name)
                await self._name_free(conn, row.template_id, changes["name"], plan_id)
            if description is not None:
                changes["description"] = check_description(description)
            await conn.execute(update(job_plans).where(job_plans.c.id == plan_id).values(changes))
            return await self._plan_row(conn, biz_ids, plan_id)

    async def sync_plan(self, biz_ids: Collection[int], plan_id: int, user: str) -> Row[Any]:
        async with self.db.begin() as conn:
            row = await self._plan_row(conn, biz_ids, plan_id, lock=True)
            tpl = await template_row(conn, [row.bk_biz_id], row.template_id)
            steps, variables = synced(
                row.steps, self.variables(row), self.steps(tpl), self.variables(tpl)
            )
            await conn.execute(
                update(job_plans)
                .where(job_plans.c.id == plan_id)
                .values(
                    steps=seal_steps(steps, self.cipher),
                    variables=seal_variables(variables, self.cipher),
                    template_version=tpl.version,
                    last_modify_user=user,
                    last_modify_time=now_ms(),
                )
            )
            # a variable that became a password: the crons' values for it are sealed too
            await seal_plan_passwords(conn, plan_id, self.cipher)
            return await self._plan_row(conn, biz_ids, plan_id)

    async def delete_plan(self, biz_ids: Collection[int], plan_id: int) -> Row[Any]:
        """Delete a plan; refused while a cron launches it."""
        async with self.db.begin() as conn:
            row = await self._plan_row(conn, biz_ids, plan_id, lock=True)
            await refuse_launched_plans(conn, [plan_id])
            await conn.execute(delete(job_plans).where(job_plans.c.id == plan_id))
        return row

    def exported_plan(
        self, plan: Row[Any], template: Row[Any]
    ) -> tuple[list[dict[str, Any]], list[Variable]]:
        """What a plan would be after a sync: how it goes into an export."""
        return synced(
            plan.steps, self.variables(plan), self.steps(template), self.variables(template)
        )

    async def plans_of(self, template_id: int) -> list[Row[Any]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(job_plans)
                .where(job_plans.c.template_id == template_id)
                .order_by(job_plans.c.id)
            )
            return list(rows.all())

    # writes inside a caller's transaction -------------------------------------
    async def by_name(self, conn: AsyncConnection, template_id: int, name: str) -> Row[Any] | None:
        return (
            await conn.execute(
                select(job_plans).where(
                    job_plans.c.template_id == template_id, job_plans.c.name == name
                )
            )
        ).first()

    async def insert(
        self,
        conn: AsyncConnection,
        tpl: Row[Any],
        name: str,
        description: str,
        steps: list[dict[str, Any]],
        variables: list[Variable],
        user: str,
    ) -> int:
        await self._name_free(conn, tpl.id, name, None)
        now = now_ms()
        res = await conn.execute(
            insert(job_plans).values(
                bk_biz_id=tpl.bk_biz_id,
                template_id=tpl.id,
                template_version=tpl.version,
                name=name,
                description=check_description(description),
                steps=seal_steps(steps, self.cipher),
                variables=seal_variables(variables, self.cipher),
                **new_stamps(user, now),
            )
        )
        return int(res.inserted_primary_key[0])  # type: ignore[index]

    async def resync(
        self,
        conn: AsyncConnection,
        plan_id: int,
        tpl: Row[Any],
        description: str,
        steps: list[dict[str, Any]],
        variables: list[Variable],
        user: str,
    ) -> None:
        """Re-make a plan from its template's current version with these choices."""
        await conn.execute(
            update(job_plans)
            .where(job_plans.c.id == plan_id)
            .values(
                description=check_description(description),
                steps=seal_steps(steps, self.cipher),
                variables=seal_variables(variables, self.cipher),
                template_version=tpl.version,
                last_modify_user=user,
                last_modify_time=now_ms(),
            )
        )
        await seal_plan_passwords(conn, plan_id, self.cipher)

    async def _plan_row(
        self, conn: AsyncConnection, biz_ids: Collection[int], plan_id: int, *, lock: bool = False
    ) -> Row[Any]:
        query = _plan_select().where(
            job_plans.c.id == plan_id, job_plans.c.bk_biz_id.in_(list(biz_ids))
        )
        if lock:
            await write_lock(conn, job_plans, plan_id)
            query = query.with_for_update(of=job_plans)
        row: Row[Any] | None = (await conn.execute(query)).first()
        if row is None:
            raise _no_plan(plan_id)
        return row

    async def _name_free(
        self, conn: AsyncConnection, template_id: int, name: str, own_id: int | None
    ) -> None:
        found = await name_holder(conn, job_plans, "template_id", template_id, name)
        if found is not None and found != own_id:
            raise JobError(
                ErrorCode.CONFLICT,
                f"Job template {template_id} has a plan named {name!r} (id {found})",
            )
