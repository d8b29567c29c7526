"""Alert-driven self-healing: Alertmanager and plain payloads start a plan, converge,
skip, refuse and dry-run, and every decision can be read back (API, SDK, CLI)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
from tests.integration.harness import Running, Wire, eventually, listening, run_server
from tests.integration.test_cli_and_sdk import cli
from tests.integration.test_notifications import ALLOW_LOOPBACK, Hook, add_config
from tests.integration.test_notifications import SECRET as NOTIFY_SECRET

from jobfleet.sdk import AsyncJobClient

OWN = "/api/jobfleet/v1"
IPS = ["127.0.0.2", "127.0.0.3"]
SECRET = "a-webhook-secret-of-some-length"


def alertmanager(status: str, instance: str, name: str = "HighDisk") -> dict[str, Any]:
    labels = {"alertname": name, "severity": "critical", "instance": instance}
    return {
        "version": "4", "groupKey": "{}:{alertname=\"HighDisk\"}", "status": status,
        "receiver": "jobfleet", "groupLabels": {"alertname": name}, "commonLabels": labels,
        "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
        "alerts": [{"status": status, "labels": labels,
                    "annotations": {"summary": "disk full"},
                    "startsAt": "2026-12-05T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://127.0.0.1:9090/graph",
                    "fingerprint": hashlib.sha256(instance.encode()).hexdigest()[:16]}],
    }


async def post(url: str, rule_id: int, payload: dict[str, Any], *,
               signed: bool = True, secret: str = SECRET, language: str = "") -> dict[str, Any]:
    """Post an alert payload to the rule's webhook on the server at ``url``."""
    body = json.dumps(payload).encode()
    if signed:
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {"X-Jobfleet-Signature": f"sha256={digest}"}
    else:
        headers = {"Authorization": f"Bearer {secret}"}
    if language:
        headers["blueking-language"] = language
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=60) as http:
        resp = await http.post(f"{OWN}/heal/hooks/{rule_id}", content=body,
                               headers={**headers, "Content-Type": "application/json"})
    return dict(resp.json())


async def make_plan(wire: Wire, script: str = 'echo "healing: $alarm"; sleep 2') -> int:
    tpl = await wire.post(f"{OWN}/templates?bk_biz_id=2", {
        "name": "heal disk", "global_var_list": [
            {"name": "target", "type": 3, "required": 1},
            {"name": "alarm", "type": 1, "value": "none", "changeable": 1}],
        "step_list": [{"name": "clean", "type": 1, "script_info": {
            "script_content": script,
            "script_language": 1, "account": "root", "server": {"variable": "target"}}}]})
    assert tpl["result"], tpl
    plan = await wire.post(f"{OWN}/templates/{tpl['data']['id']}/plans?bk_biz_id=2",
                                   {"name": "heal disk now"})
    assert plan["result"], plan
    return int(plan["data"]["id"])


