"""Job templates: their rows, reads and writes, and how their secrets are stored.

A template holds its steps and variable definitions as JSON (the shapes of
``jobfleet.domain.plans`` and ``jobfleet.domain.variables``); its plans
(``store/plans.py``) hold a copy of them taken at their last sync. Password
values are encrypted in both. Script parameters of steps marked
``is_param_sensitive`` are never shown (readers get ``MASK``); the engine
encrypts them into the job it launches from a plan. The rules for ids and for
masked values on writes are in ``jobfleet.domain.templates``.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, Table, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.plans import parse_steps
from jobfleet.domain.status import (
    AccountCategory,
    ScriptLanguage,
    ScriptType,
    ScriptVersionStatus,
    VariableType,
)
from jobfleet.domain.templates import check_description, check_name, keep_masked, number
from jobfleet.domain.variables import Variable, parse_definitions
from jobfleet.store.accounts import AccountStore
from jobfleet.store.crons import refuse_launched_plans
from jobfleet.store.database import Database, new_stamps, now_ms
from jobfleet.store.scripts import ScriptStore
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import file_sources, job_plans, job_templates


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


def open_steps(raw: list[dict[str, Any]] | None, cipher: Cipher) -> list[dict[str, Any]]:
    """Steps (a copy: callers may change it), sensitive script parameters in clear
    (never to show: see ``domain.templates.public_steps``)."""
    steps = copy.deepcopy(list(raw or []))
    for step in steps:
        info = step.get("script_info")
        if info and info.get("is_param_sensitive") and info.get("script_param"):
            info["script_param"] = cipher.decrypt(str(info["script_param"]))
    return steps


def seal_steps(steps: list[dict[str, Any]], cipher: Cipher) -> list[dict[str, Any]]:
    """Steps as stored: sensitive script parameters encrypted.

    ``steps`` hold parameters in clear (as a request or ``open_steps`` gives them): one
    that merely looks sealed (``enc:v1:...``) is a caller's text, sealed like any other."""
    sealed = copy.deepcopy(steps)
    for step in sealed:
        info = step.get("script_info")
        param = info.get("script_param") if info else None
        if info and info.get("is_param_sensitive") and param:
            info["script_param"] = cipher.encrypt(str(param))
    return sealed


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


def list_filters(table: Table, f: ListFilter) -> list[ColumnElement[bool]]:
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


async def write_lock(conn: AsyncConnection, table: Table, row_id: int) -> None:
    """Before reading a row that the transaction rewrites from what it read: SQLite,
    which has no FOR UPDATE, reads outside the write until the first write, so two
    updates would both start from the same row and the later one undo the other's
    change. A write that changes nothing takes SQLite's one write lock first."""
    if conn.dialect.name == "sqlite":
        await conn.execute(update(table).where(table.c.id == row_id).values(id=table.c.id))


async def template_row(
    conn: AsyncConnection, biz_ids: Collection[int], template_id: int, *, lock: bool = False
) -> Row[Any]:
    """A template of these businesses, or TEMPLATE_NOT_EXIST; with ``lock``, held
    until the transaction ends."""
    query = select(job_templates).where(
        job_templates.c.id == template_id, job_templates.c.bk_biz_id.in_(list(biz_ids))
    )
    if lock:
        await write_lock(conn, job_templates, template_id)
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise JobError(ErrorCode.TEMPLATE_NOT_EXIST, f"Job template {template_id} does not exist")
    return row


@asynccontextmanager
async def writing(db: Database) -> AsyncIterator[AsyncConnection]:
    """A write transaction where a unique-name race ends as CONFLICT, not a 500."""
    try:
        async with db.begin() as conn:
            yield conn
    except IntegrityError:
        raise JobError(ErrorCode.CONFLICT, "The name is taken (a concurrent change won)") from None


async def name_holder(
    conn: AsyncConnection, table: Table, owner: str, owner_id: int, name: str
) -> int | None:
    """The id of the row of ``table`` named ``name`` under ``owner_id`` (its ``owner``
    column), if there is one."""
    found = (
        await conn.execute(
            select(table.c.id).where(table.c[owner] == owner_id, table.c.name == name)
        )
    ).scalar()
    return None if found is None else int(found)


