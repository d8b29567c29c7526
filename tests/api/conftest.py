"""Fixtures of the api/ unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.api.support import APP, USER, Parts

from jobfleet.api.auth import Authenticator
from jobfleet.store.audit import AuditLog
from jobfleet.store.database import Database
from jobfleet.store.identity import IdentityStore


@pytest.fixture
async def parts(database_url: str) -> AsyncIterator[Parts]:
    db = Database(database_url)
    await db.migrate()
    identity = IdentityStore(db)
    secret = await identity.create_app(APP, "tests", users=[USER], biz=[2])
    await identity.ensure_user(USER)
    audit = AuditLog(db)
    try:
        yield Parts(db, identity, audit, Authenticator(identity), secret)
    finally:
        await audit.flush()
        await db.close()
