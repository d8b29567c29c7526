"""ScriptStore.version_names: the version strings a script list shows."""

from __future__ import annotations

from tests.store.test_script_store import make, store

from jobfleet.store.scripts import ScriptStore

__all__ = ["store"]


async def test_version_names(store: ScriptStore) -> None:
    first = await make(store, 2, "a")
    sid = str(first["script_id"])
    second = await store.create_version(2, sid, content="echo 2", version="1.1.0",
                                        version_desc="", user="u")
    ids = [int(str(first["id"])), int(second["id"])]
    assert await store.version_names([*ids, 999999]) == {ids[0]: "1", ids[1]: "1.1.0"}
    assert await store.version_names([]) == {}
