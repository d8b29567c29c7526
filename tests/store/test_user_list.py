"""The user list: everyone who may act, with their scopes."""

from __future__ import annotations

from jobfleet.store.database import Database
from jobfleet.store.identity import IdentityStore


async def test_a_name_that_only_holds_grants_is_listed(db: Database) -> None:
    """Apps act for any user name and a grant needs no user row (`admin user grant bob`
    with no `user create`): such a name acts in its scopes, so the list shows it, and a
    misspelt name granted by mistake can be seen and revoked."""
    identity = IdentityStore(db)
    await identity.ensure_user("ann")
    await identity.grant("ann", "biz", "2")
    await identity.grant("bob", "biz", "2")
    await identity.grant("bob", "biz", "3")
    listed = {u["username"]: u for u in await identity.list_users()}
    bob = listed["bob"]
    assert (bob["username"], bob["is_admin"]) == ("bob", False)
    assert sorted(s["scope_id"] for s in bob["scopes"]) == ["2", "3"]
    assert listed["ann"]["scopes"] == [{"scope_type": "biz", "scope_id": "2"}]
    assert list(listed) == sorted(listed)
