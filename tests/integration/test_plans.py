"""Executing plans through the bk-job v3 routes: variables, multi-step jobs, confirmation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from tests.integration.harness import Running, b64, eventually

from jobfleet.domain.plans import parse_steps
from jobfleet.domain.variables import parse_definitions
from jobfleet.store.database import now_ms
from jobfleet.store.tables import (
    job_instances,
    job_plans,
    job_templates,
    step_hosts,
    step_instances,
)
from jobfleet.store.templates import seal_variables

A, B, C = "127.0.0.81", "127.0.0.82", "127.0.0.83"
ROOT = {"alias": "root"}


def hosts(*ips: str) -> dict[str, Any]:
    return {"ip_list": [{"bk_cloud_id": 0, "ip": ip} for ip in ips]}


def script(name: str, content: str, server: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": 1, "script_info": {
        "script_type": 1, "script_content": content, "script_language": extra.pop("lang", 1),
        "account": ROOT, "server": server, **extra}}


async def make_plan(running: Running, steps: list[dict[str, Any]],
                    variables: list[dict[str, Any]], *, biz: int = 2,
                    name: str = "plan") -> tuple[int, dict[str, int]]:
    """A template and a plan with every step enabled, written straight to the store."""
    defs = parse_definitions(variables)
    for i, var in enumerate(defs, start=1):
        var.id = i
    parsed = parse_steps(steps, defs)
    for i, step in enumerate(parsed, start=1):
        step["id"] = i
    sealed = seal_variables(defs, running.server.cipher)
    now = now_ms()
    common = {"bk_biz_id": biz, "description": "", "steps": parsed, "variables": sealed,
              "creator": "admin", "create_time": now, "last_modify_user": "admin",
              "last_modify_time": now}
    async with running.server.db.begin() as conn:
        res = await conn.execute(insert(job_templates).values(
            name=f"{name}-template", version=1, next_step_id=len(parsed) + 1,
            next_variable_id=len(defs) + 1, **common))
        template_id = res.inserted_primary_key[0]
        res = await conn.execute(insert(job_plans).values(
            name=name, template_id=template_id, template_version=1,
            **{**common, "steps": [{**s, "enabled": True} for s in parsed]}))
        plan_id = int(res.inserted_primary_key[0])
    return plan_id, {v.name: v.id for v in defs}


async def execute(running: Running, plan_id: int, **extra: Any) -> dict[str, Any]:
    return await running.wire.v3("execute_job_plan",
                                 {"bk_biz_id": 2, "job_plan_id": plan_id, **extra})


async def step_ids(running: Running, job_id: int) -> list[int]:
    async with running.server.db.connect() as conn:
        rows = await conn.execute(select(step_instances.c.id).where(
            step_instances.c.job_instance_id == job_id).order_by(step_instances.c.step_order))
        return [r[0] for r in rows]


async def test_three_steps_share_a_variable(running: Running, tmp_path: Path) -> None:
    """A script sets a variable, a file step uses it in its path, a script prints it."""
    await running.start_agents([A, B])
    source = tmp_path / "source"
    source.mkdir()
    (source / "payload.txt").write_text("payload\n")
    dest_root = tmp_path / "dest"
    plan_id, ids = await make_plan(running, [
        script("pick a folder", 'release="build-$((40 + 2))"\necho picked $release\n',
               hosts(A)),
        {"name": "ship it", "type": 2, "file_info": {
            "file_source_list": [{"file_list": [str(source / "payload.txt")],
                                  "account": ROOT, "server": hosts(A)}],
            "file_destination": {"path": f"{dest_root}/${{release}}/", "account": ROOT,
                                 "server": hosts(B)}}},
        script("report", 'echo "release=${release}"; cat "' + str(dest_root)
               + '/${release}/payload.txt"\n', hosts(B)),
    ], [{"name": "release", "type": 1, "value": "unset", "changeable": 1}])
    answer = await execute(running, plan_id)
    assert answer["result"], answer
    job_id = answer["data"]["job_instance_id"]
    assert answer["data"]["job_instance_name"] == "plan"
    status = await running.wire.wait(job_id)
    assert status["job_instance"]["status"] == 3, status
    assert [s["status"] for s in status["step_instance_list"]] == [3, 3, 3]
    assert (dest_root / "build-42" / "payload.txt").read_text() == "payload\n"
    steps = await step_ids(running, job_id)
    logs = await running.wire.logs(job_id, steps[2], [B])
    assert logs[B] == "release=build-42\npayload\n"
    values = await running.wire.v3("get_job_instance_global_var_value",
                                   {"bk_biz_id": 2, "job_instance_id": job_id}, method="GET")
    assert values["result"], values
    per_step = values["data"]["step_instance_var_list"]
    assert [s["step_instance_id"] for s in per_step] == steps
    assert per_step[-1]["global_var_list"] == [
        {"id": ids["release"], "name": "release", "type": 1, "value": "build-42"}]
    listed = await running.wire.v3("get_job_instance_list", {
        "bk_biz_id": 2, "create_time_start": now_ms() - 60_000,
        "create_time_end": now_ms() + 60_000, "job_instance_id": job_id}, method="GET")
    item = listed["data"]["data"][0]
    assert (item["type"], item["launch_mode"], item["job_plan_id"]) == (0, 2, plan_id)


async def test_self_healing_call_pattern(running: Running) -> None:
    """bk-monitor's job action: one entry per IP for the host variable, cloud id as a string."""
    await running.start_agents([A, B])
    plan_id, ids = await make_plan(running, [
        script("heal", 'echo "healing ${alarm} on $JOBFLEET_HOST_IP"\n', {"variable": "target"}),
    ], [{"name": "target", "type": 3, "required": 1},
        {"name": "alarm", "type": 1, "value": "default"}])
    detail_vars = [{"id": ids["target"], "server": {"ip_list": [{"bk_cloud_id": "0", "ip": A}]}},
                   {"id": ids["target"], "server": {"ip_list": [{"bk_cloud_id": "0", "ip": B}]}},
                   {"id": ids["alarm"], "value": "disk full"}]
    answer = await running.wire.v3("execute_job_plan", {
        "bk_biz_id": 2, "job_plan_id": plan_id, "global_var_list": detail_vars},
        prefix="/api/c/compapi/v2/jobv3")
    assert answer["result"], answer
    assert set(answer["data"]) >= {"job_instance_id", "job_instance_name"}
    job_id = answer["data"]["job_instance_id"]

    async def finished() -> int | None:
        reply = await running.wire.v3("get_job_instance_status",
                                      {"job_instance_id": job_id, "bk_biz_id": 2}, method="GET")
        state = reply["data"]["job_instance"]["status"]
        return None if state in (1, 2, 7) else int(state)

    assert await eventually(finished, timeout=30, interval=0.2) == 3
    step = (await step_ids(running, job_id))[0]
    logs = await running.wire.logs(job_id, step, [A, B])
    assert logs == {A: f"healing disk full on {A}\n", B: f"healing disk full on {B}\n"}


