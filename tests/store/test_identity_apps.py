"""Apps in the identity store: restrictions, and how apps made before them migrate."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from tests.conftest import upgrade_to

from jobfleet.store.database import Database, now_ms
from jobfleet.store.identity import App, IdentityStore


@pytest.fixture
async def db(empty_database_url: str) -> AsyncIterator[Database]:
    database = Database(empty_database_url)
    try:
        yield database
    finally:
        await database.close()


async def test_restrictions_are_stored_and_checked(db: Database) -> None:
    await db.migrate()
    identity = IdentityStore(db)
    secret = await identity.create_app("ci", users=["alice", "bob", "alice"], biz=[3, 2])
    app = await identity.check_app("ci", secret)
    assert app == App("ci", False, frozenset({"alice", "bob"}), frozenset({2, 3}))
    assert app.may_name("alice") and not app.may_name("carol")
    assert app.may_touch({2, 3}) and not app.may_touch({2, 4})
    assert await identity.check_app("ci", "wrong") is None
    anyone = await identity.check_app("ops", await identity.create_app("ops", is_admin=True))
    assert anyone is not None and anyone.is_admin
    assert anyone.may_name("whoever") and anyone.may_touch({99})
    listed = {a["app_code"]: a for a in await identity.list_apps()}
    assert listed["ci"]["allowed_users"] == ["alice", "bob"]
    assert listed["ops"]["allowed_biz"] == "any" and "secret_hash" not in listed["ops"]


async def test_apps_made_before_restrictions_migrate(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(upgrade_to("0005"))
        # the table as it was: written with plain SQL, not with today's table
        for code in ("jobfleet", "bk_monitor"):
            await conn.execute(
                text("INSERT INTO apps (app_code, secret_hash, description, disabled, "
                     "create_time) VALUES (:code, 'x', '', false, :now)"),
                {"code": code, "now": now_ms()})
    await db.migrate()
    listed = {a["app_code"]: a for a in await IdentityStore(db).list_apps()}
    assert (listed["jobfleet"]["is_admin"], listed["jobfleet"]["allowed_users"]) == (True, "any")
    assert (listed["bk_monitor"]["is_admin"], listed["bk_monitor"]["allowed_biz"]) == (
        False, "any")
