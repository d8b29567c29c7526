"""The check values of the keys a database's servers share: the first stay, others are
refused without a write; without values, a sealed secret decides."""

from __future__ import annotations

from cryptography.fernet import Fernet

from jobfleet.store.database import Database
from jobfleet.store.key_checks import KeyChecks, KeysRefused
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import accounts


async def test_the_first_values_stay_and_others_are_refused_without_a_write(db: Database) -> None:
    checks = KeyChecks(db)
    assert await checks.settle({"secret.key": "a", "tls/ca.pem": "c"}, lambda _: True) is None
    assert await checks.settle({"secret.key": "a", "tls/ca.pem": "c"}, lambda _: True) is None
    refused = await checks.settle({"secret.key": "b", "tls/ca.pem": "d"}, lambda _: True)
    assert refused == KeysRefused(["secret.key", "tls/ca.pem"])
    # a server without an agent CA (plain agents) compares its key only
    assert await checks.settle({"secret.key": "a"}, lambda _: True) is None
    assert await checks.stored() == {"secret.key": "a", "tls/ca.pem": "c"}


async def test_stored_secrets_decide_when_no_values_are_kept(db: Database) -> None:
    sealed = Cipher(Fernet.generate_key()).encrypt("pw")
    async with db.begin() as conn:
        await conn.execute(accounts.insert().values(
            bk_biz_id=2, account="root", alias="root", password=sealed,
            create_time=1, last_modify_time=1))
    checks = KeyChecks(db)
    refused = await checks.settle({"secret.key": "b"}, lambda value: value != sealed)
    assert refused == KeysRefused(["secret.key"], sealed=True)
    assert await checks.stored() == {}
    assert await checks.settle({"secret.key": "a"}, lambda value: value == sealed) is None
    assert await checks.stored() == {"secret.key": "a"}
