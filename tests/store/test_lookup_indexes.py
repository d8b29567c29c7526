"""Lookups that would otherwise read a whole table go through an index: the crons that
launch a plan, and a self-healing rule's last started decision for each fingerprint.
Each is checked on the query the store really runs, as the database plans it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import event, insert, inspect
from tests.store.test_templates import make

from jobfleet.store.accounts import AccountStore
from jobfleet.store.crons import refuse_launched_plans, seal_plan_passwords
from jobfleet.store.database import Database
from jobfleet.store.heal import HealStore
from jobfleet.store.plans import PlanStore
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import crons, heal_decisions
from jobfleet.store.templates import TemplateStore

CRONS = "ix_crons_plan_id"
DECISIONS = "ix_heal_decisions_rule_id_decision_fingerprint_id"


async def _plans(
    db: Database, run: Callable[[], Awaitable[Any]], table: str
) -> list[str]:
    """The plans of the statements ``run`` sends that read ``table``."""
    seen: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and f"FROM {table}" in statement:
            seen.append((statement, parameters))

    engine = db.engine.sync_engine
    event_name = "before_cursor_execute"
    event.listen(engine, event_name, grab)
    try:
        await run()
    finally:
        event.remove(engine, event_name, grab)
    assert seen, f"no query read {table}"
    explain = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
    out = []
    async with db.connect() as conn:
        for statement, parameters in seen:
            rows = await conn.exec_driver_sql(explain + statement, parameters)
            out.append("\n".join(str(r[-1]) for r in rows))
    return out


async def _analyze(db: Database, table: str) -> None:
    # PostgreSQL plans from statistics; a table just filled has none until analyzed
    if not db.is_sqlite:
        async with db.begin() as conn:
            await conn.exec_driver_sql(f"ANALYZE {table}")


async def test_the_migration_creates_the_indexes(db: Database) -> None:
    async with db.connect() as conn:
        found = await conn.run_sync(lambda c: {
            table: {i["name"]: i["column_names"] for i in inspect(c).get_indexes(table)}
            for table in ("crons", "heal_decisions")})
    assert found["crons"][CRONS] == ["plan_id"]
    assert found["heal_decisions"][DECISIONS] == ["rule_id", "decision", "fingerprint", "id"]


async def test_the_crons_of_a_plan_are_found_by_index(db: Database, cipher: Cipher) -> None:
    await AccountStore(db).create(2, "root")
    templates, plans = TemplateStore(db, cipher), PlanStore(db, cipher)
    plan_id = await plans.create_plan([2], await make(templates), "nightly", None, None, "a")
    others = [{"bk_biz_id": 2, "scope_type": "biz", "scope_id": "2", "name": f"c{n}",
               "plan_id": 100_000 + n, "status": 2, "create_time": 0, "last_modify_time": 0}
              for n in range(3000)]
    async with db.begin() as conn:
        await conn.execute(insert(crons), others)
        mine = {**others[0], "name": "nightly", "plan_id": plan_id}
        await conn.execute(insert(crons).values(mine))
    await _analyze(db, "crons")

    async def refuse() -> None:
        async with db.connect() as conn:
            with pytest.raises(Exception, match="launched by cron"):
                await refuse_launched_plans(conn, [plan_id])

    async def seal() -> None:
        async with db.begin() as conn:
            await seal_plan_passwords(conn, plan_id, cipher)

    for run in (refuse, seal):
        [plan] = await _plans(db, run, "crons")
        assert CRONS in plan, plan


async def test_a_rules_last_started_decisions_are_found_by_index(
    db: Database, cipher: Cipher
) -> None:
    heal = HealStore(db, cipher)
    rules = [await heal.create_rule(
        2, secret="s", user="alice", app_code="app", name=f"r{n}", match={}, job_plan_id=1,
        variables={}) for n in range(2)]
    rows = [{"rule_id": rules[n % 2].id, "bk_biz_id": 2, "fingerprint": f"fp{n % 1500}",
             "decision": ("started", "skipped", "converged")[n % 3], "hosts": [],
             "variables": {}, "create_time": n} for n in range(6000)]
    async with db.begin() as conn:
        await conn.execute(insert(heal_decisions), rows)
    await _analyze(db, "heal_decisions")
    # the second rule started jobs for the fingerprints 3, 9, 15... (n = 3 mod 6)
    fingerprints = ["fp3", "fp8", "fp1497"]
    latest = await heal.last_started_of(rules[1].id, fingerprints)
    assert {f: (r.decision, r.create_time) for f, r in latest.items()} == {
        "fp3": ("started", 4503), "fp1497": ("started", 5997)}
    [plan] = await _plans(db, lambda: heal.last_started_of(rules[1].id, fingerprints),
                          "heal_decisions")
    assert DECISIONS in plan, plan