async def test_variables_reach_every_language_and_passwords_stay_masked(
        running: Running) -> None:
    await running.start_agents([A, B])
    plan_id, _ = await make_plan(running, [
        script("python", 'import os\nprint("${greeting}", os.environ["greeting"], '
               '"${missing}")\n', hosts(A), lang=4),
        script("arrays", 'echo "${colors[1]} ${sizes[big]} ${#colors[@]} $secret"\n'
               'ns="own-$JOBFLEET_HOST_IP"\n'
               'printf "count=%s\\n" 7 >> "$JOBFLEET_VARS_FILE"\n', hosts(A, B),
               script_param="--who ${greeting}"),
        script("after", 'echo "$ns $count"\n', hosts(A, B)),
    ], [{"name": "greeting", "type": 1, "value": "hi"},
        {"name": "colors", "type": 6, "value": "(red green blue)"},
        {"name": "sizes", "type": 5, "value": '(["big"]=XL ["small"]=S)'},
        {"name": "secret", "type": 4, "value": "s3cr3t-value"},
        {"name": "ns", "type": 2, "value": "shared", "changeable": 1},
        {"name": "count", "type": 1, "value": "0", "changeable": 1}])
    answer = await execute(running, plan_id)
    job_id = answer["data"]["job_instance_id"]
    status = await running.wire.wait(job_id)
    assert status["job_instance"]["status"] == 3, status
    steps = await step_ids(running, job_id)
    assert (await running.wire.logs(job_id, steps[0], [A]))[A] == "hi hi ${missing}\n"
    assert (await running.wire.logs(job_id, steps[1], [A]))[A] == "green XL 3 s3cr3t-value\n"
    after = await running.wire.logs(job_id, steps[2], [A, B])
    assert after == {A: f"own-{A} 7\n", B: f"own-{B} 7\n"}
    values = await running.wire.v3("get_job_instance_global_var_value",
                                   {"bk_biz_id": 2, "job_instance_id": job_id}, method="GET")
    text = json.dumps(values)
    assert "s3cr3t-value" not in text and "******" in text
    async with running.server.db.connect() as conn:
        stored = (await conn.execute(select(job_instances.c.variables).where(
            job_instances.c.id == job_id))).scalar_one()
        snapshots = (await conn.execute(select(step_instances.c.variables).where(
            step_instances.c.job_instance_id == job_id))).scalars().all()
    assert "s3cr3t-value" not in json.dumps(stored) + json.dumps(snapshots)


