"""The host whitelist: hosts of one business that other businesses may target, per action."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Row, delete, insert, select

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.database import Database, now_ms
from jobfleet.store.inventory import Host, chunks
from jobfleet.store.tables import businesses, host_whitelist

SCRIPT_EXECUTE = "SCRIPT_EXECUTE"
FILE_DISTRIBUTION = "FILE_DISTRIBUTION"
ACTION_SCOPES = (SCRIPT_EXECUTE, FILE_DISTRIBUTION)


def whitelist_view(row: Row[Any], host: Host | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "bk_host_id": row.bk_host_id,
        "bk_cloud_id": host.bk_cloud_id if host else None,
        "ip": host.ip if host else None,
        "ipv6": host.ipv6 if host else None,
        "host_bk_biz_id": host.bk_biz_id if host else None,
        "biz_ids": list(row.biz_ids),
        "action_scopes": list(row.action_scopes),
        "remark": row.remark,
        "creator": row.creator,
        "create_time": row.create_time,
    }


class HostWhitelist:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def whitelist(self) -> list[Row[Any]]:
        async with self.db.connect() as conn:
            return list(
                (await conn.execute(select(host_whitelist).order_by(host_whitelist.c.id))).all()
            )

    async def whitelist_entry(self, entry_id: int) -> Row[Any]:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(select(host_whitelist).where(host_whitelist.c.id == entry_id))
            ).first()
        if row is None:
            raise JobError(ErrorCode.NOT_FOUND, f"Whitelist entry {entry_id} does not exist")
        return row

    async def add_whitelist(
        self,
        bk_host_id: int,
        biz_ids: Sequence[int],
        action_scopes: Sequence[str],
        remark: str,
        creator: str,
    ) -> Row[Any]:
        async with self.db.begin() as conn:
            known = set((await conn.execute(select(businesses.c.bk_biz_id))).scalars())
            unknown = [b for b in biz_ids if b not in known]
            if unknown:
                raise JobError(ErrorCode.BIZ_NOT_EXIST, f"Businesses do not exist: {unknown}")
            res = await conn.execute(
                insert(host_whitelist).values(
                    bk_host_id=bk_host_id,
                    biz_ids=sorted(set(biz_ids)),
                    action_scopes=[a for a in ACTION_SCOPES if a in action_scopes],
                    remark=remark,
                    creator=creator,
                    create_time=now_ms(),
                )
            )
            new_id = int(res.inserted_primary_key[0])  # type: ignore[index]
        return await self.whitelist_entry(new_id)

    async def delete_whitelist(self, entry_id: int) -> Row[Any]:
        row = await self.whitelist_entry(entry_id)
        async with self.db.begin() as conn:
            await conn.execute(delete(host_whitelist).where(host_whitelist.c.id == entry_id))
        return row

    async def whitelisted(
        self, host_ids: Sequence[int], biz_ids: Iterable[int], action: str
    ) -> set[int]:
        """Which of these hosts an entry lets one of these businesses use for ``action``."""
        wanted = set(biz_ids)
        allowed: set[int] = set()
        async with self.db.connect() as conn:
            for part in chunks(sorted(set(host_ids))):
                rows = await conn.execute(
                    select(host_whitelist).where(host_whitelist.c.bk_host_id.in_(part))
                )
                for row in rows:
                    if action in (row.action_scopes or []) and wanted & set(row.biz_ids or []):
                        allowed.add(row.bk_host_id)
        return allowed
