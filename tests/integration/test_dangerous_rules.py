"""Dangerous-statement rules through the bk-job v3 routes, enforced before any dispatch."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from tests.integration.harness import Running, b64, eventually
from tests.integration.test_plans import hosts, make_plan, script

from jobfleet.store.tables import cron_firings, job_instances

A = "127.0.0.91"
V3 = "/api/bk-job/prod/api/v3"


async def create_rule(running: Running, expression: str, languages: list[int], action: int,
                      description: str = "", *, enable: bool = True) -> dict[str, Any]:
    made = await running.wire.v3("create_dangerous_rule", {
        "expression": expression, "script_language_list": languages, "action": action,
        "description": description, **({} if enable else {"status": 0})})
    assert made["result"], made
    assert made["data"]["status"] == int(enable)
    return dict(made["data"])


async def job_count(running: Running) -> int:
    async with running.server.db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(job_instances)))
                   .scalar_one())


def run_body(text: str, language: int = 1) -> dict[str, Any]:
    return {"bk_scope_type": "biz", "bk_scope_id": "2", "script_content": b64(text),
            "script_language": language, "account_alias": "root",
            "target_server": {"ip_list": [{"ip": A, "bk_cloud_id": 0}]}}


async def test_rule_lifecycle(running: Running) -> None:
    wire = running.wire
    made = await wire.v3("create_dangerous_rule", {
        "expression": r"rm\s+-rf", "script_language_list": [4, 1, 1], "action": 2,
        "description": "recursive delete", "status": 0})
    assert made["result"], made
    rule = made["data"]
    # made switched off on request
    assert {k: rule[k] for k in ("expression", "script_language_list", "action", "status",
                                 "description", "creator", "last_modify_user")} == {
        "expression": r"rm\s+-rf", "script_language_list": [1, 4], "action": 2, "status": 0,
        "description": "recursive delete", "creator": "admin", "last_modify_user": "admin"}
    assert rule["create_time"] > 0 and rule["last_modify_time"] >= rule["create_time"]
    other = (await wire.v3("create_dangerous_rule", {
        "expression": "reboot", "script_language_list": [5], "action": 1}))["data"]
    assert other["description"] == "" and other["status"] == 1  # on unless asked otherwise

    # a plain list, not a page; on the ESB path too
    listed = await wire.v3("get_dangerous_rule_list", {})
    assert [r["id"] for r in listed["data"]] == [rule["id"], other["id"]]
    esb = await wire.post("/api/c/compapi/v2/jobv3/get_dangerous_rule_list/", {"action": 1})
    assert [r["id"] for r in esb["data"]] == [other["id"]]
    for query, ids in (({"expression": "RM"}, [rule["id"]]),
                       ({"description": "delete"}, [rule["id"]]),
                       ({"script_language_list": [5, 6]}, [other["id"]]),
                       ({"script_language_list": [2]}, []),
                       ({"action": 2, "script_language_list": [4]}, [rule["id"]])):
        answer = await wire.v3("get_dangerous_rule_list", query)
        assert [r["id"] for r in answer["data"]] == ids, (query, answer)
    by_get = await wire.v3("get_dangerous_rule_list", {"script_language_list": "4,1"},
                           method="GET")
    assert [r["id"] for r in by_get["data"]] == [rule["id"]]

    updated = await wire.v3("update_dangerous_rule", {
        "id": rule["id"], "expression": r"rm\s+-r", "script_language_list": [1],
        "action": 1, "description": "recursive delete (any)"})
    assert updated["result"], updated
    assert (updated["data"]["expression"], updated["data"]["script_language_list"],
            updated["data"]["action"], updated["data"]["status"]) == (r"rm\s+-r", [1], 1, 0)
    # fields left out keep their values
    partial = await wire.v3("update_dangerous_rule", {"id": rule["id"], "action": 2})
    assert (partial["data"]["action"], partial["data"]["expression"]) == (2, r"rm\s+-r")

    on = await wire.v3("enable_dangerous_rule", {"id": rule["id"]})
    assert on["data"] == {"id": rule["id"], "status": 1}
    off = await wire.v3("disable_dangerous_rule", {"id": rule["id"]})
    assert off["data"] == {"id": rule["id"], "status": 0}
    gone = await wire.v3("delete_dangerous_rule", {"id": rule["id"]})
    assert gone["result"] and "data" not in gone
    assert [r["id"] for r in (await wire.v3("get_dangerous_rule_list", {}))["data"]] == [
        other["id"]]

    audit = [e for e in await running.server.services.audit.recent()
             if e["resource_type"] == "dangerous_rule"]
    assert [e["action"] for e in reversed(audit)] == [
        "create_dangerous_rule", "create_dangerous_rule", "update_dangerous_rule",
        "update_dangerous_rule", "enable_dangerous_rule", "disable_dangerous_rule",
        "delete_dangerous_rule"]
    assert audit[0]["resource_id"] == str(rule["id"]) and audit[0]["username"] == "admin"


async def test_check_script(running: Running) -> None:
    wire = running.wire
    await create_rule(running, r"rm\s+-rf\s+/", [1], 2, "wipes the disk")
    await create_rule(running, r"\breboot\b", [1, 4], 1, "reboots")
    await create_rule(running, "mkfs", [1], 2, "formats", enable=False)
    text = "#!/bin/bash\n# rm -rf / in a comment\necho hi\n\nrm -rf /opt/app; reboot\nmkfs\n"
    answer = await wire.v3("check_script", {"script_language": 1, "content": b64(text)})
    assert answer["result"], answer
    assert answer["data"] == [
        {"line": 5, "line_content": "rm -rf /opt/app; reboot", "match_content": "rm -rf /",
         "level": 3, "description": "wipes the disk", "action": 2, "timed_out": False},
        {"line": 5, "line_content": "rm -rf /opt/app; reboot", "match_content": "reboot",
         "level": 3, "description": "reboots", "action": 1, "timed_out": False},
    ]
    python = await wire.v3("check_script", {"script_language": 4,
                                            "content": b64("import os\nos.system('rm -rf /')\n")})
    assert python["data"] == []
    clean = await wire.v3("check_script", {"script_language": 1, "content": b64("echo ok")},
                          prefix="/api/c/compapi/v2/jobv3")
    assert clean["result"] and clean["data"] == []
    # any authenticated user may check a script
    await running.server.identity.ensure_user("bob")
    as_bob = await wire.post(f"{V3}/check_script", {"script_language": 4,
                                                     "content": b64("reboot()")},
                             headers=wire.headers(bk_username="bob"))
    assert [i["level"] for i in as_bob["data"]] == [3]


async def test_enforced_on_fast_execute_script(running: Running, tmp_path: Path) -> None:
    await running.start_agents([A])
    wire = running.wire
    marker = tmp_path / "marker"
    blocked = f"touch {marker}\necho wipe-everything\n"
    rule = await create_rule(running, r"wipe-\w+", [1], 2, "wipes everything")
    before = await job_count(running)
    answer = await wire.v3("fast_execute_script", run_body(blocked))
    assert (answer["result"], answer["code"]) == (False, 1244019), answer
    assert "'wipes everything'" in answer["message"] and "line 2" in answer["message"]
    # on the ESB path too, and with the script stored rather than sent
    esb = await wire.post("/api/c/compapi/v2/jobv3/fast_execute_script/", run_body(blocked))
    assert esb["code"] == 1244019
    stored = await wire.v3("create_script", {
        "bk_biz_id": 2, "name": "wiper", "script_language": 1, "content": b64(blocked),
        "version": "1"})
    assert stored["result"], stored
    by_version = await wire.v3("fast_execute_script", {
        **run_body("unused"), "script_version_id": stored["data"]["id"]})
    assert by_version["code"] == 1244019
    await asyncio.sleep(0.5)
    assert not marker.exists()
    assert await job_count(running) == before

    # a disabled rule does nothing: the same script now runs (and proves the agent is live)
    off = await wire.v3("disable_dangerous_rule", {"id": rule["id"]})
    assert off["result"]
    job = await wire.run_script(blocked, [A])
    assert (await wire.wait(job["job_instance_id"]))["job_instance"]["status"] == 3
    assert marker.exists()
    marker.unlink()

    # a rule for python leaves shell alone; a scan rule only warns
    await create_rule(running, "touch", [4], 2, "python only")
    await create_rule(running, "touch", [1], 1, "just a warning")
    job = await wire.run_script(blocked, [A])
    assert (await wire.wait(job["job_instance_id"]))["job_instance"]["status"] == 3
    assert marker.exists()
    # the python rule blocks python
    python = await wire.v3("fast_execute_script", run_body("print('touch')\n", 4))
    assert python["code"] == 1244019 and "'python only'" in python["message"]


async def test_enforced_on_execute_job_plan(running: Running, tmp_path: Path) -> None:
    await running.start_agents([A])
    marker = tmp_path / "plan-marker"
    plan_id, _ = await make_plan(running, [
        script("harmless", f"touch {marker}\n", hosts(A)),
        script("deploy", "echo format-all-disks\n", hosts(A)),
    ], [])
    await create_rule(running, r"format-\w+", [1], 2, "formats disks")
    before = await job_count(running)
    answer = await running.wire.v3("execute_job_plan", {"bk_biz_id": 2, "job_plan_id": plan_id})
    assert answer["code"] == 1244019, answer
    assert "step 'deploy'" in answer["message"] and "'formats disks'" in answer["message"]

    # a cron firing launches through the same path: the slot fails, no job is made
    cron = await running.wire.v3("save_cron", {
        "bk_biz_id": 2, "name": "nightly", "job_plan_id": plan_id,
        "execute_time": int(time.time()) + 2})
    assert cron["result"], cron
    started = await running.wire.v3("update_cron_status",
                                    {"bk_biz_id": 2, "id": cron["data"]["id"], "status": 1})
    assert started["result"], started

    async def failed() -> list[Any] | None:
        async with running.server.db.connect() as conn:
            rows = list(await conn.execute(select(cron_firings).where(
                cron_firings.c.cron_id == cron["data"]["id"])))
        return rows or None
    firing = (await eventually(failed, timeout=15))[0]
    assert firing.outcome == "failed" and "'formats disks'" in firing.message, firing
    await asyncio.sleep(0.5)
    assert not marker.exists()
    assert await job_count(running) == before


async def test_bad_input(running: Running) -> None:
    wire = running.wire
    base = {"expression": "rm", "script_language_list": [1], "action": 2}

    async def code(api: str, body: dict[str, Any], **kw: Any) -> int:
        answer = await wire.v3(api, body, **kw)
        assert answer["result"] is False, answer
        return int(answer["code"])

    assert await code("create_dangerous_rule", {**base, "expression": "rm ("}) == 1241010
    assert await code("create_dangerous_rule", {**base, "expression": ""}) == 1241004
    assert await code("create_dangerous_rule", {**base, "expression": 5}) == 1241010
    assert await code("create_dangerous_rule", {**base, "script_language_list": [7]}) == 1241010
    assert await code("create_dangerous_rule", {**base, "script_language_list": ["x"]}) == 1241010
    assert await code("create_dangerous_rule", {**base, "script_language_list": []}) == 1241004
    assert await code("create_dangerous_rule",
                      {**base, "script_language_list": {"a": 1}}) == 1241010
    assert await code("create_dangerous_rule", {**base, "action": 3}) == 1241010
    assert await code("create_dangerous_rule", {**base, "action": "scan"}) == 1241010
    assert await code("create_dangerous_rule", {k: v for k, v in base.items()
                                                if k != "action"}) == 1241004
    assert await code("create_dangerous_rule", {**base, "description": "d" * 1025}) == 1241010
    for api in ("update_dangerous_rule", "delete_dangerous_rule", "enable_dangerous_rule",
                "disable_dangerous_rule"):
        assert await code(api, {"id": 999}) == 1249404
        assert await code(api, {}) == 1241004
        assert await code(api, {"id": "x"}) == 1241010
    rule = await create_rule(running, "rm", [1], 2)
    assert await code("update_dangerous_rule",
                      {"id": rule["id"], "expression": "[unclosed"}) == 1241010
    assert await code("get_dangerous_rule_list", {"script_language_list": [9]}) == 1241010
    assert await code("check_script", {"script_language": 9, "content": b64("x")}) == 1241010
    assert await code("check_script", {"script_language": 1}) == 1241004
    assert await code("check_script", {"content": b64("x")}) == 1241004
    assert await code("check_script", {"script_language": 1, "content": "not base64!"}) \
        == 1241005

    # only administrators change rules; anyone authenticated reads them
    await running.server.identity.ensure_user("mallory")
    mallory = wire.headers(bk_username="mallory")
    for api, body in (("create_dangerous_rule", base), ("update_dangerous_rule",
                                                        {"id": rule["id"], "action": 1}),
                      ("delete_dangerous_rule", {"id": rule["id"]}),
                      ("enable_dangerous_rule", {"id": rule["id"]}),
                      ("disable_dangerous_rule", {"id": rule["id"]})):
        denied = await wire.post(f"{V3}/{api}", body, headers=mallory)
        assert denied["code"] == 9900403, (api, denied)
        assert denied["permission"]["actions"][0]["id"] == "high_risk_detect_rule"
    listed = await wire.post(f"{V3}/get_dangerous_rule_list", {}, headers=mallory)
    assert [(r["id"], r["status"], r["action"]) for r in listed["data"]] == [
        (rule["id"], 1, 2)]
    unknown = await wire.post(f"{V3}/get_dangerous_rule_list", {},
                              headers=wire.headers(bk_app_secret="wrong"))
    assert unknown["result"] is False


async def test_enabled_rules_are_cached_and_changes_apply_at_once(running: Running) -> None:
    rules = running.server.rules
    reads = 0

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal reads
        if statement.lstrip().upper().startswith("SELECT") and "dangerous_rules" in statement:
            reads += 1

    engine = running.server.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        rule = await create_rule(running, "halt", [1], 2, "halts")
        reads = 0
        results = await asyncio.gather(*(rules.check("halt\n", 1) for _ in range(50)))
        assert all(len(r) == 1 for r in results)
        for _ in range(50):
            await rules.check("echo\n", 1)
        assert reads == 1
        # a change through the API is seen by the very next check on this node
        assert (await running.wire.v3("disable_dangerous_rule", {"id": rule["id"]}))["result"]
        assert await rules.check("halt\n", 1) == []
        await running.server.inventory.add(2, A)
        allowed = await running.wire.v3("fast_execute_script", run_body("halt\n"))
        assert allowed["result"], allowed
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_a_posix_bracket_class_is_refused_and_a_stored_one_keeps_working(
        running: Running) -> None:
    """``[[:space:]]`` is a class to the matcher (``regex``) but six characters to ``re``:
    a new or changed rule with one is refused, naming it; one already stored still
    matches as a class, and its other fields can still be changed."""
    wire = running.wire
    base = {"script_language_list": [1], "action": 2}
    for expression, construct in ((r"rm[[:space:]]+-rf", "[:space:]"),
                                  (r"x[a[:digit:]]", "[:digit:]"),
                                  (r"[^[:^alpha:]_]", "[:^alpha:]")):
        answer = await wire.v3("create_dangerous_rule", {**base, "expression": expression})
        assert answer["code"] == 1241010, answer
        assert construct in answer["message"] and "POSIX" in answer["message"], answer
    rule = await create_rule(running, "mkfs", [1], 2)
    answer = await wire.v3("update_dangerous_rule",
                           {"id": rule["id"], "expression": r"mkfs[[:blank:]]"})
    assert answer["code"] == 1241010 and "[:blank:]" in answer["message"], answer
    # what only looks alike is taken: an escaped bracket, a class of ':' and letters
    for expression in (r"\[[:space:]\]", r"[:space:]x", r"[]:alpha:]y"):
        made = await wire.v3("create_dangerous_rule",
                             {**base, "expression": expression, "status": 0})
        assert made["result"], (expression, made)
    # a rule stored before this check: matched as regex reads it
    stored = await running.server.rules.create(
        expression=r"wipe[[:space:]]+now", languages=[1], action=2, description="stored",
        user="admin", status=1)
    text = "echo hi\nwipe \t now\n"
    answer = await wire.v3("check_script", {"script_language": 1, "content": b64(text)})
    assert [(f["line"], f["match_content"]) for f in answer["data"]] == [(2, "wipe \t now")]
    refused = await wire.v3("fast_execute_script", run_body(text))
    assert refused["code"] == 1244019, refused
    changed = await wire.v3("update_dangerous_rule",
                            {"id": stored["id"], "description": "kept", "action": 1})
    assert changed["result"], changed
    assert changed["data"]["expression"] == r"wipe[[:space:]]+now"
