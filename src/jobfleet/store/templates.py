"""Job templates and execution plans.

A template holds its steps and variable definitions as JSON (the shapes of
``jobfleet.domain.plans`` and ``jobfleet.domain.variables``); a plan holds a copy
of them taken at its last sync, with each step enabled or not and its own
variable values. Password values are encrypted in both. Script parameters of
steps marked ``is_param_sensitive`` are never shown (readers get ``MASK``); the
engine encrypts them into the job it launches from a plan.

Steps and variables have integer ids that are stable within their template: an
update keeps the id of an entry whose id (or, without an id, whose name) matches
an existing one, and gives new entries fresh ids that are never reused. Plans
name steps and variables by these ids, which is what lets a sync keep a plan's
choices.

On writes, a password value (or the parameter of a step marked
``is_param_sensitive``) equal to ``MASK`` means "keep the stored value": it is
what readers were shown, so sending a read object back unchanged changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, Table, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.plans import parse_steps
from jobfleet.domain.status import (
    AccountCategory,
    ScriptType,
    ScriptVersionStatus,
    StepType,
    VariableType,
)
from jobfleet.domain.template_files import PlanDocument, TemplateDocument
from jobfleet.domain.variables import MASK, Variable, apply_overrides, parse_definitions
from jobfleet.store.database import Database, now_ms
from jobfleet.store.secrets import PREFIX as SEALED
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import (
    accounts,
    crons,
    job_plans,
    job_templates,
    script_versions,
    scripts,
)

MAX_NAME = 512
MAX_DESCRIPTION = 4096


def seal_variables(variables: list[Variable], cipher: Cipher) -> list[dict[str, Any]]:
    """Variables as stored: password values encrypted."""
    out = []
    for var in variables:
        raw = var.to_dict()
        if var.type == VariableType.PASSWORD and var.value:
            raw["value"] = cipher.encrypt(var.value)
        out.append(raw)
    return out


def open_variables(raw: list[dict[str, Any]] | None, cipher: Cipher) -> list[Variable]:
    out = []
    for item in raw or []:
        var = Variable.from_dict(item)
        if var.type == VariableType.PASSWORD and var.value:
            var.value = cipher.decrypt(var.value)
        out.append(var)
    return out


# --- pure helpers ---------------------------------------------------------------


@dataclass
class ListFilter:
    """The filters of bk-job's template and plan lists (§5.1); times in epoch ms."""

    creator: str | None = None
    name: str | None = None
    create_time_start: int | None = None
    create_time_end: int | None = None
    last_modify_user: str | None = None
    last_modify_time_start: int | None = None
    last_modify_time_end: int | None = None


@dataclass
class ImportedPlan:
    id: int
    name: str
    created: bool


@dataclass
class ImportResult:
    template_id: int
    created: bool
    plans: list[ImportedPlan] = field(default_factory=list)


def assign_ids(
    items: Sequence[tuple[int, str]], existing: dict[int, str], next_id: int
) -> tuple[list[int], int]:
    """Ids for ``(given id, name)`` items against ``existing`` ``{id: name}``.

    A given id that exists keeps its identity (the first item claiming it does);
    an item without an id takes over the existing entry of the same name when no
    other item claimed it; everything else gets a fresh id from ``next_id``.
    Returns the ids and the next free id.
    """
    ids: list[int | None] = [None] * len(items)
    claimed: set[int] = set()
    for i, (given, _name) in enumerate(items):
        if given and given in existing and given not in claimed:
            ids[i] = given
            claimed.add(given)
    by_name = {name: ident for ident, name in existing.items()}
    for i, (given, name) in enumerate(items):
        if ids[i] is None and not given:
            ident = by_name.get(name)
            if ident is not None and ident not in claimed:
                ids[i] = ident
                claimed.add(ident)
    out: list[int] = []
    for ident in ids:
        if ident is None:
            ident = next_id
            next_id += 1
        out.append(ident)
    return out, next_id


def keep_masked(
    steps: list[dict[str, Any]],
    variables: list[Variable],
    old_steps: Iterable[dict[str, Any]],
    old_variables: Iterable[Variable],
) -> None:
    """Replace MASK by the stored secret of the same id (in place); "" when there is none."""
    old_vars = {v.id: v for v in old_variables}
    for var in variables:
        if var.type == VariableType.PASSWORD and var.value == MASK:
            old = old_vars.get(var.id)
            var.value = old.value if old is not None and old.type == var.type else ""
    old_params = {
        s["id"]: s["script_info"].get("script_param", "")
        for s in old_steps
        if s.get("type") == StepType.SCRIPT and s["script_info"].get("is_param_sensitive")
    }
    for step in steps:
        info = step.get("script_info")
        if info and info.get("is_param_sensitive") and info.get("script_param") == MASK:
            info["script_param"] = old_params.get(step["id"], "")


