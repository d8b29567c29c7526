"""The audit log: who did what, when, from which app."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, false, func, insert, or_, select, update

from jobfleet.domain.callers import escape_control
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


# an entry's detail is kept to this many bytes of JSON; past it, a marked preview
MAX_DETAIL = 4096
TRUNCATED = "...[truncated]"
# refusals from one address for one reason share one entry per window, with a count
REFUSAL_WINDOW = 60.0
# counts of a shared entry are written back at most this often
REFUSAL_FLUSH = 5.0
# distinct (address, reason) pairs remembered at once; past it, one overflow entry
MAX_REFUSAL_KEYS = 10_000
OVERFLOW: tuple[str, ...] = ("*", "overflow")
# column widths of audit_log: longer values are cut, never refused by the database
WIDTHS = {
    "app_code": 128,
    "username": 128,
    "action": 64,
    "scope_type": 32,
    "scope_id": 64,
    "resource_type": 64,
    "resource_id": 128,
    "source_ip": 64,
}


def bound_detail(detail: dict[str, Any] | None) -> dict[str, Any] | None:
    """The detail as stored: whole if its JSON fits ``MAX_DETAIL``, else a marked preview."""
    if detail is None:
        return None
    text = orjson.dumps(detail, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    if len(text) <= MAX_DETAIL:
        return dict(orjson.loads(text))
    return {"truncated": True, "size": len(text), "preview": text[: MAX_DETAIL - 64] + TRUNCATED}


def _cut(value: str | None, width: int) -> str | None:
    if value is None:
        return value
    # a name typed at the login form or sent by an app is recorded as given, but a
    # newline or bidi override in it must not forge or hide a line where it is read
    value = escape_control(value)
    if len(value) <= width:
        return value
    return value[: width - 3] + "..."


def entry(
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
    now: int | None = None,
) -> dict[str, Any]:
    """An audit row as stored (values cut to their columns, the detail bounded), for
    ``AuditLog.record`` and for stores that write their entry in their own transaction."""
    values = {
        "app_code": app_code,
        "username": username,
        "action": action,
        "scope_type": scope_type,
        "scope_id": scope_id,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "source_ip": source_ip,
    }
    return {
        **{k: _cut(v, WIDTHS[k]) for k, v in values.items()},
        "create_time": now_ms() if now is None else now,
        "detail": bound_detail(detail),
    }


@dataclass
class _Refusal:
    window: int
    count: int
    written: int
    row_id: int | None
    flushed: float
    detail: dict[str, Any]


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._refusals: dict[tuple[str, ...], _Refusal] = {}
        # the newest window an entry was made in: entries of the ones before are done with
        self._window = 0

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
    ) -> int:
        values = entry(
            app_code=app_code,
            username=username,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            scope_type=scope_type,
            scope_id=scope_id,
            detail=detail,
            source_ip=source_ip,
        )
        async with self.db.begin() as conn:
            res = await conn.execute(insert(audit_log).values(**values))
        return int(res.inserted_primary_key[0])  # type: ignore[index]

    async def record_all(self, rows: list[dict[str, Any]]) -> None:
        """Write rows made by ``entry`` in one transaction: all of them or none."""
        if not rows:
            return
        async with self.db.begin() as conn:
            await conn.execute(insert(audit_log), rows)

    async def refused(
        self,
        *,
        source_ip: str,
        reason: str,
        app_code: str = "",
        username: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """A refused attempt. Repeats from one address for one reason within a window
        add to one entry's ``count`` instead of writing a row each: a flood of bad
        requests must not become a flood of writes."""
        await self.coalesced(
            (source_ip, reason),
            app_code=app_code,
            username=username,
            action="refused",
            resource_type="request",
            resource_id=reason,
            detail={"reason": reason, **(detail or {})},
            source_ip=source_ip,
        )

    async def coalesced(
        self,
        key: tuple[str, ...],
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
        """One entry per ``key`` and window, its ``count`` raised by every repeat: for
        what happens too often to write a row each (refusals, clients polling logs)."""
        now = time.time()
        window = int(now // REFUSAL_WINDOW)
        if window > self._window:
            # keys are per job and caller (log reads): without this, the entries of windows
            # long past, one a job read, stayed until MAX_REFUSAL_KEYS of them or a read of
            # the audit log, and their last counts were not written until then
            self._window = window
            await self._forget_old(window)
        entry = self._refusals.get(key)
        overflow = False
        if entry is None and len(self._refusals) >= MAX_REFUSAL_KEYS:
            await self._forget_old(window)
            if len(self._refusals) >= MAX_REFUSAL_KEYS:
                key, overflow = OVERFLOW, True
                entry = self._refusals.get(key)
        if entry is not None and entry.window == window:
            entry.count += 1
            if now - entry.flushed >= REFUSAL_FLUSH:
                await self._flush_one(entry, now)
            return
        if entry is not None:
            await self._flush_one(entry, now)
        first = {**(detail or {}), "count": 1}
        entry = _Refusal(window, 1, 1, None, now, first)
        self._refusals[key] = entry
        try:
            row_id = await self.record(
                app_code=app_code,
                username=username,
                action=action if not overflow else f"{action}_overflow",
                resource_type=resource_type,
                resource_id=resource_id,
                scope_type=scope_type,
                scope_id=scope_id,
                detail=first,
                source_ip=source_ip if not overflow else "*",
            )
        except BaseException:
            # no row to count into: the next call of the window makes one, rather
            # than counting into nothing
            if self._refusals.get(key) is entry:
                del self._refusals[key]
            raise
        entry.row_id = row_id
        if entry.count > entry.written:
            await self._flush_one(entry, now)

    async def flush(self) -> None:
        """Write back the counts of shared refusal entries."""
        now = time.time()
        for entry in list(self._refusals.values()):
            await self._flush_one(entry, now)
        await self._forget_old(int(now // REFUSAL_WINDOW))

    async def _forget_old(self, window: int) -> None:
        for key, entry in list(self._refusals.items()):
            if entry.window != window:
                await self._flush_one(entry, time.time())
                # a call of the new window may have put its own entry here meanwhile
                if self._refusals.get(key) is entry:
                    del self._refusals[key]

    async def _flush_one(self, entry: _Refusal, now: float) -> None:
        if entry.row_id is None or entry.count == entry.written:
            return
        entry.written = entry.count
        entry.flushed = now
        detail = bound_detail({**entry.detail, "count": entry.count})
        async with self.db.begin() as conn:
            await conn.execute(
                update(audit_log).where(audit_log.c.id == entry.row_id).values(detail=detail)
            )

    async def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        await self.flush()
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
            )
            return [dict(r._mapping) for r in rows]

    async def query(
        self, query: AuditQuery, *, offset: int = 0, limit: int = 20
    ) -> tuple[int, list[dict[str, Any]]]:
        """Matching entries, newest first, and how many match in all."""
        await self.flush()
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
