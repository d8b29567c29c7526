"""Console passwords, sessions and personal tokens in the store."""

from __future__ import annotations

import time

import pytest

from jobfleet.domain.errors import JobError
from jobfleet.store.database import Database
from jobfleet.store.identity import IdentityStore
from jobfleet.store.people import PeopleStore, hash_password, password_matches
from jobfleet.store.tables import console_sessions, passwords, personal_tokens


def test_password_hash_is_salted_scrypt() -> None:
    one, two = hash_password("correct horse"), hash_password("correct horse")
    assert one != two and one.startswith("scrypt$")
    assert password_matches("correct horse", one)
    assert not password_matches("wrong horse", one)
    assert not password_matches("x", "not a hash")


async def test_password_session_and_token(db: Database) -> None:
    await IdentityStore(db).ensure_user("ann")
    people = PeopleStore(db)
    with pytest.raises(JobError):
        await people.set_password("ann", "short")
    with pytest.raises(JobError):
        await people.set_password("nobody", "long enough")
    await people.set_password("ann", "long enough")
    assert await people.check_password("ann", "long enough")
    assert not await people.check_password("ann", "long enougH")
    assert not await people.check_password("nobody", "long enough")

    value, session = await people.open_session("ann", 60)
    found = await people.session(value)
    assert found is not None and found.username == "ann" and found.csrf == session.csrf
    assert await people.session("forged") is None
    # a new password ends the sessions
    await people.set_password("ann", "another one")
    assert await people.session(value) is None
    value, _ = await people.open_session("ann", 60)
    await people.close_session(value)
    assert await people.session(value) is None
    expired, _ = await people.open_session("ann", -1)
    assert await people.session(expired) is None

    token = await people.create_token("ann", 60, "ci")
    assert await people.token_user(token["token"]) == "ann"
    assert [t["id"] for t in await people.list_tokens("ann")] == [token["id"]]
    with pytest.raises(JobError):
        await people.revoke_token("bob", token["id"])
    await people.revoke_token("ann", token["id"])
    assert await people.token_user(token["token"]) is None
    short = await people.create_token("ann", 0.001)
    time.sleep(0.01)
    assert await people.token_user(short["token"]) is None

    # nothing of a secret is stored in clear: a live session's CSRF token neither
    live, live_session = await people.open_session("ann", 60)
    assert (await people.session(live)) == live_session
    async with db.connect() as conn:
        stored = [
            str(row)
            for table in (passwords, console_sessions, personal_tokens)
            for row in await conn.execute(table.select())
        ]
    assert not any("another one" in r or token["token"] in r for r in stored)
    assert not any(live in r or live_session.csrf in r for r in stored), stored
