"""Business and public scripts with their versions.

A script belongs to one business (``bk_biz_id``; a business set's id for a business-set
scope) or is public (``public`` true, no business). Every method takes ``bk_biz_id``:
``None`` means the public scripts. A script another owner holds is reported as not
existing, so ids never leak across businesses.

Version states (``ScriptVersionStatus``): a new version is a draft; publishing moves it
online and the previous online version offline; disabling is final. Only drafts change.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain import script_tags
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import ScriptVersionStatus
from jobfleet.store.database import change_stamps, lock_names, new_stamps, now_ms
from jobfleet.store.script_lookups import (
    ScriptLookups,
    disabled,
    no_script,
    no_version,
    owned_by,
)
from jobfleet.store.tables import script_versions, scripts

PUBLISHABLE = (ScriptVersionStatus.DRAFT, ScriptVersionStatus.OFFLINE)
DISABLEABLE = (ScriptVersionStatus.DRAFT, ScriptVersionStatus.ONLINE, ScriptVersionStatus.OFFLINE)


def script_view(row: Row[Any], online_version_id: int | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "script_language": row.script_language,
        "online_script_version_id": online_version_id,
        "public_script": bool(row.public),
        "description": row.description,
        "tags": script_tags.split(row.tags),
        **change_stamps(row),
    }


def version_view(script: Row[Any], version: Row[Any], *, content: bool = True) -> dict[str, Any]:
    return {
        "id": version.id,
        # newer bk-job releases name the version id this way too
        "script_version_id": version.id,
        "script_id": script.id,
        "name": script.name,
        "version": version.version,
        "content": version.content if content else None,
        "status": version.status,
        "version_desc": version.version_desc,
        "script_language": script.script_language,
        "description": script.description,
        "public_script": bool(script.public),
        "creator": version.creator,
        "create_time": version.create_time,
        "last_modify_user": version.last_modify_user,
        "last_modify_time": version.last_modify_time,
    }


def _status_error(version: Row[Any], wanted: str) -> JobError:
    """Why ``version`` cannot go through ``wanted`` (publish, update, disable, delete)."""
    if version.status == ScriptVersionStatus.DISABLED:
        return disabled(version)
    state = ScriptVersionStatus(version.status).name.lower()
    reasons = {
        "publish": f"script version {version.id} is already online",
        "update": f"script version {version.id} is {state}: only drafts can be changed; "
        "create a new version instead",
        "delete": f"script version {version.id} is online: publish another version "
        "or disable this one before deleting it",
    }
    return JobError(ErrorCode.UNSUPPORTED_OPERATION, reasons.get(wanted, f"cannot {wanted}"))


class ScriptStore(ScriptLookups):
    """Scripts and their versions; lookups for jobs and templates are inherited."""

    # scripts ----------------------------------------------------------------
    async def list_scripts(
        self,
        bk_biz_id: int | None,
        *,
        name: str | None = None,
        language: int | None = None,
        tag: str | None = None,
        offset: int = 0,
        limit: int = 20,
    ) -> tuple[int, list[dict[str, Any]]]:
        cond = owned_by(bk_biz_id)
        if name:
            cond.append(scripts.c.name.icontains(name, autoescape=True))
        if tag:
            cond.append(scripts.c.tags.contains(f",{tag},", autoescape=True))
        if language:
            cond.append(scripts.c.script_language == language)
        async with self.db.connect() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(scripts).where(*cond))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(scripts)
                    .where(*cond)
                    .order_by(scripts.c.last_modify_time.desc(), scripts.c.id)
                    .offset(offset)
                    .limit(limit)
                )
            ).all()
            online = await self._online_ids(conn, [r.id for r in rows])
        return int(total), [script_view(r, online.get(r.id)) for r in rows]

    async def get_script(self, bk_biz_id: int | None, script_id: str) -> dict[str, Any]:
        async with self.db.connect() as conn:
            row = await self._script(conn, bk_biz_id, script_id)
            online = await self._online_ids(conn, [row.id])
        return script_view(row, online.get(row.id))

    async def create_script(
        self,
        bk_biz_id: int | None,
        *,
        name: str,
        language: int,
        description: str,
        content: str,
        version: str,
        version_desc: str,
        user: str,
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """A new script with its first version, a draft; answers the version's view."""
        script_id = uuid.uuid4().hex
        now = now_ms()
        stamp = {
            "creator": user,
            "create_time": now,
            "last_modify_user": user,
            "last_modify_time": now,
        }
        async with self.db.begin() as conn:
            await lock_names(conn, "scripts", bk_biz_id)
            await conn.execute(
                insert(scripts).values(
                    id=script_id,
                    bk_biz_id=bk_biz_id,
                    public=bk_biz_id is None,
                    name=name,
                    script_language=language,
                    description=description,
                    tags=script_tags.joined(tags or []),
                    **stamp,
                )
            )
            await self._check_name_free(conn, bk_biz_id, name)
            res = await conn.execute(
                insert(script_versions).values(
                    script_id=script_id,
                    version=version,
                    content=content,
                    status=int(ScriptVersionStatus.DRAFT),
                    version_desc=version_desc,
                    **stamp,
                )
            )
            version_id = int(res.inserted_primary_key[0])  # type: ignore[index]
            return await self._version_view(conn, bk_biz_id, script_id, version_id)

    async def update_script_basic(
        self,
        bk_biz_id: int | None,
        script_id: str,
        *,
        user: str,
        name: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        values: dict[str, Any] = {"last_modify_user": user, "last_modify_time": now_ms()}
        if name is not None:
            values["name"] = name
        if description is not None:
            values["description"] = description
        if tags is not None:
            values["tags"] = script_tags.joined(tags)
        async with self.db.begin() as conn:
            if name is not None:
                await lock_names(conn, "scripts", bk_biz_id)
            await self._script(conn, bk_biz_id, script_id, lock=True)
            await conn.execute(update(scripts).where(scripts.c.id == script_id).values(**values))
            if name is not None:
                await self._check_name_free(conn, bk_biz_id, name)
            row = await self._script(conn, bk_biz_id, script_id)
            online = await self._online_ids(conn, [script_id])
        return script_view(row, online.get(script_id))

    async def delete_script(self, bk_biz_id: int | None, script_id: str) -> dict[str, Any]:
        """Delete a script and every version of it; answers what was deleted."""
        async with self.db.begin() as conn:
            row = await self._script(conn, bk_biz_id, script_id, lock=True)
            online = await self._online_ids(conn, [script_id])
            await conn.execute(
                delete(script_versions).where(script_versions.c.script_id == script_id)
            )
            await conn.execute(delete(scripts).where(scripts.c.id == script_id))
        return script_view(row, online.get(script_id))

    # versions ---------------------------------------------------------------
    async def list_versions(
        self,
        bk_biz_id: int | None,
        script_id: str,
        *,
        content: bool = False,
        offset: int = 0,
        limit: int = 20,
    ) -> tuple[int, list[dict[str, Any]]]:
        cond = [script_versions.c.script_id == script_id]
        async with self.db.connect() as conn:
            script = await self._script(conn, bk_biz_id, script_id)
            total = (
                await conn.execute(select(func.count()).select_from(script_versions).where(*cond))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(script_versions)
                    .where(*cond)
                    .order_by(script_versions.c.id.desc())
                    .offset(offset)
                    .limit(limit)
                )
            ).all()
        return int(total), [version_view(script, r, content=content) for r in rows]

    async def get_version(
        self,
        bk_biz_id: int | None,
        *,
        version_id: int | None = None,
        script_id: str | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """A version by its id, or by its script and version string."""
        async with self.db.connect() as conn:
            if version_id is not None:
                owner = (
                    await conn.execute(
                        select(script_versions.c.script_id).where(
                            script_versions.c.id == version_id
                        )
                    )
                ).scalar_one_or_none()
                if owner is None or (script_id and owner != script_id):
                    raise no_version(version_id)
                try:
                    return await self._version_view(conn, bk_biz_id, owner, version_id)
                except JobError as exc:
                    # a version of another owner's script is as unknown as a missing one
                    if exc.code == ErrorCode.SCRIPT_NOT_EXIST:
                        raise no_version(version_id) from None
                    raise
            if not script_id or version is None:
                raise JobError.missing("id|script_id+version")
            script = await self._script(conn, bk_biz_id, script_id)
            row = (
                await conn.execute(
                    select(script_versions).where(
                        script_versions.c.script_id == script_id,
                        script_versions.c.version == version,
                    )
                )
            ).first()
            if row is None:
                raise JobError(
                    ErrorCode.SCRIPT_VERSION_NOT_EXIST,
                    f"Script {script_id} has no version {version!r}",
                )
            return version_view(script, row)

    async def create_version(
        self,
        bk_biz_id: int | None,
        script_id: str,
        *,
        content: str,
        version: str,
        version_desc: str,
        user: str,
    ) -> dict[str, Any]:
        now = now_ms()
        try:
            async with self.db.begin() as conn:
                await self._script(conn, bk_biz_id, script_id, lock=True)
                res = await conn.execute(
                    insert(script_versions).values(
                        script_id=script_id,
                        version=version,
                        content=content,
                        status=int(ScriptVersionStatus.DRAFT),
                        version_desc=version_desc,
                        **new_stamps(user, now),
                    )
                )
                await self._touch(conn, script_id, user, now)
                version_id = int(res.inserted_primary_key[0])  # type: ignore[index]
                return await self._version_view(conn, bk_biz_id, script_id, version_id)
        except IntegrityError:
            raise JobError.invalid(
                "version", f"script {script_id} already has a version {version!r}"
            ) from None

    async def update_version(
        self,
        bk_biz_id: int | None,
        script_id: str,
        version_id: int,
        *,
        content: str,
        version_desc: str | None,
        user: str,
    ) -> dict[str, Any]:
        now = now_ms()
        values: dict[str, Any] = {
            "content": content,
            "last_modify_user": user,
            "last_modify_time": now,
        }
        if version_desc is not None:
            values["version_desc"] = version_desc
        async with self.db.begin() as conn:
            await self._script(conn, bk_biz_id, script_id, lock=True)
            await self._move(
                conn, script_id, version_id, "update", [ScriptVersionStatus.DRAFT], values
            )
            await self._touch(conn, script_id, user, now)
            return await self._version_view(conn, bk_biz_id, script_id, version_id)

    async def publish_version(
        self, bk_biz_id: int | None, script_id: str, version_id: int, *, user: str
    ) -> dict[str, Any]:
        """Put a draft or offline version online; the version online until now goes offline."""
        now = now_ms()
        stamp = {"last_modify_user": user, "last_modify_time": now}
        async with self.db.begin() as conn:
            # the script row lock keeps two publishes of one script from both winning
            await self._script(conn, bk_biz_id, script_id, lock=True)
            await conn.execute(
                update(script_versions)
                .where(
                    script_versions.c.script_id == script_id,
                    script_versions.c.id != version_id,
                    script_versions.c.status == int(ScriptVersionStatus.ONLINE),
                )
                .values(status=int(ScriptVersionStatus.OFFLINE), **stamp)
            )
            # a refusal here rolls the step above back
            await self._move(
                conn,
                script_id,
                version_id,
                "publish",
                PUBLISHABLE,
                {"status": int(ScriptVersionStatus.ONLINE), **stamp},
            )
            await self._touch(conn, script_id, user, now)
            return await self._version_view(conn, bk_biz_id, script_id, version_id)

    async def disable_version(
        self, bk_biz_id: int | None, script_id: str, version_id: int, *, user: str
    ) -> dict[str, Any]:
        """Disable a version for good: it can no longer run, be published or be changed."""
        now = now_ms()
        async with self.db.begin() as conn:
            await self._script(conn, bk_biz_id, script_id, lock=True)
            values = {
                "status": int(ScriptVersionStatus.DISABLED),
                "last_modify_user": user,
                "last_modify_time": now,
            }
            await self._move(conn, script_id, version_id, "disable", DISABLEABLE, values)
            await self._touch(conn, script_id, user, now)
            return await self._version_view(conn, bk_biz_id, script_id, version_id)

    async def delete_version(
        self, bk_biz_id: int | None, script_id: str, version_id: int, *, user: str
    ) -> dict[str, Any]:
        """Delete a version that is not online; answers what was deleted."""
        async with self.db.begin() as conn:
            await self._script(conn, bk_biz_id, script_id, lock=True)
            view = await self._version_view(conn, bk_biz_id, script_id, version_id)
            res = await conn.execute(
                delete(script_versions).where(
                    script_versions.c.id == version_id,
                    script_versions.c.status != int(ScriptVersionStatus.ONLINE),
                )
            )
            if res.rowcount != 1:
                raise _status_error(await self._version(conn, script_id, version_id), "delete")
            await self._touch(conn, script_id, user, now_ms())
        return view

    # helpers ----------------------------------------------------------------
    async def _script(
        self, conn: AsyncConnection, bk_biz_id: int | None, script_id: str, *, lock: bool = False
    ) -> Row[Any]:
        row = await self.owned_script(conn, bk_biz_id, script_id, lock=lock)
        if row is None:
            raise no_script(script_id)
        return row

    async def _version(self, conn: AsyncConnection, script_id: str, version_id: int) -> Row[Any]:
        row = (
            await conn.execute(
                select(script_versions).where(
                    script_versions.c.id == version_id, script_versions.c.script_id == script_id
                )
            )
        ).first()
        if row is None:
            raise no_version(version_id)
        return row

    async def _move(
        self,
        conn: AsyncConnection,
        script_id: str,
        version_id: int,
        wanted: str,
        allowed: tuple[ScriptVersionStatus, ...] | list[ScriptVersionStatus],
        values: dict[str, Any],
    ) -> None:
        """Change a version only while its status is one of ``allowed``.

        The condition sits in the UPDATE itself: on SQLite the reads before it run outside
        the write transaction, so a status read earlier may already be stale."""
        res = await conn.execute(
            update(script_versions)
            .where(
                script_versions.c.id == version_id,
                script_versions.c.script_id == script_id,
                script_versions.c.status.in_([int(s) for s in allowed]),
            )
            .values(**values)
        )
        if res.rowcount != 1:
            raise _status_error(await self._version(conn, script_id, version_id), wanted)

    async def _version_view(
        self, conn: AsyncConnection, bk_biz_id: int | None, script_id: str, version_id: int
    ) -> dict[str, Any]:
        script = await self._script(conn, bk_biz_id, script_id)
        return version_view(script, await self._version(conn, script_id, version_id))

    async def _online_ids(self, conn: AsyncConnection, script_ids: list[str]) -> dict[str, int]:
        if not script_ids:
            return {}
        rows = await conn.execute(
            select(script_versions.c.script_id, script_versions.c.id).where(
                script_versions.c.script_id.in_(script_ids),
                script_versions.c.status == int(ScriptVersionStatus.ONLINE),
            )
        )
        return {r.script_id: int(r.id) for r in rows}

    async def version_names(self, version_ids: list[int]) -> dict[int, str]:
        """The version strings (``1.0.2``) of these version ids, for a list to show."""
        if not version_ids:
            return {}
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(script_versions.c.id, script_versions.c.version).where(
                    script_versions.c.id.in_(version_ids)
                )
            )
            return {int(r.id): str(r.version) for r in rows}

    async def _touch(self, conn: AsyncConnection, script_id: str, user: str, now: int) -> None:
        await conn.execute(
            update(scripts)
            .where(scripts.c.id == script_id)
            .values(last_modify_user=user, last_modify_time=now)
        )

    async def _check_name_free(
        self, conn: AsyncConnection, bk_biz_id: int | None, name: str
    ) -> None:
        """Called after the write: more than one row with ``name`` means it was taken."""
        count = (
            await conn.execute(
                select(func.count())
                .select_from(scripts)
                .where(scripts.c.name == name, *owned_by(bk_biz_id))
            )
        ).scalar_one()
        if count > 1:
            owner = "public scripts" if bk_biz_id is None else f"business {bk_biz_id}"
            raise JobError.invalid("name", f"a script named {name!r} already exists in {owner}")
