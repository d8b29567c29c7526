"""Tags on scripts through the bk-job script routes: set on create_script, changed by
update_script_basic, a filter of get_script_list; bad tags answer the envelope."""

from __future__ import annotations

from typing import Any

from tests.integration.harness import Running
from tests.integration.test_console_catalog import BIZ, OLD, b64, ok


async def test_tags_through_the_script_routes(running: Running) -> None:
    wire = running.wire

    async def create(**extra: Any) -> dict[str, Any]:
        return await wire.v3("create_script", {
            **BIZ, "name": extra.pop("name", "s"), "script_language": 1,
            "content": b64(OLD), "version": "1", **extra})

    made = ok(await create(name="backup", tags=["ops", " backup ", "ops"]))
    script_id = made["script_id"]
    ok(await create(name="other"))
    listed = ok(await wire.v3("get_script_list", {**BIZ, "tag": "backup"}, method="GET"))
    assert [(s["name"], s["tags"]) for s in listed["data"]] == [("backup", ["ops", "backup"])]
    changed = ok(await wire.v3("update_script_basic", {
        **BIZ, "script_id": script_id, "tags": ["nightly"]}))
    assert changed["tags"] == ["nightly"]
    public = ok(await wire.v3("create_public_script", {
        "name": "p", "script_language": 1, "content": b64(OLD), "version": "1",
        "tags": ["shared"]}))
    listed = ok(await wire.v3("get_public_script_list", {"tag": "shared"}, method="GET"))
    assert [s["id"] for s in listed["data"]] == [public["script_id"]]
    for bad in ("ops", ["a,b"], ["x" * 33], [1], [""], [f"t{i}" for i in range(11)], {"a": 1}):
        answer = await create(name="bad", tags=bad)
        assert answer["code"] == 1241010 and "tags" in answer["message"], (bad, answer)
        answer = await wire.v3("update_script_basic", {
            **BIZ, "script_id": script_id, "tags": bad})
        assert answer["code"] == 1241010, (bad, answer)
    for bad_filter in ("a,b", "x" * 40):
        answer = await wire.v3("get_script_list", {**BIZ, "tag": bad_filter}, method="GET")
        assert answer["code"] == 1241010, answer
    entries = await running.server.audit.recent(50)
    assert any(e["action"] == "update_script_basic" and e["detail"].get("tags") == ["nightly"]
               for e in entries)
