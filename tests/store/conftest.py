"""A migrated database and a cipher for the store's unit tests."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from jobfleet.store.secrets import Cipher


@pytest.fixture
def cipher() -> Cipher:
    return Cipher(Fernet.generate_key())