async def test_alerts_heal_with_convergence(running: Running) -> None:
    await running.start_agents(IPS)
    plan_id = await make_plan(running.wire)
    async with AsyncJobClient(running.url, running.boot["bk_app_code"],
                              running.boot["bk_app_secret"], "admin", biz=2) as client:
        rule = await client.create_heal_rule(
            "disk", plan_id, SECRET, match={"alertname": ["HighDisk"], "severity": ["critical"]},
            variables={"alarm": "{{alertname}} on {{labels.instance}}: {{annotations.summary}}"},
            host_variable="target", host_label="instance", host_cooldown=0, max_hosts=1)
        assert rule["has_secret"] and "secret" not in rule
        rule_id = rule["id"]

        # posted twice while the first job runs: one job
        first = await post(running.url, rule_id, alertmanager("firing", f"{IPS[0]}:9100"))
        assert first["result"], first
        [started] = first["data"]["decisions"]
        assert started["decision"] == "started" and started["job_instance_id"], started
        job_id = started["job_instance_id"]
        again = await post(running.url, rule_id, alertmanager("firing", f"{IPS[0]}:9100"),
                           signed=False)
        [converged] = again["data"]["decisions"]
        assert (converged["decision"], converged["job_instance_id"]) == ("converged", job_id)

        # resolved: nothing starts
        resolved = await post(running.url, rule_id, alertmanager("resolved", f"{IPS[0]}:9100"))
        assert resolved["data"]["decisions"][0]["decision"] == "skipped"
        # another alert name: no match
        other = await post(running.url, rule_id, alertmanager("firing", IPS[0], "CpuHigh"))
        assert other["data"]["decisions"][0]["decision"] == "skipped"
        # more hosts than the cap: refused
        many = await post(running.url, rule_id, alertmanager("firing", ",".join(IPS)))
        assert many["data"]["decisions"][0]["decision"] == "refused"

        # a bad signature, a wrong token, an unknown rule: refused with the envelope
        bad = await post(running.url, rule_id, alertmanager("firing", IPS[1]), secret="x" * 20)
        assert (bad["result"], bad["code"]) == (False, 1240005), bad
        token = await post(running.url, rule_id, alertmanager("firing", IPS[1]), signed=False,
                           secret="y" * 20)
        assert (token["result"], token["code"]) == (False, 1240005), token
        unknown = await post(running.url, 999999, alertmanager("firing", IPS[1]))
        assert (unknown["result"], unknown["code"]) == (False, 1240005), unknown
        chinese = await post(running.url, 999999, alertmanager("firing", IPS[1]),
                             language="zh-cn")
        assert (chinese["code"], chinese["message"]) == (1240005, "服务认证失败"), chinese
        garbage = await post(running.url, rule_id, {"alerts": "nope"})
        assert garbage["result"] is False and garbage["code"] == 1241010, garbage

        # dry run, with the plain JSON payload
        await client.update_heal_rule(rule_id, dry_run=True)
        plain = {"alertname": "HighDisk", "severity": "critical", "status": "firing",
                 "labels": {"instance": IPS[1]}, "annotations": {"summary": "disk full"}}
        dry = await post(running.url, rule_id, plain)
        [would] = dry["data"]["decisions"]
        assert would["decision"] == "dry_run" and would["job_instance_id"] is None, would
        assert would["variables"] == {"alarm": f"HighDisk on {IPS[1]}: disk full"}

        # the off switch
        await client.update_heal_rule(rule_id, dry_run=False, enabled=False)
        off = await post(running.url, rule_id, plain)
        assert off["data"]["decisions"][0]["reason"] == "the rule is off"
        await client.update_heal_rule(rule_id, enabled=True)

        result = await running.wire.wait(job_id)
        assert result["job_instance"]["status"] == 3
        step = result["step_instance_list"][0]
        logs = await running.wire.logs(job_id, step["step_instance_id"], IPS[:1])
        assert logs == {IPS[0]: f"healing: HighDisk on {IPS[0]}:9100: disk full\n"}

        # the job ended: the same alert heals again
        later = await post(running.url, rule_id, alertmanager("firing", f"{IPS[0]}:9100"))
        assert later["data"]["decisions"][0]["decision"] == "started"
        page = await client.list_heal_decisions(rule_id=rule_id, decision="started")
        assert page["total"] == 2
        assert page["data"][1]["job_instance_id"] == job_id
        assert page["data"][1]["job_status"] == 3
        everything = await client.list_heal_decisions(rule_id=rule_id, length=100)
        kinds = sorted(d["decision"] for d in everything["data"])
        assert kinds.count("refused") == 4  # the cap, two bad credentials, the bad payload
        assert {"started", "converged", "skipped", "dry_run"} <= set(kinds)
        await running.wire.wait(page["data"][0]["job_instance_id"])

    code, out = await cli(running, "heal", "decisions", "--rule", str(rule_id), "--json")
    assert code == 0, out
    assert any(d["job_instance_id"] == job_id for d in json.loads(out))
    code, out = await cli(running, "heal", "rules")
    assert code == 0 and "disk" in out, out


async def test_two_posts_at_once_start_one_job(running: Running) -> None:
    await running.start_agents(IPS[:1])
    plan_id = await make_plan(running.wire)
    made = await running.wire.post(f"{OWN}/businesses/2/heal-rules", {
        "name": "race", "job_plan_id": plan_id, "secret": SECRET, "host_variable": "target",
        "variables": {"alarm": "{{fingerprint}}"}})
    assert made["result"], made
    answers = await asyncio.gather(*(
        post(running.url, made["data"]["id"], alertmanager("firing", IPS[0])) for _ in range(4)))
    decisions = [a["data"]["decisions"][0] for a in answers]
    assert sorted(d["decision"] for d in decisions) == ["converged"] * 3 + ["started"]
    assert len({d["job_instance_id"] for d in decisions}) == 1
    bad = await running.wire.post(f"{OWN}/businesses/2/heal-rules", {
        "name": "short", "job_plan_id": plan_id, "secret": "short"})
    assert bad["result"] is False and bad["code"] == 1241010, bad
    # a rule names a plan of its business
    no_plan = await running.wire.post(f"{OWN}/businesses/2/heal-rules", {
        "name": "nowhere", "job_plan_id": 999999, "secret": SECRET})
    assert (no_plan["result"], no_plan["code"]) == (False, 1243009), no_plan
    resp = await running.wire.http.put(f"{OWN}/businesses/2/heal-rules/{made['data']['id']}",
                                       json={"job_plan_id": 999999},
                                       headers=running.wire.headers())
    assert (resp.json()["result"], resp.json()["code"]) == (False, 1243009), resp.text
    listed = await running.wire.get(f"{OWN}/businesses/2/heal-rules", {})
    assert all("secret" not in r for r in listed["data"])
    await eventually(lambda: running.wire.wait(decisions[0]["job_instance_id"]))


