"""The audit log: who did what, when, from which app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, insert, or_, select

from jobfleet.store.database import Database, now_ms
from jobfleet.store.tables import audit_log


@dataclass
class AuditQuery:
    """Filters of an audit search; ``None`` leaves a field free.

    ``action`` matches exactly, or as a prefix when it ends with ``*``; ``scopes``
    limits entries to those (scope_type, scope_id) pairs (a user's grants).
    """

    since: int | None = None
    until: int | None = None
    username: str | None = None
    app_code: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    scope_type: str | None = None
    scope_id: str | None = None
    scopes: list[tuple[str, str]] | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        c = audit_log.c
        cond: list[ColumnElement[bool]] = []
        if self.since is not None:
            cond.append(c.create_time >= self.since)
        if self.until is not None:
            cond.append(c.create_time <= self.until)
        for value, column in (
            (self.username, c.username),
            (self.app_code, c.app_code),
            (self.resource_type, c.resource_type),
            (self.resource_id, c.resource_id),
            (self.scope_type, c.scope_type),
            (self.scope_id, c.scope_id),
        ):
            if value is not None:
                cond.append(column == value)
        if self.action is not None:
            if self.action.endswith("*"):
                cond.append(c.action.startswith(self.action[:-1], autoescape=True))
            else:
                cond.append(c.action == self.action)
        if self.scopes is not None:
            pairs = [and_(c.scope_type == t, c.scope_id == i) for t, i in self.scopes]
            cond.append(or_(*pairs) if pairs else false())
        return cond


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

    async def query(
        self, query: AuditQuery, *, offset: int = 0, limit: int = 20
    ) -> tuple[int, list[dict[str, Any]]]:
        """Matching entries, newest first, and how many match in all."""
        cond = query.conditions()
        async with self.db.connect() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(audit_log).where(*cond))
            ).scalar_one()
            rows = await conn.execute(
                select(audit_log)
                .where(*cond)
                .order_by(audit_log.c.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return int(total), [dict(r._mapping) for r in rows]
