"""What jobs and templates look up of stored scripts: the version a job runs, scripts
and versions by id inside a caller's transaction, the text of versions.

A script another owner holds is reported as not existing, so ids never leak across
businesses (see ``store/scripts.py``).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import ScriptVersionStatus
from jobfleet.store.database import Database
from jobfleet.store.tables import script_versions, scripts

# what script ids may look like; anything else cannot name a script (and never reaches SQL)
SCRIPT_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


@dataclass(frozen=True)
class ResolvedScript:
    """The version of a stored script a job runs."""

    script_id: str
    version_id: int
    version: str
    name: str
    language: int
    content: str
    public: bool


def owned_by(bk_biz_id: int | None) -> list[Any]:
    if bk_biz_id is None:
        return [scripts.c.public.is_(True)]
    return [scripts.c.public.is_(False), scripts.c.bk_biz_id == bk_biz_id]


def no_script(script_id: str) -> JobError:
    return JobError(ErrorCode.SCRIPT_NOT_EXIST, f"Script {script_id} does not exist")


def no_version(version_id: int | str) -> JobError:
    return JobError(
        ErrorCode.SCRIPT_VERSION_NOT_EXIST, f"Script version {version_id} does not exist"
    )


def disabled(version: Row[Any]) -> JobError:
    return JobError(
        ErrorCode.SCRIPT_VERSION_DISABLED,
        f"Script version {version.id} ({version.version}) is disabled",
    )


class ScriptLookups:
    def __init__(self, db: Database) -> None:
        self.db = db

    # execution --------------------------------------------------------------
    async def resolve_version(
        self,
        *,
        bk_biz_ids: set[int],
        script_id: str | None,
        script_version_id: int | None,
        public: bool | None = None,
    ) -> ResolvedScript:
        """The version a job runs: ``script_version_id`` if given, else the script's online one.

        Business scripts are visible when their business is in ``bk_biz_ids``; public
        scripts always are. ``public`` restricts the kind (None: either)."""
        async with self.db.connect() as conn:
            if script_version_id is not None:
                found = await self.version_by_id(conn, script_version_id)
                if found is None:
                    raise no_version(script_version_id)
                try:
                    script = await self._visible(conn, found.script_id, bk_biz_ids, public)
                except JobError:
                    # a version of a script the caller may not see is one that does not
                    # exist: its script's id is no answer to a version id one may guess
                    raise no_version(script_version_id) from None
                if found.status == ScriptVersionStatus.DISABLED:
                    raise disabled(found)
                return _resolved(script, found)
            if not script_id:
                raise JobError.missing("script_version_id|script_id")
            script = await self._visible(conn, script_id, bk_biz_ids, public)
            online = await self.online_version(conn, script_id)
        if online is None:
            raise JobError(
                ErrorCode.SCRIPT_NOT_EXECUTABLE,
                f"Script {script_id} ({script.name}) has no online version: "
                "publish a version or name one with script_version_id",
            )
        return _resolved(script, online)

    # lookups inside a caller's transaction -----------------------------------
    async def owned_script(
        self, conn: AsyncConnection, bk_biz_id: int | None, script_id: str, *, lock: bool = False
    ) -> Row[Any] | None:
        """The script ``bk_biz_id`` owns (None: the public one) with this id, if any."""
        if not SCRIPT_ID.fullmatch(script_id):
            return None
        query = select(scripts).where(scripts.c.id == script_id, *owned_by(bk_biz_id))
        if lock:
            query = query.with_for_update()
        return (await conn.execute(query)).first()

    @staticmethod
    async def version_by_id(conn: AsyncConnection, version_id: int) -> Row[Any] | None:
        return (
            await conn.execute(select(script_versions).where(script_versions.c.id == version_id))
        ).first()

    @staticmethod
    async def online_version(conn: AsyncConnection, script_id: str) -> Row[Any] | None:
        return (
            await conn.execute(
                select(script_versions).where(
                    script_versions.c.script_id == script_id,
                    script_versions.c.status == int(ScriptVersionStatus.ONLINE),
                )
            )
        ).first()

    async def contents(self, version_ids: Collection[int]) -> dict[int, str]:
        """The text of these script versions (those that exist), by id."""
        if not version_ids:
            return {}
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(script_versions.c.id, script_versions.c.content).where(
                    script_versions.c.id.in_(list(version_ids))
                )
            )
            return {int(r.id): str(r.content) for r in rows}

    async def _visible(
        self, conn: AsyncConnection, script_id: str, bk_biz_ids: set[int], public: bool | None
    ) -> Row[Any]:
        row = None
        if SCRIPT_ID.fullmatch(script_id):
            row = (await conn.execute(select(scripts).where(scripts.c.id == script_id))).first()
        if (
            row is None
            or (public is not None and bool(row.public) != public)
            or (not row.public and row.bk_biz_id not in bk_biz_ids)
        ):
            raise no_script(script_id)
        return row


def _resolved(script: Row[Any], version: Row[Any]) -> ResolvedScript:
    return ResolvedScript(
        script_id=script.id,
        version_id=int(version.id),
        version=version.version,
        name=script.name,
        language=int(script.script_language),
        content=version.content,
        public=bool(script.public),
    )
