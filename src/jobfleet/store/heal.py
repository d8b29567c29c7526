"""Self-healing rules and the decisions taken on inbound alerts.

A rule's webhook secret is stored encrypted and never leaves the server: views
say only that there is one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.database import Database, change_stamps, new_stamps, now_ms
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import heal_decisions, heal_rules
from jobfleet.store.violations import unique_violated

# fingerprints a query names at once (SQLite's bound parameters are limited)
IN_CHUNK = 500

RULE_FIELDS = (
    "name",
    "enabled",
    "dry_run",
    "match",
    "job_plan_id",
    "variables",
    "host_variable",
    "host_label",
    "host_kind",
    "max_hosts",
    "rate_limit",
    "host_rate_limit",
    "rate_window",
    "cooldown",
    "host_cooldown",
)


def rule_view(row: Row[Any]) -> dict[str, Any]:
    view = {"id": row.id, "bk_biz_id": row.bk_biz_id}
    view.update({name: getattr(row, name) for name in RULE_FIELDS})
    view["enabled"] = bool(row.enabled)
    view["dry_run"] = bool(row.dry_run)
    view["has_secret"] = bool(row.secret)
    view["operator"] = row.operator
    return {**view, **change_stamps(row)}


def decision_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "rule_id": row.rule_id,
        "bk_biz_id": row.bk_biz_id,
        "fingerprint": row.fingerprint,
        "alertname": row.alertname,
        "alert_status": row.alert_status,
        "decision": row.decision,
        "reason": row.reason,
        "hosts": row.hosts,
        "variables": row.variables,
        "job_instance_id": row.job_instance_id,
        "create_time": row.create_time,
    }


def _name_taken(name: Any) -> JobError:
    return JobError(ErrorCode.CONFLICT, f"A rule named {name!r} exists")


class HealStore:
    def __init__(self, db: Database, cipher: Cipher) -> None:
        self.db = db
        self.cipher = cipher

    # rules -----------------------------------------------------------------------------

    async def create_rule(
        self, bk_biz_id: int, *, secret: str, user: str, app_code: str, **fields: Any
    ) -> Row[Any]:
        try:
            async with self.db.begin() as conn:
                res = await conn.execute(
                    insert(heal_rules).values(
                        bk_biz_id=bk_biz_id,
                        secret=self.cipher.encrypt(secret),
                        operator=user,
                        app_code=app_code,
                        **fields,
                        **new_stamps(user, now_ms()),
                    )
                )
                rule_id = int(res.inserted_primary_key[0])  # type: ignore[index]
        except IntegrityError as exc:
            # the unique key on (business, name) decides, also between calls at once;
            # any other constraint refused is a fault here, told as one
            if not unique_violated(exc, heal_rules, "bk_biz_id", "name"):
                raise
            raise _name_taken(fields["name"]) from None
        return await self.rule(bk_biz_id, rule_id)

    async def rule(self, bk_biz_id: int | None, rule_id: int) -> Row[Any]:
        """A rule (of ``bk_biz_id`` when given)."""
        query = select(heal_rules).where(heal_rules.c.id == rule_id)
        if bk_biz_id is not None:
            query = query.where(heal_rules.c.bk_biz_id == bk_biz_id)
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise JobError(ErrorCode.NOT_FOUND, f"Self-healing rule {rule_id} does not exist")
        return row

    def secret(self, rule: Row[Any]) -> str:
        return self.cipher.decrypt(rule.secret)

    async def rules(self, bk_biz_id: int) -> list[Row[Any]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(heal_rules)
                .where(heal_rules.c.bk_biz_id == bk_biz_id)
                .order_by(heal_rules.c.id)
            )
            return list(rows.all())

    async def update_rule(
        self, bk_biz_id: int, rule_id: int, *, user: str, **changes: Any
    ) -> Row[Any]:
        await self.rule(bk_biz_id, rule_id)
        if "secret" in changes:
            changes["secret"] = self.cipher.encrypt(changes["secret"])
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    update(heal_rules)
                    .where(heal_rules.c.id == rule_id)
                    .values(**changes, last_modify_user=user, last_modify_time=now_ms())
                )
        except IntegrityError as exc:
            if not unique_violated(exc, heal_rules, "bk_biz_id", "name"):
                raise
            raise _name_taken(changes.get("name")) from None
        return await self.rule(bk_biz_id, rule_id)

    async def delete_rule(self, bk_biz_id: int, rule_id: int) -> Row[Any]:
        row = await self.rule(bk_biz_id, rule_id)
        async with self.db.begin() as conn:
            await conn.execute(delete(heal_rules).where(heal_rules.c.id == rule_id))
        return row

    # decisions -------------------------------------------------------------------------

    @asynccontextmanager
    async def deciding(self, rule_id: int) -> AsyncIterator[Row[Any]]:
        """The rule as it is now, held so that no other node decides on its alerts until
        the block ends: on PostgreSQL the rule's row is locked (``FOR NO KEY UPDATE``) for the
        block, so every node's decisions on one rule are taken one at a time, each seeing
        the ones before. SQLite serves one node, whose own lock is enough.

        Decisions written in the block (``record``) commit before the lock is let go."""
        if self.db.is_sqlite:
            yield await self.rule(None, rule_id)
            return
        async with self.db.begin() as conn:
            row = (
                await conn.execute(
                    select(heal_rules)
                    .where(heal_rules.c.id == rule_id)
                    .with_for_update(key_share=True)
                )
            ).first()
            if row is None:
                raise JobError(ErrorCode.NOT_FOUND, f"Self-healing rule {rule_id} does not exist")
            yield row

    async def record(self, rule: Row[Any], **fields: Any) -> Row[Any]:
        async with self.db.begin() as conn:
            res = await conn.execute(
                insert(heal_decisions).values(
                    rule_id=rule.id, bk_biz_id=rule.bk_biz_id, create_time=now_ms(), **fields
                )
            )
            decision_id = int(res.inserted_primary_key[0])  # type: ignore[index]
            row = (
                await conn.execute(select(heal_decisions).where(heal_decisions.c.id == decision_id))
            ).one()
        return row

    async def record_many(self, rule: Row[Any], items: list[dict[str, Any]]) -> list[Row[Any]]:
        """Decisions in one transaction, in order; each item's ``create_time`` is when it
        was taken."""
        if not items:
            return []
        async with self.db.begin() as conn:
            # one statement for the batch; the rows come back in the items' order
            rows = await conn.execute(
                insert(heal_decisions).returning(
                    *heal_decisions.c, sort_by_parameter_order=True
                ),
                [{"rule_id": rule.id, "bk_biz_id": rule.bk_biz_id, **f} for f in items],
            )
            return list(rows.all())

    async def last_started_of(
        self, rule_id: int, fingerprints: Collection[str]
    ) -> dict[str, Row[Any]]:
        """The last started decision of each of these fingerprints that has one."""
        if not fingerprints:
            return {}
        out: dict[str, Row[Any]] = {}
        unique = sorted(set(fingerprints))
        async with self.db.connect() as conn:
            for start in range(0, len(unique), IN_CHUNK):
                latest = (
                    select(func.max(heal_decisions.c.id))
                    .where(
                        heal_decisions.c.rule_id == rule_id,
                        heal_decisions.c.decision == "started",
                        heal_decisions.c.fingerprint.in_(unique[start : start + IN_CHUNK]),
                    )
                    .group_by(heal_decisions.c.fingerprint)
                )
                rows = await conn.execute(
                    select(heal_decisions).where(heal_decisions.c.id.in_(latest))
                )
                out.update({r.fingerprint: r for r in rows.all()})
        return out

    async def started_since(self, rule_id: int, since: int) -> list[Row[Any]]:
        """The rule's jobs started since ``since`` (ms), newest first."""
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(heal_decisions)
                .where(
                    heal_decisions.c.rule_id == rule_id,
                    heal_decisions.c.decision == "started",
                    heal_decisions.c.create_time >= since,
                )
                .order_by(heal_decisions.c.id.desc())
            )
            return list(rows.all())

    async def decisions(
        self,
        bk_biz_id: int,
        *,
        rule_id: int | None,
        decision: str | None,
        offset: int,
        limit: int,
    ) -> tuple[int, list[Row[Any]]]:
        where = [heal_decisions.c.bk_biz_id == bk_biz_id]
        if rule_id is not None:
            where.append(heal_decisions.c.rule_id == rule_id)
        if decision:
            where.append(heal_decisions.c.decision == decision)
        async with self.db.connect() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(heal_decisions).where(*where))
            ).scalar_one()
            rows = await conn.execute(
                select(heal_decisions)
                .where(*where)
                .order_by(heal_decisions.c.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return int(total), list(rows.all())