def public_steps(steps: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps as shown to anyone: a sensitive script parameter masked."""
    out = []
    for step in steps:
        step = copy.deepcopy(step)
        info = step.get("script_info")
        if info and info.get("is_param_sensitive") and info.get("script_param"):
            info["script_param"] = MASK
        out.append(step)
    return out


def _named(entry: dict[str, Any], current: Sequence[Variable]) -> Variable | None:
    """The variable an override entry names, by id or (without one) by name."""
    raw_id = entry.get("id")
    if raw_id in (None, ""):
        name = entry.get("name")
        return next((v for v in current if v.name == name), None)
    try:
        ident = int(raw_id)
    except (TypeError, ValueError):
        return None
    return next((v for v in current if v.id == ident), None)


def with_values(current: list[Variable], values: Any) -> list[Variable]:
    """``current`` overridden by ``values``; a password sent as MASK keeps its value."""
    if not isinstance(values, list):
        return apply_overrides(current, values)
    kept = []
    for entry in values:
        if isinstance(entry, dict) and entry.get("value") == MASK:
            target = _named(entry, current)
            if target is not None and target.type == VariableType.PASSWORD:
                continue
        kept.append(entry)
    return apply_overrides(current, kept)


def synced(
    plan_steps: Iterable[dict[str, Any]],
    plan_variables: Iterable[Variable],
    template_steps: Iterable[dict[str, Any]],
    template_variables: Iterable[Variable],
) -> tuple[list[dict[str, Any]], list[Variable]]:
    """A plan re-copied from its template.

    Steps keep their enabled flag when their id still exists (new steps are
    enabled); variables keep the plan's value when their id and type still match.
    """
    enabled = {s["id"]: bool(s.get("enabled", True)) for s in plan_steps}
    steps = [{**copy.deepcopy(s), "enabled": enabled.get(s["id"], True)} for s in template_steps]
    own = {v.id: v for v in plan_variables}
    variables = []
    for var in template_variables:
        mine = own.get(var.id)
        if mine is not None and mine.type == var.type:
            var = replace(var, value=mine.value, server=copy.deepcopy(mine.server))
        else:
            var = replace(var, server=copy.deepcopy(var.server))
        variables.append(var)
    return steps, variables


def enable(steps: list[dict[str, Any]], enabled_ids: Collection[int] | None) -> None:
    """Set each step's ``enabled`` flag (in place); None enables all of them."""
    if enabled_ids is not None:
        known = {s["id"] for s in steps}
        unknown = sorted(set(enabled_ids) - known)
        if unknown:
            raise JobError.invalid(
                "enabled_step_ids", f"no step with id {', '.join(map(str, unknown))}"
            )
        if not enabled_ids:
            raise JobError.invalid("enabled_step_ids", "a plan needs at least one enabled step")
    for step in steps:
        step["enabled"] = enabled_ids is None or step["id"] in enabled_ids


def check_name(raw: Any, field_name: str = "name") -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise JobError.missing(field_name)
    name = raw.strip()
    if len(name) > MAX_NAME:
        raise JobError.invalid(field_name, f"longer than {MAX_NAME} characters")
    return name


def check_description(raw: Any) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise JobError.invalid("description", "must be a string")
    if len(raw) > MAX_DESCRIPTION:
        raise JobError.invalid("description", f"longer than {MAX_DESCRIPTION} characters")
    return raw


def _filters(table: Table, f: ListFilter) -> list[ColumnElement[bool]]:
    cond: list[ColumnElement[bool]] = []
    if f.creator:
        cond.append(table.c.creator == f.creator)
    if f.name:
        cond.append(func.lower(table.c.name).contains(f.name.lower(), autoescape=True))
    if f.create_time_start is not None:
        cond.append(table.c.create_time >= f.create_time_start)
    if f.create_time_end is not None:
        cond.append(table.c.create_time <= f.create_time_end)
    if f.last_modify_user:
        cond.append(table.c.last_modify_user == f.last_modify_user)
    if f.last_modify_time_start is not None:
        cond.append(table.c.last_modify_time >= f.last_modify_time_start)
    if f.last_modify_time_end is not None:
        cond.append(table.c.last_modify_time <= f.last_modify_time_end)
    return cond


def _no_template(template_id: int) -> JobError:
    return JobError(ErrorCode.TEMPLATE_NOT_EXIST, f"Job template {template_id} does not exist")


def _no_plan(plan_id: int) -> JobError:
    return JobError(ErrorCode.JOB_PLAN_NOT_EXIST, f"Job plan {plan_id} does not exist")


def _plan_select() -> Select[Any]:
    need_update = (job_plans.c.template_version != job_templates.c.version).label("need_update")
    return select(job_plans, need_update).join(
        job_templates, job_templates.c.id == job_plans.c.template_id
    )


# --- the store ------------------------------------------------------------------


class TemplateStore:
    def __init__(self, db: Database, cipher: Cipher) -> None:
        self.db = db
        self.cipher = cipher

    async def template(self, template_id: int) -> Row[Any] | None:
        async with self.db.connect() as conn:
            return (
                await conn.execute(select(job_templates).where(job_templates.c.id == template_id))
            ).first()

    async def plan(self, plan_id: int) -> Row[Any] | None:
        async with self.db.connect() as conn:
            return (await conn.execute(select(job_plans).where(job_plans.c.id == plan_id))).first()

    def variables(self, row: Row[Any]) -> list[Variable]:
        """A template's or plan's variables with password values in clear (never to show)."""
        return open_variables(row.variables, self.cipher)

    def steps(self, row: Row[Any]) -> list[dict[str, Any]]:
        """A template's or plan's steps (a copy: callers may change it), sensitive
        script parameters in clear (never to show: see ``public_steps``)."""
        steps = copy.deepcopy(list(row.steps or []))
        for step in steps:
            info = step.get("script_info")
            if info and info.get("is_param_sensitive") and info.get("script_param"):
                info["script_param"] = self.cipher.decrypt(str(info["script_param"]))
        return steps

    def _seal_steps(self, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Steps as stored: sensitive script parameters encrypted."""
        sealed = copy.deepcopy(steps)
        for step in sealed:
            info = step.get("script_info")
            param = info.get("script_param") if info else None
            if (
                info
                and info.get("is_param_sensitive")
                and param
                and not str(param).startswith(SEALED)
            ):
                info["script_param"] = self.cipher.encrypt(str(param))
        return sealed

    # templates --------------------------------------------------------------
    async def get_template(self, biz_ids: Collection[int], template_id: int) -> Row[Any]:
        async with self.db.connect() as conn:
            return await self._template_row(conn, biz_ids, template_id)

    async def list_templates(
        self, biz_ids: Collection[int], filters: ListFilter, offset: int = 0, limit: int = 20
    ) -> tuple[int, list[Row[Any]]]:
        cond = [job_templates.c.bk_biz_id.in_(list(biz_ids)), *_filters(job_templates, filters)]
        async with self.db.connect() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(job_templates).where(*cond))
            ).scalar_one()
            rows = await conn.execute(
                select(job_templates)
                .where(*cond)
                .order_by(job_templates.c.id)
                .offset(offset)
                .limit(limit)
            )
            return int(total), list(rows.all())

    async def create_template(
        self,
        bk_biz_id: int,
        name: Any,
        description: Any,
        steps_raw: Any,
        variables_raw: Any,
        user: str,
    ) -> int:
        name, description = check_name(name), check_description(description)
        variables = parse_definitions(variables_raw)
        steps = parse_steps(steps_raw, variables)
        async with self._writing() as conn:
            return await self._insert_template(
                conn, bk_biz_id, name, description, steps, variables, user
            )

    async def update_template(
        self,
        biz_ids: Collection[int],
        template_id: int,
        name: Any,
        description: Any,
        steps_raw: Any,
        variables_raw: Any,
        user: str,
    ) -> Row[Any]:
        """Replace a template's name, description, steps and variables; plans are left as
        they are (they show ``need_update`` until synced)."""
        name, description = check_name(name), check_description(description)
        variables = parse_definitions(variables_raw)
        steps = parse_steps(steps_raw, variables)
        async with self._writing() as conn:
            row = await self._template_row(conn, biz_ids, template_id, lock=True)
            await self._write_template(conn, row, name, description, steps, variables, user)
            return await self._template_row(conn, biz_ids, template_id)

    async def delete_template(
        self, biz_ids: Collection[int], template_id: int, *, cascade: bool = False
    ) -> tuple[Row[Any], list[int]]:
        """Delete a template; with plans only when ``cascade`` (and then them too).

        Returns the deleted row and the ids of the plans deleted with it.
        """
        async with self.db.begin() as conn:
            row = await self._template_row(conn, biz_ids, template_id, lock=True)
            plan_ids = [
                int(i)
                for i in (
                    await conn.execute(
                        select(job_plans.c.id)
                        .where(job_plans.c.template_id == template_id)
                        .order_by(job_plans.c.id)
                    )
                ).scalars()
            ]
            if plan_ids and not cascade:
                raise JobError(
                    ErrorCode.CONFLICT,
                    f"Job template {template_id} has {len(plan_ids)} plan(s) "
                    f"({', '.join(map(str, plan_ids))}): delete them first, "
                    "or delete with cascade=true",
                )
            await self._check_no_crons(conn, plan_ids)
            if plan_ids:
                await conn.execute(delete(job_plans).where(job_plans.c.id.in_(plan_ids)))
            await conn.execute(delete(job_templates).where(job_templates.c.id == template_id))
        return row, plan_ids

    # plans ------------------------------------------------------------------
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
        cond = [job_plans.c.bk_biz_id.in_(list(biz_ids)), *_filters(job_plans, filters)]
        async with self.db.connect() as conn:
            if template_id is not None:
                await self._template_row(conn, biz_ids, template_id)
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
        async with self._writing() as conn:
            tpl = await self._template_row(conn, biz_ids, template_id)
            steps = self.steps(tpl)
            enable(steps, enabled_step_ids)
            variables = with_values(self.variables(tpl), values)
            return await self._insert_plan(conn, tpl, name, description, steps, variables, user)

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
        async with self._writing() as conn:
            row = await self._plan_row(conn, biz_ids, plan_id, lock=True)
            steps = self.steps(row)
            if enabled_step_ids is not None:
                enable(steps, enabled_step_ids)
            changes: dict[str, Any] = {
                "steps": self._seal_steps(steps),
                "variables": seal_variables(with_values(self.variables(row), values), self.cipher),
                "last_modify_user": user,
                "last_modify_time": now_ms(),
            }
            if name is not None:
                changes["name"] = check_name(name)
                await self._plan_name_free(conn, row.template_id, changes["name"], plan_id)
            if description is not None:
                changes["description"] = check_description(description)
            await conn.execute(update(job_plans).where(job_plans.c.id == plan_id).values(changes))
            return await self._plan_row(conn, biz_ids, plan_id)

    async def sync_plan(self, biz_ids: Collection[int], plan_id: int, user: str) -> Row[Any]:
        async with self.db.begin() as conn:
            row = await self._plan_row(conn, biz_ids, plan_id, lock=True)
            tpl = await self._template_row(conn, [row.bk_biz_id], row.template_id)
            steps, variables = synced(
                row.steps, self.variables(row), self.steps(tpl), self.variables(tpl)
            )
            await conn.execute(
                update(job_plans)
                .where(job_plans.c.id == plan_id)
                .values(
                    steps=self._seal_steps(steps),
                    variables=seal_variables(variables, self.cipher),
                    template_version=tpl.version,
                    last_modify_user=user,
                    last_modify_time=now_ms(),
                )
            )
            return await self._plan_row(conn, biz_ids, plan_id)

    async def delete_plan(self, biz_ids: Collection[int], plan_id: int) -> Row[Any]:
        """Delete a plan; refused while a cron launches it."""
        async with self.db.begin() as conn:
            row = await self._plan_row(conn, biz_ids, plan_id, lock=True)
            await self._check_no_crons(conn, [plan_id])
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

    # import ------------------------------------------------------------------
    async def import_template(
        self, bk_biz_id: int, doc: TemplateDocument, *, update_existing: bool, user: str
    ) -> ImportResult:
        """Create a template with its plans in one transaction, or with
        ``update_existing`` replace the template of the same name.

        On an update, steps and variables match the existing ones by name (so plans
        keep their choices), plans of the same name are re-made from the document
        keeping their stored passwords, and plans the document does not name are left
        as they are.
        """
        name, description = check_name(doc.name), check_description(doc.description)
        variables = parse_definitions(doc.variables)
        steps = parse_steps(doc.steps, variables)
        async with self._writing() as conn:
            existing = (
                await conn.execute(
                    select(job_templates).where(
                        job_templates.c.bk_biz_id == bk_biz_id, job_templates.c.name == name
                    )
                )
            ).first()
            if existing is not None and not update_existing:
                raise JobError(
                    ErrorCode.CONFLICT,
                    f"A job template named {name!r} exists in business {bk_biz_id} "
                    f"(id {existing.id}); import with update=true to replace it",
                )
            if existing is None:
                template_id = await self._insert_template(
                    conn, bk_biz_id, name, description, steps, variables, user
                )
            else:
                template_id = existing.id
                locked = await self._template_row(conn, [bk_biz_id], template_id, lock=True)
                await self._write_template(conn, locked, name, description, steps, variables, user)
            tpl = await self._template_row(conn, [bk_biz_id], template_id)
            result = ImportResult(template_id, existing is None)
            for plan in doc.plans:
                result.plans.append(await self._import_plan(conn, tpl, plan, user))
            return result

    async def _import_plan(
        self, conn: AsyncConnection, tpl: Row[Any], spec: PlanDocument, user: str
    ) -> ImportedPlan:
        plan_name = check_name(spec.name, "plans.name")
        steps = self.steps(tpl)
        ids_by_name = {s["name"]: s["id"] for s in steps}
        enabled = None
        if spec.enabled_steps is not None:
            missing = [n for n in spec.enabled_steps if n not in ids_by_name]
            if missing:
                raise JobError.invalid(
                    f"plans.{plan_name}.enabled_steps", f"no step named {missing[0]!r}"
                )
            enabled = {ids_by_name[n] for n in spec.enabled_steps}
        enable(steps, enabled)
        old = (
            await conn.execute(
                select(job_plans).where(
                    job_plans.c.template_id == tpl.id, job_plans.c.name == plan_name
                )
            )
        ).first()
        if old is None:
            variables = with_values(self.variables(tpl), spec.variables)
            new_id = await self._insert_plan(
                conn, tpl, plan_name, spec.description, steps, variables, user
            )
            return ImportedPlan(new_id, plan_name, True)
        _, base = synced(old.steps, self.variables(old), steps, self.variables(tpl))
        await conn.execute(
            update(job_plans)
            .where(job_plans.c.id == old.id)
            .values(
                description=check_description(spec.description),
                steps=self._seal_steps(steps),
                variables=seal_variables(with_values(base, spec.variables), self.cipher),
                template_version=tpl.version,
                last_modify_user=user,
                last_modify_time=now_ms(),
            )
        )
        return ImportedPlan(old.id, plan_name, False)

    # references -------------------------------------------------------------
    async def accounts_by_id(self, ids: Collection[int]) -> dict[int, Row[Any]]:
        if not ids:
            return {}
        async with self.db.connect() as conn:
            rows = await conn.execute(select(accounts).where(accounts.c.id.in_(list(ids))))
            return {int(r.id): r for r in rows}

    async def version_contents(self, version_ids: Collection[int]) -> dict[int, str]:
        """The text of script versions steps refer to (to tell which variables they use)."""
        if not version_ids:
            return {}
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(script_versions.c.id, script_versions.c.content).where(
                    script_versions.c.id.in_(list(version_ids))
                )
            )
            return {int(r.id): str(r.content) for r in rows}

    async def _resolve_references(
        self, conn: AsyncConnection, bk_biz_id: int, steps: list[dict[str, Any]]
    ) -> None:
        """Check the accounts and scripts steps name, and store both the id and alias of
        each account and the pinned version (and language) of each script (in place)."""
        for step in steps:
            where = f"step {step['name']!r}"
            info = step.get("script_info")
            if info is not None:
                info["account"] = await self._account(conn, bk_biz_id, info["account"], where)
                if info["script_type"] != ScriptType.LOCAL:
                    await self._script(conn, bk_biz_id, info, where)
            files = step.get("file_info")
            if files is not None:
                for src in files["file_source_list"]:
                    if "account" in src:
                        src["account"] = await self._account(conn, bk_biz_id, src["account"], where)
                dest = files["file_destination"]
                dest["account"] = await self._account(conn, bk_biz_id, dest["account"], where)

    async def _account(
        self, conn: AsyncConnection, bk_biz_id: int, ref: dict[str, Any], where: str
    ) -> dict[str, Any]:
        cond = [accounts.c.bk_biz_id == bk_biz_id, accounts.c.category == AccountCategory.SYSTEM]
        if ref.get("id") is not None:
            cond.append(accounts.c.id == ref["id"])
            named = f"id {ref['id']}"
        else:
            cond.append(accounts.c.alias == ref.get("alias"))
            named = repr(ref.get("alias"))
        row = (await conn.execute(select(accounts).where(*cond))).first()
        if row is None:
            raise JobError(
                ErrorCode.ACCOUNT_NOT_EXIST,
                f"Account {named} of {where} does not exist in business {bk_biz_id}",
            )
        return {"id": int(row.id), "alias": str(row.alias)}

    async def _script(
        self, conn: AsyncConnection, bk_biz_id: int, info: dict[str, Any], where: str
    ) -> None:
        public = info["script_type"] == ScriptType.PUBLIC_SCRIPT
        kind = "public script" if public else "script"
        script_id = info.get("script_id")
        version_id = info.get("script_version_id")
        version = None
        if version_id is not None:
            version = (
                await conn.execute(
                    select(script_versions).where(script_versions.c.id == version_id)
                )
            ).first()
            if version is None or (script_id and version.script_id != script_id):
                raise JobError(
                    ErrorCode.SCRIPT_VERSION_NOT_EXIST,
                    f"Script version {version_id} of {where} does not exist"
                    + (f" in script {script_id}" if script_id else ""),
                )
            script_id = version.script_id
        cond = [scripts.c.id == str(script_id), scripts.c.public.is_(public)]
        if not public:
            cond.append(scripts.c.bk_biz_id == bk_biz_id)
        script = (await conn.execute(select(scripts).where(*cond))).first()
        if script is None:
            raise JobError(
                ErrorCode.SCRIPT_NOT_EXIST,
                f"The {kind} {script_id} of {where} does not exist"
                + ("" if public else f" in business {bk_biz_id}"),
            )
        if version is None:
            version = (
                await conn.execute(
                    select(script_versions).where(
                        script_versions.c.script_id == script.id,
                        script_versions.c.status == int(ScriptVersionStatus.ONLINE),
                    )
                )
            ).first()
            if version is None:
                raise JobError(
                    ErrorCode.SCRIPT_NOT_EXECUTABLE,
                    f"The {kind} {script.id} of {where} has no online version: "
                    "publish one or name a script_version_id",
                )
        if version.status == ScriptVersionStatus.DISABLED:
            raise JobError(
                ErrorCode.SCRIPT_VERSION_DISABLED,
                f"Script version {version.id} of {where} is disabled",
            )
        info["script_id"] = str(script.id)
        info["script_version_id"] = int(version.id)
        info["script_language"] = int(script.script_language)

    # rows and writes --------------------------------------------------------
    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction where a unique-name race ends as CONFLICT, not a 500."""
        try:
            async with self.db.begin() as conn:
                yield conn
        except IntegrityError:
            raise JobError(
                ErrorCode.CONFLICT, "The name is taken (a concurrent change won)"
            ) from None

    async def _template_row(
        self,
        conn: AsyncConnection,
        biz_ids: Collection[int],
        template_id: int,
        *,
        lock: bool = False,
    ) -> Row[Any]:
        query = select(job_templates).where(
            job_templates.c.id == template_id, job_templates.c.bk_biz_id.in_(list(biz_ids))
        )
        if lock:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise _no_template(template_id)
        return row

    async def _plan_row(
        self, conn: AsyncConnection, biz_ids: Collection[int], plan_id: int, *, lock: bool = False
    ) -> Row[Any]:
        query = _plan_select().where(
            job_plans.c.id == plan_id, job_plans.c.bk_biz_id.in_(list(biz_ids))
        )
        if lock:
            query = query.with_for_update(of=job_plans)
        row: Row[Any] | None = (await conn.execute(query)).first()
        if row is None:
            raise _no_plan(plan_id)
        return row

    async def _template_name_free(
        self, conn: AsyncConnection, bk_biz_id: int, name: str, own_id: int | None
    ) -> None:
        found = (
            await conn.execute(
                select(job_templates.c.id).where(
                    job_templates.c.bk_biz_id == bk_biz_id, job_templates.c.name == name
                )
            )
        ).scalar()
        if found is not None and found != own_id:
            raise JobError(
                ErrorCode.CONFLICT,
                f"A job template named {name!r} exists in business {bk_biz_id} (id {found})",
            )

    async def _plan_name_free(
        self, conn: AsyncConnection, template_id: int, name: str, own_id: int | None
    ) -> None:
        found = (
            await conn.execute(
                select(job_plans.c.id).where(
                    job_plans.c.template_id == template_id, job_plans.c.name == name
                )
            )
        ).scalar()
        if found is not None and found != own_id:
            raise JobError(
                ErrorCode.CONFLICT,
                f"Job template {template_id} has a plan named {name!r} (id {found})",
            )

    async def _insert_template(
        self,
        conn: AsyncConnection,
        bk_biz_id: int,
        name: str,
        description: str,
        steps: list[dict[str, Any]],
        variables: list[Variable],
        user: str,
    ) -> int:
        await self._template_name_free(conn, bk_biz_id, name, None)
        next_step, next_var = self._number(steps, variables, [], [], 1, 1)
        keep_masked(steps, variables, [], [])
        await self._resolve_references(conn, bk_biz_id, steps)
        now = now_ms()
        res = await conn.execute(
            insert(job_templates).values(
                bk_biz_id=bk_biz_id,
                name=name,
                description=description,
                version=1,
                steps=self._seal_steps(steps),
                variables=seal_variables(variables, self.cipher),
                next_step_id=next_step,
                next_variable_id=next_var,
                creator=user,
                create_time=now,
                last_modify_user=user,
                last_modify_time=now,
            )
        )
        return int(res.inserted_primary_key[0])  # type: ignore[index]

    async def _write_template(
        self,
        conn: AsyncConnection,
        row: Row[Any],
        name: str,
        description: str,
        steps: list[dict[str, Any]],
        variables: list[Variable],
        user: str,
    ) -> None:
        await self._template_name_free(conn, row.bk_biz_id, name, row.id)
        old_steps, old_vars = self.steps(row), self.variables(row)
        next_step, next_var = self._number(
            steps, variables, old_steps, old_vars, row.next_step_id, row.next_variable_id
        )
        keep_masked(steps, variables, old_steps, old_vars)
        await self._resolve_references(conn, row.bk_biz_id, steps)
        changed = steps != old_steps or [v.to_dict() for v in variables] != [
            v.to_dict() for v in old_vars
        ]
        await conn.execute(
            update(job_templates)
            .where(job_templates.c.id == row.id)
            .values(
                name=name,
                description=description,
                version=row.version + 1 if changed else row.version,
                steps=self._seal_steps(steps),
                variables=seal_variables(variables, self.cipher),
                next_step_id=next_step,
                next_variable_id=next_var,
                last_modify_user=user,
                last_modify_time=now_ms(),
            )
        )

    @staticmethod
    def _number(
        steps: list[dict[str, Any]],
        variables: list[Variable],
        old_steps: Sequence[dict[str, Any]],
        old_vars: Sequence[Variable],
        next_step: int,
        next_var: int,
    ) -> tuple[int, int]:
        step_ids, next_step = assign_ids(
            [(int(s.get("id") or 0), s["name"]) for s in steps],
            {s["id"]: s["name"] for s in old_steps},
            next_step,
        )
        for step, ident in zip(steps, step_ids, strict=True):
            step["id"] = ident
            step.pop("enabled", None)
        var_ids, next_var = assign_ids(
            [(v.id, v.name) for v in variables], {v.id: v.name for v in old_vars}, next_var
        )
        for var, ident in zip(variables, var_ids, strict=True):
            var.id = ident
        return next_step, next_var

    async def _insert_plan(
        self,
        conn: AsyncConnection,
        tpl: Row[Any],
        name: str,
        description: str,
        steps: list[dict[str, Any]],
        variables: list[Variable],
        user: str,
    ) -> int:
        await self._plan_name_free(conn, tpl.id, name, None)
        now = now_ms()
        res = await conn.execute(
            insert(job_plans).values(
                bk_biz_id=tpl.bk_biz_id,
                template_id=tpl.id,
                template_version=tpl.version,
                name=name,
                description=check_description(description),
                steps=self._seal_steps(steps),
                variables=seal_variables(variables, self.cipher),
                creator=user,
                create_time=now,
                last_modify_user=user,
                last_modify_time=now,
            )
        )
        return int(res.inserted_primary_key[0])  # type: ignore[index]

    async def _check_no_crons(self, conn: AsyncConnection, plan_ids: list[int]) -> None:
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
