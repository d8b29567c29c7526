"""The audit log: who did what, when, from which app."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select

from jobfleet.store.database import Database, now_ms
from jobfleet.store.tables import audit_log


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(
        self,
        *,
        app_code: str,
        username: str,
        action: str,
        resource_type: str,
        resource_id: str = "",
        scope_type: str | None = None,
        scope_id: str | None = None,
        detail: dict[str, Any] | None = None,
        source_ip: str = "",
    ) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                insert(audit_log).values(
                    create_time=now_ms(),
                    app_code=app_code,
                    username=username,
                    action=action,
                    scope_type=scope_type,
                    scope_id=scope_id,
                    resource_type=resource_type,
                    resource_id=resource_id,
                    detail=detail,
                    source_ip=source_ip,
                )
            )

    async def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
            )
            return [dict(r._mapping) for r in rows]
