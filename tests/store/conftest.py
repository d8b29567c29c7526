"""A migrated database and a cipher for the store's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cryptography.fernet import Fernet

from jobfleet.store.database import Database
from jobfleet.store.secrets import Cipher


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.migrate()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def cipher() -> Cipher:
    return Cipher(Fernet.generate_key())
