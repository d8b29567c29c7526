"""AccountStore's lookups on a real database."""

from __future__ import annotations

from jobfleet.store.accounts import AccountStore
from jobfleet.store.database import Database


async def test_system_accounts_are_found_by_id_or_alias_within_the_businesses(
    db: Database,
) -> None:
    store = AccountStore(db)
    root = await store.create(2, "root")
    ops = await store.create(3, "ops", alias="operators")
    found = await store.find_system([2], account_id=root, alias=None)
    assert found is not None and (found.id, found.alias) == (root, "root")
    assert await store.find_system([2], account_id=ops, alias=None) is None
    by_alias = await store.find_system({2, 3}, account_id=None, alias="operators")
    assert by_alias is not None and by_alias.id == ops
    # an id wins over an alias that would match
    assert await store.find_system([2, 3], account_id=10**6, alias="root") is None
    async with db.begin() as conn:
        inside = await store.find_system([3], account_id=None, alias="operators", conn=conn)
    assert inside is not None and inside.account == "ops"
    assert set(await store.by_ids([root, ops, 10**6])) == {root, ops}
    assert await store.by_ids([]) == {}