async def test_a_rule_name_is_held_by_one_rule_of_a_business(running: Running) -> None:
    """Creates and renames that find a name free at once: one takes it, the others are
    refused as a conflict (1249409), never a 500; so is a rename onto a taken name."""
    wire = running.wire
    plan_id = await make_plan(wire)
    rules = f"{OWN}/businesses/2/heal-rules"

    async def create(name: str) -> dict[str, Any]:
        return await wire.post(rules, {"name": name, "job_plan_id": plan_id, "secret": SECRET})

    async def rename(rule_id: int, name: str) -> dict[str, Any]:
        resp = await wire.http.put(f"{rules}/{rule_id}", json={"name": name},
                                   headers=wire.headers())
        return dict(resp.json())

    answers = await asyncio.gather(*(create("race") for _ in range(12)))
    assert sorted(a["code"] for a in answers) == [0] + [1249409] * 11, answers
    assert {a["message"] for a in answers if not a["result"]} == {"A rule named 'race' exists"}
    others = [(await create(f"other {i}"))["data"]["id"] for i in range(8)]
    answers = await asyncio.gather(*(rename(i, "renamed") for i in others))
    assert sorted(a["code"] for a in answers) == [0] + [1249409] * 7, answers
    onto = await rename(others[0], "race")
    assert (onto["code"], onto["message"]) == (1249409, "A rule named 'race' exists"), onto
    listed = await wire.get(rules, {})
    names = [r["name"] for r in listed["data"]]
    assert (names.count("race"), names.count("renamed"), len(names)) == (1, 1, 9), names


async def test_the_alerts_of_one_call_see_the_decisions_before_them(running: Running) -> None:
    """One call's alerts are decided in order, each seeing the jobs the ones before it
    started: a repeated fingerprint converges, a host cooling down is held, the rule's
    rate limit skips; every decision is recorded, in order."""
    await running.start_agents(IPS)
    plan_id = await make_plan(running.wire)
    made = await running.wire.post(f"{OWN}/businesses/2/heal-rules", {
        "name": "one call", "job_plan_id": plan_id, "secret": SECRET,
        "host_variable": "target", "variables": {"alarm": "{{fingerprint}}"},
        "rate_limit": 2})
    assert made["result"], made

    def alert(ip: str, fingerprint: str) -> dict[str, Any]:
        return {"status": "firing", "fingerprint": fingerprint,
                "labels": {"alertname": "HighDisk", "instance": ip}}
    answer = await post(running.url, made["data"]["id"], {"alerts": [
        alert(IPS[0], "f1"), alert(IPS[0], "f1"), alert(IPS[0], "f2"), alert(IPS[1], "f3"),
        alert(IPS[1], "f4")]})
    assert answer["result"], answer
    decisions = answer["data"]["decisions"]
    assert [d["decision"] for d in decisions] == [
        "started", "converged", "converged", "started", "skipped"], decisions
    assert decisions[1]["job_instance_id"] == decisions[0]["job_instance_id"]
    assert "still running" in decisions[1]["reason"]
    assert "cooling down" in decisions[2]["reason"]
    assert "rate limit" in decisions[4]["reason"]
    assert decisions[3]["job_instance_id"] not in (None, decisions[0]["job_instance_id"])
    listed = await running.wire.get(f"{OWN}/businesses/2/heal-decisions",
                                    {"rule_id": made["data"]["id"]})
    assert [d["id"] for d in reversed(listed["data"]["data"])] == [d["id"] for d in decisions]
    assert sorted(d["id"] for d in decisions) == [d["id"] for d in decisions]
    for job in (decisions[0], decisions[3]):
        await eventually(lambda job=job: running.wire.wait(job["job_instance_id"]))


