"""Self-healing bounds: a variable rendered past a plan variable's limit refuses the
alert with a decision that says why, and the decision keeps no oversized value."""

from __future__ import annotations

import json

from sqlalchemy import update
from tests.integration.harness import Running
from tests.integration.test_notifications import admin
from tests.integration.test_self_healing import IPS, OWN, SECRET, make_plan, post

from jobfleet.domain.variables import MAX_VALUE
from jobfleet.engine.heal import MAX_RENDERED
from jobfleet.store.tables import heal_rules


async def test_an_oversized_rendered_variable_is_refused(running: Running) -> None:
    await running.start_agents(IPS[:1])
    plan_id = await make_plan(running.wire)
    made = await running.wire.post(f"{OWN}/businesses/2/heal-rules", {
        "name": "echo", "job_plan_id": plan_id, "secret": SECRET, "host_variable": "target",
        "variables": {"alarm": "{{labels.big}}" * 290, "small": "{{alertname}}"},
        "dry_run": True})
    assert made["result"], made
    labels = {"instance": IPS[0], "big": "x" * 1000}
    answer = await post(running.url, made["data"]["id"], {"alertname": "HighDisk",
                                                          "labels": labels})
    assert answer["result"], answer
    [decision] = answer["data"]["decisions"]
    assert decision["decision"] == "refused", decision
    assert "alarm" in decision["reason"] and str(MAX_VALUE) in decision["reason"], decision
    assert len(json.dumps(decision)) < MAX_VALUE, len(json.dumps(decision))
    # within the limit the same rule still decides as before
    labels["big"] = "x"
    answer = await post(running.url, made["data"]["id"], {"alertname": "HighDisk",
                                                          "labels": labels})
    [decision] = answer["data"]["decisions"]
    assert decision["decision"] == "dry_run", decision
    assert decision["variables"]["alarm"] == "x" * 290, decision


async def test_variables_past_the_total_are_refused(running: Running) -> None:
    """Each within a plan variable's limit, together past the total a decision keeps."""
    await running.start_agents(IPS[:1])
    plan_id = await make_plan(running.wire)
    many = {f"v{i}": "{{labels.big}}" * 15 for i in range(100)}
    made = await running.wire.post(f"{OWN}/businesses/2/heal-rules", {
        "name": "echo", "job_plan_id": plan_id, "secret": SECRET, "host_variable": "target",
        "variables": many, "dry_run": True})
    assert made["result"], made
    labels = {"instance": IPS[0], "big": "x" * 4000}  # 60,000 bytes a variable
    answer = await post(running.url, made["data"]["id"], {"alertname": "HighDisk",
                                                          "labels": labels})
    [decision] = answer["data"]["decisions"]
    assert decision["decision"] == "refused", decision
    assert str(MAX_RENDERED) in decision["reason"], decision
    assert len(json.dumps(decision)) < MAX_VALUE, len(json.dumps(decision))
    labels["big"] = "x" * 100
    answer = await post(running.url, made["data"]["id"], {"alertname": "HighDisk",
                                                          "labels": labels})
    [decision] = answer["data"]["decisions"]
    assert decision["decision"] == "dry_run", decision
    assert decision["variables"]["v99"] == "x" * 1500, decision