async def test_the_values_a_plan_shows_sent_back_at_launch_keep_its_password(
        running: Running) -> None:
    """bk-sops fills its form from get_job_plan_detail and sends every value back: the
    password it was shown (******) means the plan's own, not a new password ******."""
    await running.start_agents([A])
    plan_id, ids = await make_plan(running, [
        script("login", 'echo "pw=$secret"\n', hosts(A))],
        [{"name": "secret", "type": 4, "value": "s3cr3t-value"},
         {"name": "empty", "type": 4, "value": ""}])
    detail = await running.wire.v3("get_job_plan_detail",
                                   {"bk_biz_id": 2, "job_plan_id": plan_id}, method="GET")
    shown = [{"id": v["id"], "value": v["value"]} for v in detail["data"]["global_var_list"]]
    assert shown == [{"id": ids["secret"], "value": "******"}, {"id": ids["empty"], "value": ""}]
    answer = await execute(running, plan_id, global_var_list=shown)
    assert answer["result"], answer
    job_id = answer["data"]["job_instance_id"]
    status = await running.wire.wait(job_id)
    assert status["job_instance"]["status"] == 3, status
    steps = await step_ids(running, job_id)
    assert (await running.wire.logs(job_id, steps[0], [A]))[A] == "pw=s3cr3t-value\n"
    # a new password is still a new password, by id or by name
    answer = await execute(running, plan_id, global_var_list=[
        {"name": "secret", "value": "n3w"}])
    job_id = answer["data"]["job_instance_id"]
    await running.wire.wait(job_id)
    steps = await step_ids(running, job_id)
    assert (await running.wire.logs(job_id, steps[0], [A]))[A] == "pw=n3w\n"


async def test_a_password_a_step_sets_is_sealed_wherever_it_is_kept(running: Running) -> None:
    await running.start_agents([A])
    plan_id, _ = await make_plan(running, [
        script("rotate", 'token="n3w-t0ken-$((6 * 7))"\n', hosts(A)),
        script("use", 'echo "token=$token"\n', hosts(A)),
    ], [{"name": "token", "type": 4, "value": "old-t0ken", "changeable": 1}])
    answer = await execute(running, plan_id)
    job_id = answer["data"]["job_instance_id"]
    status = await running.wire.wait(job_id)
    assert status["job_instance"]["status"] == 3, status
    steps = await step_ids(running, job_id)
    assert (await running.wire.logs(job_id, steps[1], [A]))[A] == "token=n3w-t0ken-42\n"
    async with running.server.db.connect() as conn:
        # each host's report of what the step set was kept as the host sent it
        reported = (await conn.execute(select(step_hosts.c.variables).where(
            step_hosts.c.step_instance_id.in_(steps)))).scalars().all()
        snapshots = (await conn.execute(select(step_instances.c.variables).where(
            step_instances.c.job_instance_id == job_id))).scalars().all()
    assert any(reported), reported
    assert "n3w-t0ken" not in json.dumps(reported) + json.dumps(snapshots)


