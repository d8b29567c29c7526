"""A user or app limited to some businesses learns nothing of the others: not their
objects' ids through ids they may guess, not their audit entries, and nothing is done
in their name once they lose a business."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from tests.integration.harness import Running, Wire, b64
from tests.integration.test_self_healing import SECRET, alertmanager, make_plan, post

from jobfleet.store.database import now_ms
from jobfleet.store.tables import apps

V3 = "/api/bk-job/prod/api/v3"
OWN = "/api/jobfleet/v1"
GSE_PROC = "/api/bk-gse/prod/api/v2/proc"
A = "127.0.0.2"
BIZ2 = {"bk_scope_type": "biz", "bk_scope_id": "2"}
BIZ3 = {"bk_scope_type": "biz", "bk_scope_id": "3"}


async def two_businesses(running: Running, user: str, *held: str) -> dict[str, str]:
    """Business 3 beside 2, and ``user`` holding the businesses ``held``: their headers."""
    identity = running.server.identity
    await identity.create_business(3, "three")
    await identity.ensure_user(user)
    for biz in held:
        await identity.grant(user, "biz", biz)
    return running.wire.headers(bk_username=user)


async def test_a_script_version_of_another_business_is_one_that_does_not_exist(
        running: Running) -> None:
    wire = running.wire
    alice = await two_businesses(running, "alice", "2")
    made = await wire.v3("create_script", {**BIZ3, "name": "theirs", "script_language": 1,
                                           "content": b64("echo theirs"), "version": "1"})
    assert made["result"], made
    theirs, script_id = made["data"]["id"], made["data"]["script_id"]
    missing = theirs + 1000
    target = {"ip_list": [{"ip": A, "bk_cloud_id": 0}]}

    def step(version_id: int) -> dict[str, Any]:
        return {"name": "tpl", "step_list": [{"name": "s", "type": 1, "script_info": {
            "script_type": 2, "script_version_id": version_id, "account": "root",
            "server": target}}]}

    for version_id in (theirs, missing):
        ran = await wire.post(f"{V3}/fast_execute_script", {
            **BIZ2, "script_version_id": version_id, "account_alias": "root",
            "target_server": target}, headers=alice)
        assert (ran["code"], ran["message"]) == (
            1243047, f"Script version {version_id} does not exist"), ran
        cited = await wire.post(f"{OWN}/templates?bk_biz_id=2", step(version_id), headers=alice)
        assert (cited["code"], cited["message"]) == (
            1243047, f"Script version {version_id} of step 's' does not exist"), cited
        assert script_id not in str(ran) + str(cited)


async def test_an_app_limited_to_some_businesses_reads_only_their_audit(
        running: Running) -> None:
    wire = running.wire
    alice = await two_businesses(running, "alice", "2", "3")
    for scope in (BIZ2, BIZ3):
        made = await wire.post(f"{V3}/create_account", {
            **scope, "account": "deploy", "alias": "deploy", "type": 1, "category": 1},
            headers=alice)
        assert made["result"], made
    secret = await running.server.identity.create_app("three-only", users=["alice"], biz=[3])
    limited = Wire(running.url, "three-only", secret, "alice")
    try:
        seen = await limited.get(f"{OWN}/audit/entries", {"action": "create_account"})
        assert seen["result"], seen
        assert [(e["scope_type"], e["scope_id"]) for e in seen["data"]["data"]] == [
            ("biz", "3")], seen
        # the same user through an app that may touch both sees both
        both = await wire.get(f"{OWN}/audit/entries", {"action": "create_account"},
                              headers=alice)
        assert {e["scope_id"] for e in both["data"]["data"]} == {"2", "3"}, both
    finally:
        await limited.close()


async def test_a_heal_rule_starts_nothing_for_a_user_who_lost_the_business(
        running: Running) -> None:
    await running.start_agents([A])
    alice = await two_businesses(running, "alice", "2")
    plan_id = await make_plan(running.wire)
    wire = running.wire
    made = await wire.post(f"{OWN}/businesses/2/heal-rules", {
        "name": "disk", "job_plan_id": plan_id, "secret": SECRET,
        "match": {"alertname": ["HighDisk"]}, "host_variable": "target",
        "host_label": "instance", "max_hosts": 1, "cooldown": 0, "host_cooldown": 0},
        headers=alice)
    assert made["result"], made
    await running.server.identity.revoke("alice", "biz", "2")
    posted = await post(running.url, made["data"]["id"], alertmanager("firing", f"{A}:9100"))
    assert posted["result"], posted
    [decision] = posted["data"]["decisions"]
    assert (decision["decision"], decision["job_instance_id"]) == ("refused", None), decision
    assert "User 'alice' no longer holds biz 2" in decision["reason"], decision
    listed = await wire.v3("get_job_instance_list", {
        "bk_biz_id": 2, "create_time_start": now_ms() - 60_000,
        "create_time_end": now_ms() + 60_000}, method="GET")
    assert listed["data"]["total"] == 0, listed


async def test_a_heal_rule_starts_nothing_through_an_app_no_longer_allowed_the_business(
        running: Running) -> None:
    await running.start_agents([A])
    await two_businesses(running, "alice", "2", "3")
    plan_id = await make_plan(running.wire)
    identity = running.server.identity
    secret = await identity.create_app("ops", users=["alice"], biz=[2])
    through = Wire(running.url, "ops", secret, "alice")
    try:
        made = await through.post(f"{OWN}/businesses/2/heal-rules", {
            "name": "disk", "job_plan_id": plan_id, "secret": SECRET,
            "match": {"alertname": ["HighDisk"]}, "host_variable": "target",
            "host_label": "instance", "max_hosts": 1, "cooldown": 0, "host_cooldown": 0},
            headers=through.headers())
        assert made["result"], made
    finally:
        await through.close()
    rule_id = made["data"]["id"]

    async def decide() -> dict[str, Any]:
        posted = await post(running.url, rule_id, alertmanager("firing", f"{A}:9100"))
        assert posted["result"], posted
        [decision] = posted["data"]["decisions"]
        assert (decision["decision"], decision["job_instance_id"]) == ("refused", None), decision
        return decision

    # the app made again, limited to business 3 from now on; then disabled; then gone
    await identity.delete_app("ops")
    await identity.create_app("ops", users=["alice"], biz=[3])
    assert (await decide())["reason"] == "App 'ops' may no longer act in biz 2"
    await identity.delete_app("ops")
    await identity.create_app("ops", users=["alice"], biz=[2])
    async with running.server.db.begin() as conn:
        await conn.execute(update(apps).where(apps.c.app_code == "ops").values(disabled=True))
    assert (await decide())["reason"] == "App 'ops' is disabled"
    await identity.delete_app("ops")
    assert (await decide())["reason"] == "App 'ops' no longer exists"
    listed = await running.wire.v3("get_job_instance_list", {
        "bk_biz_id": 2, "create_time_start": now_ms() - 60_000,
        "create_time_end": now_ms() + 60_000}, method="GET")
    assert listed["data"]["total"] == 0, listed


async def test_an_app_mints_no_personal_token_that_reaches_further_than_itself(
        running: Running) -> None:
    alice = await two_businesses(running, "alice", "2", "3")
    identity = running.server.identity
    apps = {"wide": await identity.create_app("wide"),
            "three-only": await identity.create_app("three-only", biz=[3])}
    # an ordinary app naming the administrator, an app limited to business 3 naming alice:
    # a token would reach the administration routes, or business 2
    for app_code, user, why in (("wide", "admin", "is not an administration app"),
                                ("three-only", "alice", "may not touch every business")):
        caller = Wire(running.url, app_code, apps[app_code], user)
        try:
            made = await caller.post(f"{OWN}/tokens", {"expires_in": 600})
            assert made["code"] == 9900403, made
            assert f"App {app_code!r} {why}" in made["message"], made
        finally:
            await caller.close()
    for user, headers in (("admin", running.wire.headers()), ("alice", alice)):
        assert (await running.wire.get(f"{OWN}/tokens", {}, headers=headers))["data"] == [], user
    # the administration app, and the console or a token of the user, still make them
    made = await running.wire.post(f"{OWN}/tokens", {"expires_in": 600}, headers=alice)
    assert made["result"], made
    bearer = {"Authorization": f"Bearer {made['data']['token']}"}
    again = await running.wire.post(f"{OWN}/tokens", {"expires_in": 300}, headers=bearer)
    assert again["result"], again


async def test_a_process_task_of_unknown_agents_is_its_own_persons(running: Running) -> None:
    wire = running.wire
    identity = running.server.identity
    tokens: dict[str, dict[str, str]] = {}
    for user in ("alice", "bob"):
        await identity.ensure_user(user)
        await identity.grant(user, "biz", "2")
        made = await wire.post(f"{OWN}/tokens", {"expires_in": 600},
                               headers=wire.headers(bk_username=user))
        tokens[user] = {"Authorization": f"Bearer {made['data']['token']}"}
    spec = {"meta": {"namespace": "ns", "name": "app"}, "op_type": 2,
            "spec": {"identity": {"setup_path": "/opt/app", "pid_path": "/opt/app/pid"}}}
    made = await wire.post(f"{GSE_PROC}/operate_proc_multi", {
        "proc_operate_req": [{**spec, "agent_id_list": ["alice-typed-this"]}]},
        headers=tokens["alice"])
    assert made["result"], made
    asked = {"task_id": made["data"]["task_id"]}
    theirs = await wire.get(f"{GSE_PROC}/get_proc_operate_result_v2", asked,
                            headers=tokens["bob"])
    assert theirs["code"] == 1249404 and "alice-typed-this" not in str(theirs), theirs
    own = await wire.get(f"{GSE_PROC}/get_proc_operate_result_v2", asked,
                         headers=tokens["alice"])
    assert list(own["data"]) == ["alice-typed-this:ns:app"], own