class SealedRows:
    """Reads the steps and variables of template and plan rows, secrets in clear."""

    def __init__(self, db: Database, cipher: Cipher) -> None:
        self.db = db
        self.cipher = cipher

    def variables(self, row: Row[Any]) -> list[Variable]:
        """A template's or plan's variables with password values in clear (never to show)."""
        return open_variables(row.variables, self.cipher)

    def steps(self, row: Row[Any]) -> list[dict[str, Any]]:
        """A template's or plan's steps (a copy: callers may change it), sensitive
        script parameters in clear (never to show: see ``public_steps``)."""
        return open_steps(row.steps, self.cipher)


class TemplateStore(SealedRows):
    def __init__(self, db: Database, cipher: Cipher) -> None:
        super().__init__(db, cipher)
        self.accounts = AccountStore(db)
        self.scripts = ScriptStore(db)

    async def template(self, template_id: int) -> Row[Any] | None:
        async with self.db.connect() as conn:
            return (
                await conn.execute(select(job_templates).where(job_templates.c.id == template_id))
            ).first()

    async def get_template(self, biz_ids: Collection[int], template_id: int) -> Row[Any]:
        async with self.db.connect() as conn:
            return await template_row(conn, biz_ids, template_id)

    async def list_templates(
        self, biz_ids: Collection[int], filters: ListFilter, offset: int = 0, limit: int = 20
    ) -> tuple[int, list[Row[Any]]]:
        cond = [job_templates.c.bk_biz_id.in_(list(biz_ids)), *list_filters(job_templates, filters)]
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

    async def by_name(self, conn: AsyncConnection, bk_biz_id: int, name: str) -> Row[Any] | None:
        return (
            await conn.execute(
                select(job_templates).where(
                    job_templates.c.bk_biz_id == bk_biz_id, job_templates.c.name == name
                )
            )
        ).first()

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
        async with writing(self.db) as conn:
            return await self.insert(conn, bk_biz_id, name, description, steps, variables, user)

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
        async with writing(self.db) as conn:
            row = await template_row(conn, biz_ids, template_id, lock=True)
            await self.write(conn, row, name, description, steps, variables, user)
            return await template_row(conn, biz_ids, template_id)

    async def delete_template(
        self, biz_ids: Collection[int], template_id: int, *, cascade: bool = False
    ) -> tuple[Row[Any], list[int]]:
        """Delete a template; with plans only when ``cascade`` (and then them too).

        Returns the deleted row and the ids of the plans deleted with it.
        """
        async with self.db.begin() as conn:
            row = await template_row(conn, biz_ids, template_id, lock=True)
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
            await refuse_launched_plans(conn, plan_ids)
            if plan_ids:
                await conn.execute(delete(job_plans).where(job_plans.c.id.in_(plan_ids)))
            await conn.execute(delete(job_templates).where(job_templates.c.id == template_id))
        return row, plan_ids

    # writes inside a caller's transaction -------------------------------------
    async def insert(
        self,
        conn: AsyncConnection,
        bk_biz_id: int,
        name: str,
        description: str,
        steps: list[dict[str, Any]],
        variables: list[Variable],
        user: str,
    ) -> int:
        await self._name_free(conn, bk_biz_id, name, None)
        next_step, next_var = number(steps, variables, [], [], 1, 1)
        keep_masked(steps, variables, [], [])
        await self._resolve_references(conn, bk_biz_id, steps)
        now = now_ms()
        res = await conn.execute(
            insert(job_templates).values(
                bk_biz_id=bk_biz_id,
                name=name,
                description=description,
                version=1,
                steps=seal_steps(steps, self.cipher),
                variables=seal_variables(variables, self.cipher),
                next_step_id=next_step,
                next_variable_id=next_var,
                **new_stamps(user, now),
            )
        )
        return int(res.inserted_primary_key[0])  # type: ignore[index]

    async def write(
        self,
        conn: AsyncConnection,
        row: Row[Any],
        name: str,
        description: str,
        steps: list[dict[str, Any]],
        variables: list[Variable],
        user: str,
    ) -> None:
        await self._name_free(conn, row.bk_biz_id, name, row.id)
        old_steps, old_vars = self.steps(row), self.variables(row)
        next_step, next_var = number(
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
                steps=seal_steps(steps, self.cipher),
                variables=seal_variables(variables, self.cipher),
                next_step_id=next_step,
                next_variable_id=next_var,
                last_modify_user=user,
                last_modify_time=now_ms(),
            )
        )

    async def _name_free(
        self, conn: AsyncConnection, bk_biz_id: int, name: str, own_id: int | None
    ) -> None:
        found = await name_holder(conn, job_templates, "bk_biz_id", bk_biz_id, name)
        if found is not None and found != own_id:
            raise JobError(
                ErrorCode.CONFLICT,
                f"A job template named {name!r} exists in business {bk_biz_id} (id {found})",
            )

    # references -------------------------------------------------------------
    async def _resolve_references(
        self, conn: AsyncConnection, bk_biz_id: int, steps: list[dict[str, Any]]
    ) -> None:
        """Check the accounts and scripts steps name, and store both the id and alias of
        each account and the pinned version (and language) of each script (in place)."""
        for step in steps:
            where = f"step {step['name']!r}"
            info = step.get("script_info")
            if info is not None:
                if info["script_type"] != ScriptType.LOCAL:
                    await self._script(conn, bk_biz_id, info, where)
                # an SQL step runs through a database account
                sql = info.get("script_language") == ScriptLanguage.SQL
                category = AccountCategory.DB if sql else AccountCategory.SYSTEM
                info["account"] = await self._account(
                    conn, bk_biz_id, info["account"], where, category
                )
            files = step.get("file_info")
            if files is not None:
                for src in files["file_source_list"]:
                    if "account" in src:
                        src["account"] = await self._account(conn, bk_biz_id, src["account"], where)
                    if src.get("file_source_id") is not None:
                        await self._file_source(conn, bk_biz_id, src["file_source_id"], where)
                dest = files["file_destination"]
                dest["account"] = await self._account(conn, bk_biz_id, dest["account"], where)

    async def _account(
        self,
        conn: AsyncConnection,
        bk_biz_id: int,
        ref: dict[str, Any],
        where: str,
        category: int = AccountCategory.SYSTEM,
    ) -> dict[str, Any]:
        named = f"id {ref['id']}" if ref.get("id") is not None else repr(ref.get("alias"))
        row = await self.accounts.find(
            [bk_biz_id], category, account_id=ref.get("id"), alias=ref.get("alias"), conn=conn
        )
        if row is None:
            raise JobError(
                ErrorCode.ACCOUNT_NOT_EXIST,
                f"Account {named} of {where} does not exist in business {bk_biz_id}",
            )
        return {"id": int(row.id), "alias": str(row.alias)}

    @staticmethod
    async def _file_source(
        conn: AsyncConnection, bk_biz_id: int, source_id: int, where: str
    ) -> None:
        """A launch looks the source up in the template's business: one of another
        business, or none, would only be refused then."""
        found = (
            await conn.execute(
                select(file_sources.c.id).where(
                    file_sources.c.bk_biz_id == bk_biz_id, file_sources.c.id == source_id
                )
            )
        ).first()
        if found is None:
            raise JobError(
                ErrorCode.FILE_SOURCE_NOT_EXIST,
                f"File source {source_id} of {where} does not exist in business {bk_biz_id}",
            )

    async def _script(
        self, conn: AsyncConnection, bk_biz_id: int, info: dict[str, Any], where: str
    ) -> None:
        public = info["script_type"] == ScriptType.PUBLIC_SCRIPT
        kind = "public script" if public else "script"
        script_id = info.get("script_id")
        version_id = info.get("script_version_id")
        version = None
        owner = None if public else bk_biz_id
        if version_id is not None:
            version = await self.scripts.version_by_id(conn, version_id)
            # named alone, a version of another owner's script is one that does not
            # exist: its script's id is no answer to a version id one may guess
            if (
                version is None
                or (script_id and version.script_id != script_id)
                or (
                    not script_id
                    and await self.scripts.owned_script(conn, owner, str(version.script_id))
                    is None
                )
            ):
                raise JobError(
                    ErrorCode.SCRIPT_VERSION_NOT_EXIST,
                    f"Script version {version_id} of {where} does not exist"
                    + (f" in script {script_id}" if script_id else ""),
                )
            script_id = version.script_id
        script = await self.scripts.owned_script(conn, owner, str(script_id))
        if script is None:
            raise JobError(
                ErrorCode.SCRIPT_NOT_EXIST,
                f"The {kind} {script_id} of {where} does not exist"
                + ("" if public else f" in business {bk_biz_id}"),
            )
        if version is None:
            version = await self.scripts.online_version(conn, script.id)
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