async def test_failed_step_stops_the_job_unless_it_ignores_errors(running: Running) -> None:
    await running.start_agents([A])
    plan_id, _ = await make_plan(running, [
        script("tolerated", "exit 3\n", hosts(A), is_ignore_error=1),
        script("breaks", "exit 4\n", hosts(A)),
        script("never", "echo never\n", hosts(A)),
    ], [])
    job_id = (await execute(running, plan_id))["data"]["job_instance_id"]
    status = await running.wire.wait(job_id)
    assert status["job_instance"]["status"] == 4
    assert [s["status"] for s in status["step_instance_list"]] == [6, 4, 1]


async def test_manual_confirmation(running: Running) -> None:
    await running.start_agents([A])
    await running.wire.post("/api/jobfleet/v1/users", {"username": "bob"})
    granted = await running.wire.post("/api/jobfleet/v1/users/bob/grants",
                                      {"scope_type": "biz", "scope_id": "2"})
    assert granted["result"], granted
    plan_id, _ = await make_plan(running, [
        script("before", "echo before\n", hosts(A)),
        {"name": "go ahead?", "type": 3, "approval_info": {
            "approval_user": {"user_list": ["admin"]}, "approval_message": "check the canary"}},
        script("after", "echo after\n", hosts(A)),
    ], [])
    wire = running.wire

    async def waiting(job_id: int) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            data = await wire.status(job_id)
            return data if data["job_instance"]["status"] == 7 else None
        return dict(await eventually(check, timeout=30, interval=0.1))

    job_id = (await execute(running, plan_id))["data"]["job_instance_id"]
    data = await waiting(job_id)
    assert data["finished"] is False
    confirm = data["step_instance_list"][1]
    assert (confirm["status"], confirm["type"]) == (7, 3)
    op = {"bk_biz_id": 2, "job_instance_id": job_id,
          "step_instance_id": confirm["step_instance_id"]}
    bob = await wire.post("/api/bk-job/prod/api/v3/operate_step_instance",
                          {**op, "operation_code": 6}, headers=wire.headers(bk_username="bob"))
    assert bob["code"] == 1244016
    renotify = await wire.v3("operate_step_instance", {**op, "operation_code": 10})
    assert renotify["result"], renotify
    retry = await wire.v3("operate_step_instance", {**op, "operation_code": 2})
    assert retry["code"] in (1241003, 1241011)
    ok = await wire.v3("operate_step_instance", {**op, "operation_code": 6})
    assert ok["result"] and ok["data"] == {"job_instance_id": job_id,
                                           "step_instance_id": confirm["step_instance_id"]}
    done = await wire.wait(job_id)
    assert done["job_instance"]["status"] == 3
    assert [s["status"] for s in done["step_instance_list"]] == [3, 3, 3]
    again = await wire.v3("operate_step_instance", {**op, "operation_code": 6})
    assert again["code"] == 1241003

    job_id = (await execute(running, plan_id))["data"]["job_instance_id"]
    data = await waiting(job_id)
    stop = {"bk_biz_id": 2, "job_instance_id": job_id,
            "step_instance_id": data["step_instance_list"][1]["step_instance_id"],
            "operation_code": 9}
    assert (await wire.v3("operate_step_instance", stop))["result"]
    done = await wire.wait(job_id)
    assert done["job_instance"]["status"] == 13
    assert [s["status"] for s in done["step_instance_list"]] == [3, 13, 1]


