"""Tags on scripts in the store: set on create, changed with the basic fields, and a
filter of the list, on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.store.test_script_store import store

from jobfleet.store.scripts import ScriptStore

__all__ = ["store"]


async def test_tags_set_changed_and_filtered(store: ScriptStore) -> None:
    async def make(biz: int | None, name: str, tags: list[str]) -> str:
        view = await store.create_script(biz, name=name, language=1, description="",
                                         content="echo", version="1", version_desc="",
                                         user="u", tags=tags)
        return str(view["script_id"])

    backup = await make(2, "backup db", ["ops", "backup"])
    await make(2, "rotate", ["ops"])
    await make(2, "plain", [])
    await make(3, "other business", ["backup"])
    await make(None, "public one", ["backup"])
    assert (await store.get_script(2, backup))["tags"] == ["ops", "backup"]
    names = {s["name"] for s in (await store.list_scripts(2, tag="ops"))[1]}
    assert names == {"backup db", "rotate"}
    assert [s["name"] for s in (await store.list_scripts(2, tag="backup"))[1]] == ["backup db"]
    assert [s["name"] for s in (await store.list_scripts(None, tag="backup"))[1]] == [
        "public one"]
    # a tag is matched whole, and LIKE's wildcards are plain characters
    assert (await store.list_scripts(2, tag="op"))[0] == 0
    assert (await store.list_scripts(2, tag="%"))[0] == 0
    assert (await store.list_scripts(2, tag="_ps"))[0] == 0
    changed = await store.update_script_basic(2, backup, user="v", tags=["nightly"])
    assert changed["tags"] == ["nightly"] and changed["name"] == "backup db"
    untouched = await store.update_script_basic(2, backup, user="v", description="d")
    assert untouched["tags"] == ["nightly"]
    cleared = await store.update_script_basic(2, backup, user="v", tags=[])
    assert cleared["tags"] == []
    assert {s["name"] for s in (await store.list_scripts(2))[1] if not s["tags"]} == {
        "plain", "backup db"}