async def test_an_alert_holding_a_nul_is_refused(running: Running) -> None:
    """PostgreSQL's text and JSON hold no NUL: an alert spelling one (``\\u0000``) in any
    text is refused as a bad payload on every database, never an internal error."""
    await running.start_agents(IPS[:1])
    plan_id = await make_plan(running.wire)
    made = await running.wire.post(f"{OWN}/businesses/2/heal-rules", {
        "name": "echo", "job_plan_id": plan_id, "secret": SECRET, "host_variable": "target",
        "variables": {"alarm": "{{labels.x}} {{annotations.y}}"}, "dry_run": True})
    assert made["result"], made
    rule_id = made["data"]["id"]
    labels = {"instance": IPS[0]}
    for payload in (
        {"alertname": "High\x00Disk", "labels": labels},
        {"alertname": "HighDisk", "severity": "x\x00", "labels": labels},
        {"alertname": "HighDisk", "fingerprint": "f\x00", "labels": labels},
        {"alertname": "HighDisk", "labels": {**labels, "x": "v\x00"}},
        {"alertname": "HighDisk", "labels": {**labels, "k\x00": "v"}},
        {"alertname": "HighDisk", "labels": labels, "annotations": {"y": "\x00"}},
        {"alerts": [{"alertname": "HighDisk", "labels": labels},
                    {"alertname": "HighDisk", "labels": {**labels, "x": "\x00"}}]},
    ):
        answer = await post(running.url, rule_id, payload)
        assert (answer["result"], answer["code"]) == (False, 1241010), (payload, answer)
        assert "NUL" in answer["message"], answer
    answer = await post(running.url, rule_id, {"alertname": "HighDisk", "labels": labels})
    [decision] = answer["data"]["decisions"]
    assert decision["decision"] == "dry_run", decision
    listed = await running.wire.get(f"{OWN}/businesses/2/heal-decisions", {"rule_id": rule_id})
    assert listed["result"], listed
    assert [d["decision"] for d in listed["data"]["data"]] == ["dry_run"] + ["refused"] * 7


async def test_a_rule_never_sets_a_password_variable(running: Running) -> None:
    """Rules and their decisions are shown to whoever views the business's rules: a rule
    that would set one of its plan's password variables is refused, and one stored before
    (or whose plan's variable became a password since) refuses its alerts without
    recording the value."""
    await running.start_agents(IPS[:1])
    wire = running.wire
    tpl = await wire.post(f"{OWN}/templates?bk_biz_id=2", {
        "name": "heal with a key", "global_var_list": [
            {"name": "target", "type": 3, "required": 1},
            {"name": "alarm", "type": 1, "value": "none", "changeable": 1},
            {"name": "api_key", "type": 4, "value": "plan-key-0000", "changeable": 1}],
        "step_list": [{"name": "clean", "type": 1, "script_info": {
            "script_content": "echo ${#api_key}", "script_language": 1, "account": "root",
            "server": {"variable": "target"}}}]})
    assert tpl["result"], tpl
    plan = await wire.post(f"{OWN}/templates/{tpl['data']['id']}/plans?bk_biz_id=2",
                           {"name": "heal with a key now"})
    assert plan["result"], plan
    plan_id = plan["data"]["id"]
    base = {"name": "keyed", "job_plan_id": plan_id, "secret": SECRET,
            "host_variable": "target", "dry_run": True}
    refused = await wire.post(f"{OWN}/businesses/2/heal-rules",
                              {**base, "variables": {"api_key": "key-from-rule-1234"}})
    assert (refused["result"], refused["code"]) == (False, 1241010), refused
    assert "api_key" in refused["message"] and "key-from-rule-1234" not in refused["message"]
    made = await wire.post(f"{OWN}/businesses/2/heal-rules",
                           {**base, "variables": {"alarm": "{{alertname}}"}})
    assert made["result"], made
    rule_id = made["data"]["id"]
    changed = await admin(wire, "PUT", f"/businesses/2/heal-rules/{rule_id}",
                          {"variables": {"api_key": "{{labels.key}}"}})
    assert (changed["result"], changed["code"]) == (False, 1241010), changed

    # a rule stored before the check: its alerts are refused and the value is kept nowhere
    async with running.server.db.begin() as conn:
        await conn.execute(update(heal_rules).where(heal_rules.c.id == rule_id).values(
            variables={"alarm": "{{alertname}}", "api_key": "{{labels.key}}"}))
    answer = await post(running.url, rule_id, {"alertname": "HighDisk", "labels": {
        "instance": IPS[0], "key": "key-from-alert-5678"}})
    assert answer["result"], answer
    [decision] = answer["data"]["decisions"]
    assert decision["decision"] == "refused" and "api_key" in decision["reason"], decision
    listed = await wire.get(f"{OWN}/businesses/2/heal-decisions", {"rule_id": rule_id})
    assert "key-from-alert-5678" not in json.dumps(listed)