async def test_decisions_on_a_confirmation_at_once_are_all_kept(running: Running) -> None:
    """Every approver must confirm (approval_type 2): two confirmations that arrive
    together both count, and the job goes on; a confirmation and a termination together
    both stay on record. None is lost to another's write of the step."""
    await running.start_agents([A])
    wire = running.wire
    await wire.post("/api/jobfleet/v1/users", {"username": "bob"})
    await wire.post("/api/jobfleet/v1/users/bob/grants", {"scope_type": "biz", "scope_id": "2"})
    plan_id, _ = await make_plan(running, [
        {"name": "both of you?", "type": 3, "approval_info": {
            "approval_type": 2, "approval_user": {"user_list": ["admin", "bob"]}}},
        script("after", "echo after\n", hosts(A)),
    ], [])

    async def waiting_job() -> tuple[int, dict[str, Any]]:
        job_id = (await execute(running, plan_id))["data"]["job_instance_id"]

        async def waiting() -> dict[str, Any] | None:
            data = await wire.status(job_id)
            return data if data["job_instance"]["status"] == 7 else None
        return job_id, await eventually(waiting, timeout=30)

    async def two_confirmations() -> None:
        job_id, data = await waiting_job()
        op = {"bk_biz_id": 2, "job_instance_id": job_id, "operation_code": 6,
              "step_instance_id": data["step_instance_list"][0]["step_instance_id"]}
        answers = await asyncio.gather(
            wire.post("/api/bk-job/prod/api/v3/operate_step_instance", op),
            wire.post("/api/bk-job/prod/api/v3/operate_step_instance", op,
                      headers=wire.headers(bk_username="bob")))
        assert all(a["result"] for a in answers), answers
        done = await wire.wait(job_id, timeout=30)
        assert [s["status"] for s in done["step_instance_list"]] == [3, 3], done

    async def confirmation_and_termination() -> None:
        job_id, data = await waiting_job()
        step_id = data["step_instance_list"][0]["step_instance_id"]
        op = {"bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id}
        confirmed, stopped = await asyncio.gather(
            wire.post("/api/bk-job/prod/api/v3/operate_step_instance",
                      {**op, "operation_code": 6}),
            wire.post("/api/bk-job/prod/api/v3/operate_step_instance",
                      {**op, "operation_code": 9}, headers=wire.headers(bk_username="bob")))
        assert stopped["result"], stopped
        await wire.wait(job_id, timeout=30)
        async with running.server.db.connect() as conn:
            config = (await conn.execute(select(step_instances.c.config).where(
                step_instances.c.id == step_id))).scalar_one()
        assert config["terminated_by"] == "bob", config
        assert (config.get("confirmed_by") == ["admin"]) == confirmed["result"], (confirmed,
                                                                                  config)

    # eight jobs of each at once: each job's two decisions race each other as before,
    # and the rounds do not wait for one another's polls
    await asyncio.gather(*(two_confirmations() for _ in range(8)))
    # a confirmation and a termination at once: the one that came first stays on record
    await asyncio.gather(*(confirmation_and_termination() for _ in range(8)))


async def test_confirmation_survives_a_restart_of_the_runner(running: Running) -> None:
    """The decision lives in the store: a runner that starts over finds the step waiting."""
    await running.start_agents([A])
    plan_id, _ = await make_plan(running, [
        {"name": "confirm", "type": 3, "approval_info": {}},
        script("after", "echo after\n", hosts(A)),
    ], [])
    job_id = (await execute(running, plan_id))["data"]["job_instance_id"]
    await eventually(lambda: _job_status_is(running, job_id, 7), timeout=20)
    engine = running.server.engine
    await engine.stop()
    await engine.start()
    await engine.recover()
    await asyncio.sleep(0.2)
    step = (await step_ids(running, job_id))[0]
    ok = await running.wire.v3("operate_step_instance", {
        "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step,
        "operation_code": 6})
    assert ok["result"], ok
    assert (await running.wire.wait(job_id))["job_instance"]["status"] == 3


async def _job_status_is(running: Running, job_id: int, status: int) -> bool:
    data = await running.wire.status(job_id)
    return bool(data["job_instance"]["status"] == status)


async def test_bad_plan_input(running: Running) -> None:
    await running.start_agents([A])
    plan_id, ids = await make_plan(running, [
        script("one", "echo ${name}\n", {"variable": "targets"}),
    ], [{"name": "targets", "type": 3, "required": 1},
        {"name": "name", "type": 1, "required": 1},
        {"name": "list", "type": 6, "value": "(a b)"}])
    good_hosts = {"id": ids["targets"], "server": hosts(A)}
    cases = [
        ({"job_plan_id": 999_999}, 1244012),
        ({"job_plan_id": "x"}, 1241010),
        ({"job_plan_id": None}, 1241005),
        ({"job_plan_id": 0}, 1241005),
        ({"job_plan_id": -3}, 1241005),
        ({"global_var_list": [good_hosts, {"id": ids["name"], "server": hosts(A)}]}, 1241010),
        ({"global_var_list": [{"id": ids["targets"], "value": "127.1.2.3"}]}, 1241010),
        ({"global_var_list": [good_hosts, {"id": ids["list"], "value": "a b"},
                              {"id": ids["name"], "value": "x"}]}, 1241010),
        ({"global_var_list": [{"id": ids["name"], "value": "x"}]}, 1244009),
        ({"global_var_list": [{"id": ids["targets"], "server": hosts("127.9.9.9")},
                              {"id": ids["name"], "value": "x"}]}, 1243052),
        ({"global_var_list": "nope"}, 1241010),
    ]
    for extra, code in cases:
        body = {"bk_biz_id": 2, "job_plan_id": plan_id, **extra}
        answer = await running.wire.v3("execute_job_plan", body)
        assert answer["code"] == code, (extra, answer)
        assert answer["message"], answer
    # another business cannot run the plan even when the user holds it
    other, _ = await make_plan(running, [script("x", "echo\n", hosts(A))], [], biz=3,
                               name="elsewhere")
    answer = await running.wire.v3("execute_job_plan", {"bk_biz_id": 2, "job_plan_id": other})
    assert answer["code"] == 1244012
    # nothing was created by the refused calls
    async with running.server.db.connect() as conn:
        count = (await conn.execute(select(job_instances.c.id))).all()
    assert count == []


async def test_plan_launch_ignores_what_the_plan_no_longer_has(running: Running) -> None:
    """As bk-job: values for unknown variables are dropped, a required string may be empty."""
    await running.start_agents([A])
    plan_id, ids = await make_plan(running, [
        script("one", 'echo "name=[${name}]"\n', {"variable": "targets"}),
    ], [{"name": "targets", "type": 3, "required": 1},
        {"name": "name", "type": 1, "required": 1}])
    good_hosts = {"id": ids["targets"], "server": hosts(A)}
    for extra in ([good_hosts, {"id": 99, "value": "x"}, {"name": "gone", "value": "y"}],
                  [good_hosts, {"id": ids["name"], "value": ""}],
                  [good_hosts]):
        answer = await running.wire.v3("execute_job_plan", {
            "bk_biz_id": 2, "job_plan_id": plan_id, "global_var_list": extra})
        assert answer["result"], (extra, answer)
        job_id = answer["data"]["job_instance_id"]
        await running.wire.wait(job_id)
        data = await running.wire.status(job_id)
        assert data["job_instance"]["status"] == 3, data
        step = data["step_instance_list"][0]["step_instance_id"]
        assert await running.wire.logs(job_id, step, [A]) == {A: "name=[]\n"}
    # an empty required host variable is still refused
    answer = await running.wire.v3("execute_job_plan", {
        "bk_biz_id": 2, "job_plan_id": plan_id,
        "global_var_list": [{"id": ids["name"], "value": "x"}]})
    assert answer["code"] == 1244009, answer


async def test_a_variable_is_named_by_an_integer_id_or_a_text_name(running: Running) -> None:
    """JSON true or 1.5 is not the variable with id 1, nor is a number a name: launch,
    save_cron and a cron update refuse them alike, and nothing is created."""
    await running.start_agents([A])
    plan_id, ids = await make_plan(running, [
        script("one", "echo ${name}\n", hosts(A)),
    ], [{"name": "name", "type": 1, "value": "plain"}])
    assert ids["name"] == 1
    made = await running.wire.v3("save_cron", {
        "bk_biz_id": 2, "job_plan_id": plan_id, "name": "kept", "expression": "0 0 * * *"})
    assert made["result"], made
    bad_entries = [
        {"id": True, "value": "x"},
        {"id": 1.5, "value": "x"},
        {"id": "1.5", "value": "x"},
        {"id": [1], "value": "x"},
        {"name": 1, "value": "x"},
        {"name": True, "value": "x"},
        {"name": ["name"], "value": "x"},
    ]
    calls = [
        ("execute_job_plan", {}),
        ("save_cron", {"name": "c", "expression": "0 0 * * *"}),
        ("save_cron", {"id": made["data"]["id"]}),
    ]
    for entry in bad_entries:
        for name, extra in calls:
            answer = await running.wire.v3(name, {
                "bk_biz_id": 2, "job_plan_id": plan_id, "global_var_list": [entry], **extra})
            assert answer["code"] == 1241010, (name, entry, answer)
            assert "global_var_list" in answer["message"], answer
    async with running.server.db.connect() as conn:
        assert (await conn.execute(select(job_instances.c.id))).all() == []
    # 1.0 is the integer 1, as a JSON number may write it
    answer = await execute(running, plan_id, global_var_list=[{"id": 1.0, "value": "one"}])
    assert answer["result"], answer
    job_id = answer["data"]["job_instance_id"]
    await running.wire.wait(job_id)
    step = (await step_ids(running, job_id))[0]
    assert await running.wire.logs(job_id, step, [A]) == {A: "one\n"}


async def test_steps_that_run_stored_scripts(running: Running) -> None:
    """Business and public script references resolve at launch; disabled and deleted refuse."""
    await running.start_agents([A])
    wire = running.wire

    async def call(name: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await wire.v3(name, body)
        assert answer["result"], answer
        return dict(answer.get("data") or {})

    biz = {"bk_biz_id": 2}
    made = await call("create_script", {**biz, "name": "greet", "script_language": 1,
                                        "content": b64("echo business ${who}"),
                                        "version": "1"})
    await call("publish_script_version", {**biz, "script_id": made["script_id"],
                                          "script_version_id": made["id"]})
    shared = await call("create_public_script", {"name": "shared-greet", "script_language": 1,
                                                 "content": b64("echo public"), "version": "1"})
    await call("publish_public_script_version", {"script_id": shared["script_id"],
                                                 "script_version_id": shared["id"]})

    def stored(name: str, kind: int, **ref: Any) -> dict[str, Any]:
        return {"name": name, "type": 1, "script_info": {
            "script_type": kind, **ref, "account": ROOT, "server": hosts(A)}}

    plan_id, _ = await make_plan(running, [
        stored("business", 2, script_id=made["script_id"]),
        stored("public", 3, script_id=shared["script_id"]),
    ], [{"name": "who", "type": 1, "value": "friend"}])
    job_id = (await execute(running, plan_id))["data"]["job_instance_id"]
    assert (await wire.wait(job_id))["job_instance"]["status"] == 3
    steps = await step_ids(running, job_id)
    assert (await wire.logs(job_id, steps[0], [A]))[A] == "business friend\n"
    assert (await wire.logs(job_id, steps[1], [A]))[A] == "public\n"

    pinned, _ = await make_plan(running, [
        stored("pinned", 2, script_version_id=made["id"])], [], name="pinned")
    await call("disable_script_version", {**biz, "script_id": made["script_id"],
                                          "script_version_id": made["id"]})
    refused = await execute(running, pinned)
    assert refused["code"] == 1244014, refused
    await call("delete_script", {**biz, "script_id": made["script_id"]})
    gone = await execute(running, plan_id)
    assert gone["code"] == 1243001, gone


async def test_variable_values_of_a_job_without_variables(running: Running) -> None:
    await running.start_agents([A])
    job = await running.wire.run_script("echo", [A])
    await running.wire.wait(job["job_instance_id"])
    values = await running.wire.v3("get_job_instance_global_var_value", {
        "bk_biz_id": 2, "job_instance_id": job["job_instance_id"]}, method="GET")
    assert values["data"]["step_instance_var_list"] == [
        {"step_instance_id": job["step_instance_id"], "global_var_list": []}]
    missing = await running.wire.v3("get_job_instance_global_var_value", {
        "bk_biz_id": 2, "job_instance_id": 987654}, method="GET")
    assert missing["code"] == 1244006


async def test_terminating_a_job_that_was_never_started_ends_its_steps(
        running: Running) -> None:
    """A job created with start_task=false and terminated: the job, each step and each
    host say terminated; nothing is left waiting, and a late start is refused."""
    await running.start_agents([A, B])
    wire = running.wire
    plan_id, _ = await make_plan(running, [
        script("one", "echo one\n", hosts(A, B)),
        script("two", "echo two\n", hosts(A)),
    ], [])
    plan_job = (await execute(running, plan_id, start_task=False))["data"]["job_instance_id"]
    script_job = (await wire.run_script("echo later", [A], start_task=False))["job_instance_id"]
    for job_id in (plan_job, script_job):
        before = await wire.status(job_id)
        assert before["job_instance"]["status"] == 1, before
        stop = await wire.v3("operate_job_instance", {
            "bk_biz_id": 2, "job_instance_id": job_id, "operation_code": 1})
        assert stop["result"], stop
        data = await wire.wait(job_id, timeout=20)
        assert data["job_instance"]["status"] == 8, data
        assert data["job_instance"]["end_time"], data
        for step in data["step_instance_list"]:
            assert step["status"] == 8, step
            assert step["end_time"], step
            assert {r["status"] for r in step["step_ip_result_list"]} == {403}, step
            detail = await wire.v3("get_step_instance_status", {
                "bk_biz_id": 2, "job_instance_id": job_id,
                "step_instance_id": step["step_instance_id"]}, method="GET")
            assert detail["result"], detail
            assert detail["data"]["status"] == 8, detail
            groups = detail["data"]["step_result_group_list"]
            assert [g["result_type"] for g in groups] == [403], groups
        start = await wire.v3("operate_job_instance", {
            "bk_biz_id": 2, "job_instance_id": job_id, "operation_code": 2})
        # not "already started": it never ran, and never will
        assert start["code"] == 1241003, start
        assert "terminated before it started" in start["message"], start
    await asyncio.sleep(0.3)
    assert (await wire.status(script_job))["job_instance"]["status"] == 8


async def test_a_confirmation_that_meets_a_terminate_keeps_its_answer(
        running: Running) -> None:
    """A job terminated while an approver confirms: whichever the confirmation's answer
    says stays on record; an accepted confirmation is not overwritten as stopped."""
    await running.start_agents([A])
    wire = running.wire
    plan_id, _ = await make_plan(running, [
        {"name": "ok?", "type": 3, "approval_info": {"approval_user": {"user_list": ["admin"]}}},
        script("after", "echo after\n", hosts(A)),
    ], [])
    job_id = 0

    async def waiting() -> dict[str, Any] | None:
        data = await wire.status(job_id)
        return data if data["job_instance"]["status"] == 7 else None

    for _ in range(6):
        job_id = (await execute(running, plan_id))["data"]["job_instance_id"]
        data = await eventually(waiting, timeout=30)
        step_id = data["step_instance_list"][0]["step_instance_id"]
        stopped, confirmed = await asyncio.gather(
            wire.v3("operate_job_instance", {"bk_biz_id": 2, "job_instance_id": job_id,
                                             "operation_code": 1}),
            wire.v3("operate_step_instance", {"bk_biz_id": 2, "job_instance_id": job_id,
                                              "step_instance_id": step_id,
                                              "operation_code": 6}))
        assert confirmed["result"] or confirmed["code"] == 1241003, confirmed
        done = await wire.wait(job_id, timeout=15)
        statuses = [s["status"] for s in done["step_instance_list"]]
        if not confirmed["result"]:
            assert stopped["result"], stopped
            assert (done["job_instance"]["status"], statuses) == (11, [11, 1]), done
        elif stopped["result"]:
            # the next step may have begun before the terminate reached it
            assert done["job_instance"]["status"] == 11, done
            assert statuses[0] == 3 and statuses[1] in (1, 11), (confirmed, done)
        else:
            assert stopped["code"] == 1241003, stopped  # the job had already finished
