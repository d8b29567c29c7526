"""Credentials (sealed) and the third-party file sources that use them, per business."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.database import Database, change_stamps, new_stamps, now_ms
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import credentials, file_sources


def credential_view(row: Row[Any]) -> dict[str, Any]:
    """A credential as the API shows it: never its values."""
    return {
        "id": row.id,
        "name": row.name,
        "type": row.type,
        "description": row.description,
        **change_stamps(row),
    }


def file_source_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "code": row.code,
        "alias": row.alias,
        "status": 1,
        "file_source_type_code": row.type,
        "is_public": False,
        "credential_id": row.credential_id,
        "enable": bool(row.enable),
        **change_stamps(row),
    }


class FileSourceStore:
    def __init__(self, db: Database, cipher: Cipher) -> None:
        self.db = db
        self.cipher = cipher

    # credentials ------------------------------------------------------------
    async def create_credential(
        self,
        bk_biz_id: int,
        *,
        name: str,
        type_: str,
        description: str,
        values: dict[str, str],
        user: str,
    ) -> Row[Any]:
        credential_id = uuid.uuid4().hex
        async with self.db.begin() as conn:
            await conn.execute(
                insert(credentials).values(
                    id=credential_id,
                    bk_biz_id=bk_biz_id,
                    name=name,
                    type=type_,
                    description=description,
                    secret=self._seal(values),
                    **new_stamps(user, now_ms()),
                )
            )
        return await self.credential(bk_biz_id, credential_id)

    async def update_credential(
        self,
        bk_biz_id: int,
        credential_id: str,
        *,
        user: str,
        name: str | None,
        type_: str | None,
        description: str | None,
        values: dict[str, str] | None,
    ) -> Row[Any]:
        await self.credential(bk_biz_id, credential_id)
        changes: dict[str, Any] = {"last_modify_user": user, "last_modify_time": now_ms()}
        if name:
            changes["name"] = name
        if type_ and values is not None:
            changes["type"] = type_
            changes["secret"] = self._seal(values)
        if description is not None:
            changes["description"] = description
        async with self.db.begin() as conn:
            await conn.execute(
                update(credentials).where(credentials.c.id == credential_id).values(**changes)
            )
        return await self.credential(bk_biz_id, credential_id)

    async def credential(self, bk_biz_id: int, credential_id: str) -> Row[Any]:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(credentials).where(
                        credentials.c.id == credential_id, credentials.c.bk_biz_id == bk_biz_id
                    )
                )
            ).first()
        if row is None:
            raise JobError(
                ErrorCode.CREDENTIAL_NOT_EXIST, f"Credential {credential_id} does not exist"
            )
        return row

    def values(self, row: Row[Any]) -> dict[str, str]:
        """A credential's clear values, for the moment a fetch needs them."""
        loaded = orjson.loads(self.cipher.decrypt(row.secret))
        return {str(k): str(v) for k, v in loaded.items()}

    def _seal(self, values: dict[str, str]) -> str:
        return self.cipher.encrypt(orjson.dumps(values).decode())

    # file sources -----------------------------------------------------------
    async def create_source(self, bk_biz_id: int, values: dict[str, Any], user: str) -> Row[Any]:
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    insert(file_sources).values(
                        bk_biz_id=bk_biz_id, enable=True, **values, **new_stamps(user, now_ms())
                    )
                )
        except IntegrityError:
            raise JobError(
                ErrorCode.FILE_SOURCE_CODE_EXISTS,
                f"File source code [{values['code']}] already exists",
            ) from None
        found = await self.source_by_code(bk_biz_id, str(values["code"]))
        assert found is not None
        return found

    async def update_source(
        self, bk_biz_id: int, code: str, values: dict[str, Any], user: str
    ) -> Row[Any]:
        row = await self.source_by_code(bk_biz_id, code)
        if row is None:
            raise JobError(
                ErrorCode.FILE_SOURCE_NOT_FOUND_BY_CODE,
                f"Cannot find file source by code [{code}]",
            )
        async with self.db.begin() as conn:
            await conn.execute(
                update(file_sources)
                .where(file_sources.c.id == row.id)
                .values(**values, last_modify_user=user, last_modify_time=now_ms())
            )
        found = await self.source_by_code(bk_biz_id, code)
        assert found is not None
        return found

    async def source_by_code(self, bk_biz_id: int, code: str) -> Row[Any] | None:
        async with self.db.connect() as conn:
            return (
                await conn.execute(
                    select(file_sources).where(
                        file_sources.c.bk_biz_id == bk_biz_id, file_sources.c.code == code
                    )
                )
            ).first()

    async def sources_of(self, bk_biz_id: int, credential_id: str) -> list[Row[Any]]:
        """The file sources of the business that use this credential."""
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(file_sources)
                .where(
                    file_sources.c.bk_biz_id == bk_biz_id,
                    file_sources.c.credential_id == credential_id,
                )
                .order_by(file_sources.c.id)
            )
            return list(rows.all())

    async def source_by_id(self, biz_ids: set[int], source_id: int) -> Row[Any] | None:
        async with self.db.connect() as conn:
            return (
                await conn.execute(
                    select(file_sources).where(
                        file_sources.c.bk_biz_id.in_(list(biz_ids)),
                        file_sources.c.id == source_id,
                    )
                )
            ).first()

    async def source_in(self, biz_ids: set[int], code: str) -> Row[Any] | None:
        async with self.db.connect() as conn:
            return (
                await conn.execute(
                    select(file_sources).where(
                        file_sources.c.bk_biz_id.in_(list(biz_ids)), file_sources.c.code == code
                    )
                )
            ).first()