async def test_the_end_of_a_healing_job_is_notified(tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path, database_url, server=ALLOW_LOOPBACK) as running:
        await running.start_agents(IPS[:1])
        plan_id = await make_plan(running.wire)
        made = await running.wire.post(f"{OWN}/businesses/2/heal-rules", {
            "name": "told", "job_plan_id": plan_id, "secret": SECRET,
            "host_variable": "target"})
        assert made["result"], made
        async with listening(Hook()) as hook:
            await add_config(running.wire, channel="webhook", target=hook.url,
                             secret=NOTIFY_SECRET, statuses=[3])
            answer = await post(running.url, made["data"]["id"], alertmanager("firing", IPS[0]))
            job_id = answer["data"]["decisions"][0]["job_instance_id"]
            await running.wire.wait(job_id)
            await eventually(lambda: asyncio.sleep(0, hook.accepted))
            [event] = hook.bodies()
            assert (event["job_instance_id"], event["status"]) == (job_id, 3)


async def test_alert_labels_that_name_no_host_are_skipped(running: Running) -> None:
    """Label values out of any id's range (a host id, a cloud id) name no host: the
    alert is skipped with a decision, never an internal error."""
    await running.start_agents(IPS[:1])
    plan_id = await make_plan(running.wire)
    ids = await running.wire.post(f"{OWN}/businesses/2/heal-rules", {
        "name": "by id", "job_plan_id": plan_id, "secret": SECRET, "host_variable": "target",
        "host_kind": "host_id", "dry_run": True})
    assert ids["result"], ids
    ips = await running.wire.post(f"{OWN}/businesses/2/heal-rules", {
        "name": "by ip", "job_plan_id": plan_id, "secret": SECRET, "host_variable": "target",
        "dry_run": True})
    assert ips["result"], ips
    host = {h.ip: h.bk_host_id for h in await running.server.inventory.list()}[IPS[0]]
    huge = "9" * 30
    for rule, labels, expected in (
        (ids, {"instance": huge}, "skipped"),
        (ids, {"instance": f"{host},{huge}"}, "dry_run"),
        (ips, {"instance": IPS[0], "bk_cloud_id": huge}, "skipped"),
    ):
        answer = await post(running.url, rule["data"]["id"],
                            {"alertname": "HighDisk", "labels": labels})
        assert answer["result"], answer
        [decision] = answer["data"]["decisions"]
        assert decision["decision"] == expected, decision
        if expected == "dry_run":
            assert decision["hosts"] == [host], decision


async def test_wrong_credentials_share_the_address_budget(tmp_path: Path,
                                                          database_url: str) -> None:
    """A wrong secret or an unknown rule counts as a failed authentication of the
    address: past the budget the webhook answers 429 and records nothing more, while
    the rule's own secret still passes."""
    async with run_server(tmp_path, database_url,
                          server={"auth_failure_rate": 0.01, "auth_failure_burst": 3}) as running:
        await running.start_agents(IPS[:1])
        plan_id = await make_plan(running.wire)
        made = await running.wire.post(f"{OWN}/businesses/2/heal-rules", {
            "name": "guarded", "job_plan_id": plan_id, "secret": SECRET,
            "host_variable": "target", "dry_run": True})
        assert made["result"], made
        rule_id = made["data"]["id"]
        plain = {"alertname": "HighDisk", "labels": {"instance": IPS[0]}}
        for secret, rule in (("x" * 20, rule_id), ("y" * 20, rule_id), (SECRET, 999999)):
            answer = await post(running.url, rule, plain, secret=secret)
            assert (answer["result"], answer["code"]) == (False, 1240005), answer
        for signed in (True, False):
            answer = await post(running.url, rule_id, plain, secret="z" * 20, signed=signed)
            assert (answer["result"], answer["code"]) == (False, 1249429), answer
        good = await post(running.url, rule_id, plain)
        assert good["result"] and good["data"]["decisions"][0]["decision"] == "dry_run", good
        # the API's other credentials see the same count
        wrong = Wire(running.url, running.boot["bk_app_code"], "wrong-secret")
        try:
            resp = await wrong.http.get(f"{OWN}/whoami", headers=wrong.headers())
            assert resp.json()["code"] == 1249429, resp.json()
        finally:
            await wrong.close()
        page = await running.wire.get(f"{OWN}/businesses/2/heal-decisions",
                                      {"decision": "refused"})
        assert page["data"]["total"] == 2, page
