"""The CLI against a real server and real agents: targeting by dynamic group, topology
node and label; full-width output in pipes; personal tokens; step operations; and the
async client's live events."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.harness import Running, eventually, run_server
from tests.integration.test_plans import execute, make_plan, script

from jobfleet.sdk import AsyncJobClient, JobApiError

# a client of the API, whose own tests run on every backend
pytestmark = pytest.mark.one_backend

WEB, DB, DEV = "127.0.12.2", "127.0.12.3", "127.0.12.4"
LABELS = {
    WEB: {"labels": {"env": "prod", "role": "web"}},
    DB: {"labels": {"env": "prod", "role": "db"}},
    DEV: {"labels": {"env": "dev", "role": "web"}},
}
LONG = "x" * 150 + "y" * 150


async def cli(
    running: Running, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """``jobfleet …`` as a child process whose stdout is a pipe, in an 80-column shell."""
    boot = running.data_dir / "server" / "bootstrap.json"
    command = [sys.executable, "-m", "jobfleet", "--server", running.url, "--bootstrap", str(boot)]
    env = {**os.environ, "COLUMNS": "80", **(env or {})}
    done = await asyncio.to_thread(
        subprocess.run,
        [*command, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    return done.returncode, done.stdout, done.stderr


def client(running: Running) -> AsyncJobClient:
    boot = running.boot
    return AsyncJobClient(running.url, boot["bk_app_code"], boot["bk_app_secret"], "admin", biz=2)


def targeted(out: str) -> set[str]:
    return {h["ip"] for h in json.loads(out)["hosts"]}


async def test_targets_by_group_module_set_and_label(running: Running, tmp_path: Path) -> None:
    await running.start_agents([WEB, DB, DEV], settings_of=LABELS)
    async with client(running) as c:
        ids = {h["ip"]: int(h["bk_host_id"]) for h in await c.list_hosts(bk_biz_id=2)}
        web = await c.create_set("web")
        nginx = await c.create_module(web["id"], "nginx")
        web_app = await c.create_module(web["id"], "app")
        db = await c.create_set("db")
        db_app = await c.create_module(db["id"], "app")
        await c.move_hosts([ids[WEB]], [nginx["id"], web_app["id"]])
        await c.move_hosts([ids[DB]], [db_app["id"]])
        group = await c.create_dynamic_group(
            "databases", [{"field": "labels.role", "op": "equal", "value": "db"}]
        )

    run = ("run", "-c", "echo hi", "--json")
    cases: list[tuple[tuple[str, ...], set[str]]] = [
        (("--group", "databases"), {DB}),
        (("--group", str(group["id"]), "--host", DEV), {DB, DEV}),
        (("--module", "nginx"), {WEB}),
        (("--module", "db/app", "--host-id", str(ids[DEV])), {DB, DEV}),
        (("--module", str(db_app["id"])), {DB}),
        (("--set", "web"), {WEB}),
        (("--set", "db", "--set", "web"), {WEB, DB}),
        (("--label", "env=prod"), {WEB, DB}),
        (("--label", "env=prod", "--label", "role=web"), {WEB}),
        (("--label", "role=web", "--group", "databases"), {WEB, DB, DEV}),
    ]
    for options, expected in cases:
        code, out, err = await cli(running, *run, *options)
        assert code == 0, (options, out, err)
        assert targeted(out) == expected, options

    refusals = [
        (("--module", "app"), "module 'app' is ambiguous in business 2"),
        (("--group", "nope"), "no dynamic group 'nope' in business 2"),
        (("--set", "nope"), "no set 'nope' in business 2"),
        (("--label", "env=staging"), "no host of business 2 has label env=staging"),
    ]
    for options, message in refusals:
        code, out, err = await cli(running, *run, *options)
        assert code == 2 and message in err, (options, out, err)
        assert "Traceback" not in err

    # file push and fetch take the same options
    payload = tmp_path / "payload.txt"
    payload.write_text("to the web hosts\n")
    dest = tmp_path / "dest"
    code, out, err = await cli(
        running, "push", str(payload), "--to", str(dest), "--label", "role=web", "--json"
    )
    assert code == 0, (out, err)
    assert targeted(out) == {WEB, DEV}
    assert (dest / "payload.txt").read_text() == "to the web hosts\n"
    fetched = tmp_path / "fetched"
    code, out, err = await cli(
        running, "fetch", str(dest / "payload.txt"), "--module", "nginx", "--to", str(fetched),
        "--json",
    )  # fmt: skip
    assert code == 0, (out, err)
    assert {f["ip"] for f in json.loads(out)["files"]} == {WEB}


async def test_piped_output_is_never_cut(running: Running) -> None:
    await running.start_agents([WEB])
    line_cmd = f"echo {LONG}"
    code, out, err = await cli(running, "run", "--host", WEB, "-c", line_cmd)
    assert code == 0, (out, err)
    assert any(line.rstrip().endswith(LONG) for line in out.splitlines()), out
    code, out, err = await cli(running, "run", "--stream", "--host", WEB, "-c", line_cmd)
    assert code == 0, (out, err)
    assert f"{WEB}: {LONG}" in out.splitlines()
    code, out, _ = await cli(running, "jobs", "--json")
    job = max(int(r["job_instance_id"]) for r in json.loads(out))
    code, out, _ = await cli(running, "logs", str(job))
    assert code == 0 and LONG in out.splitlines()[-1], out
    code, out, _ = await cli(running, "status", str(job))
    assert code == 0 and any(line.rstrip().endswith(LONG) for line in out.splitlines())
    code, out, _ = await cli(running, "jobs", "--status", "success", "--name", "")
    assert code == 0 and str(job) in out


async def test_personal_tokens_from_the_cli(running: Running) -> None:
    await running.start_agents([WEB])
    assert (await running.wire.post("/api/jobfleet/v1/users", {"username": "dev"}))["result"]
    grant = {"scope_type": "biz", "scope_id": "2"}
    assert (await running.wire.post("/api/jobfleet/v1/users/dev/grants", grant))["result"]
    code, secret, err = await cli(
        running, "--user", "dev", "token", "create", "--ttl", "2h", "--name", "laptop"
    )
    assert code == 0, err
    secret = secret.strip()
    # the token stands in for app credentials, in the CLI and in the SDK
    as_dev = {"JOBFLEET_TOKEN": secret}
    code, out, err = await cli(running, "whoami", "--json", env=as_dev)
    assert code == 0 and json.loads(out)["username"] == "dev", (out, err)
    code, out, err = await cli(running, "run", "-H", WEB, "-c", "echo via-token", env=as_dev)
    assert code == 0 and "via-token" in out, (out, err)
    async with AsyncJobClient.with_token(running.url, secret, biz=2) as c:
        assert (await c.whoami())["username"] == "dev"
        assert [t["note"] for t in await c.list_personal_tokens()] == ["laptop"]

    code, secret, err = await cli(running, "token", "create", "--ttl", "2h", "--name", "ci")
    assert code == 0, err
    secret = secret.strip()
    assert secret.startswith("jfp_") and "shown only now" in err
    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as http:
        bearer = {"Authorization": f"Bearer {secret}"}
        me = (await http.get("/api/jobfleet/v1/whoami", headers=bearer)).json()
        assert me["data"]["username"] == "admin"
        code, out, _ = await cli(running, "token", "list", "--json")
        tokens = json.loads(out)
        assert code == 0 and [t["note"] for t in tokens] == ["ci"]
        assert secret not in out
        code, out, _ = await cli(running, "token", "list")
        assert code == 0 and "ci" in out and secret not in out
        code, out, _ = await cli(running, "token", "revoke", str(tokens[0]["id"]))
        assert code == 0 and "revoked" in out
        refused = (await http.get("/api/jobfleet/v1/whoami", headers=bearer)).json()
        assert refused["code"] != 0
    code, out, err = await cli(running, "token", "revoke", "99999")
    assert code == 2 and "error" in err and "Traceback" not in err
    code, out, err = await cli(running, "token", "create", "--ttl", "2y")
    assert code == 2


async def test_an_administrator_revokes_another_users_tokens(running: Running) -> None:
    wire = running.wire
    assert (await wire.post("/api/jobfleet/v1/users", {"username": "leaver"}))["result"]
    secrets = []
    for name in ("laptop", "ci", "spare"):
        code, secret, err = await cli(
            running, "--user", "leaver", "token", "create", "--ttl", "2h", "--name", name
        )
        assert code == 0, err
        secrets.append(secret.strip())
    laptop, ci, spare = secrets
    code, out, err = await cli(running, "admin", "user", "tokens", "leaver", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [t["note"] for t in listed] == ["laptop", "ci", "spare"]
    assert not any(secret in out for secret in secrets)
    code, out, err = await cli(running, "admin", "user", "tokens", "leaver")
    assert code == 0 and "laptop" in out and laptop not in out, (out, err)

    async def works(secret: str) -> bool:
        async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as http:
            me = await http.get(
                "/api/jobfleet/v1/whoami", headers={"Authorization": f"Bearer {secret}"}
            )
        return bool(me.json()["result"])

    # the user cannot revoke another's token through its own route: not theirs
    code, out, err = await cli(running, "token", "revoke", str(listed[0]["id"]))
    assert code == 2 and await works(laptop)
    code, out, err = await cli(
        running, "admin", "user", "revoke-token", "leaver", str(listed[0]["id"])
    )
    assert code == 0 and "revoked token" in out, (out, err)
    assert not await works(laptop) and await works(ci)
    # someone else's token id under this user's name is not found, and nothing is revoked
    code, out, err = await cli(
        running, "admin", "user", "revoke-token", "admin", str(listed[1]["id"])
    )
    assert code == 2 and "does not exist" in err and "Traceback" not in err, err
    code, out, err = await cli(running, "admin", "user", "revoke-token", "leaver")
    assert code == 2 and "--all" in err, err
    # a user who is not an administrator may not
    assert (await wire.post("/api/jobfleet/v1/users", {"username": "peer"}))["result"]
    async with AsyncJobClient(running.url, running.boot["bk_app_code"],
                              running.boot["bk_app_secret"], "peer") as peer:
        with pytest.raises(JobApiError, match="not an administrator"):
            await peer.revoke_user_tokens("leaver")
    assert await works(ci)
    async with client(running) as c:
        assert [t["note"] for t in await c.list_user_tokens("leaver")] == ["ci", "spare"]
        assert await c.revoke_user_tokens("leaver") == {"username": "leaver", "revoked": 2}
        assert await c.list_user_tokens("leaver") == []
    assert not await works(ci) and not await works(spare)
    entries = (await wire.get("/api/jobfleet/v1/audit/entries", {"username": "admin"}))
    actions = {(e["action"], e["resource_id"]) for e in entries["data"]["data"]}
    assert ("revoke_user_token", str(listed[0]["id"])) in actions, actions
    assert ("revoke_user_tokens", "leaver") in actions, actions


async def job_status(running: Running, job: int, wanted: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        data = await running.wire.status(job)
        return data if data["job_instance"]["status"] == wanted else None

    return dict(await eventually(check, timeout=60, interval=0.2))


async def settled(running: Running, job: int, wanted: int, *, execute_count: int) -> None:
    """The job is in ``wanted`` after its first step ran ``execute_count`` more times."""

    async def check() -> bool:
        data = await running.wire.status(job)
        first = data["step_instance_list"][0]
        return bool(
            data["job_instance"]["status"] == wanted
            and first.get("execute_count") == execute_count
            and data["step_instance_list"][0]["status"] != 2
        )

    await eventually(check, timeout=60, interval=0.2)


async def started(running: Running, job: int) -> None:
    """The first step's script has printed: its processes are up. (The agents run in
    this process: a child started while one forks a script could land in that
    script's cgroup and be killed with it.)"""
    data = await running.wire.status(job)
    step = int(data["step_instance_list"][0]["step_instance_id"])

    async def check() -> bool:
        logs = await running.wire.logs(job, step, [WEB])
        return "started" in (logs.get(WEB) or "")

    await eventually(check, timeout=60, interval=0.2)


async def test_step_operations_end_to_end(running: Running, tmp_path: Path) -> None:
    await running.start_agents([WEB])
    target = {"ip_list": [{"bk_cloud_id": 0, "ip": WEB}]}
    mark = tmp_path / "mark"
    flaky = f"if [ -e {mark} ]; then echo second try; else touch {mark}; exit 3; fi\n"
    confirm = {
        "name": "go on?",
        "type": 3,
        "approval_info": {"approval_user": {"user_list": ["admin"]}, "approval_message": "ok?"},
    }
    plan, _ = await make_plan(
        running, [script("flaky", flaky, target), confirm, script("after", "echo after\n", target)],
        [], name="flaky",
    )  # fmt: skip

    # retry the failed step, then confirm the manual one
    job = int((await execute(running, plan))["data"]["job_instance_id"])
    await job_status(running, job, 4)
    code, out, err = await cli(running, "status", str(job))
    assert code == 1
    code, out, err = await cli(running, "step", "retry", str(job))
    assert code == 0, (out, err)
    await settled(running, job, 7, execute_count=1)
    code, out, err = await cli(running, "step", "confirm", str(job), "--json")
    assert code == 0, (out, err)
    done = await job_status(running, job, 3)
    assert [s["status"] for s in done["step_instance_list"]] == [3, 3, 3]
    code, out, err = await cli(running, "logs", str(job), "--json")
    assert code == 0 and json.loads(out)["hosts"][0]["log"] == "after\n"

    # retry-all runs the failed step again; ignore goes on past it
    plan, _ = await make_plan(
        running, [script("fails", "exit 3\n", target), script("two", "echo two\n", target)],
        [], name="fails",
    )  # fmt: skip
    job = int((await execute(running, plan))["data"]["job_instance_id"])
    await job_status(running, job, 4)
    code, out, err = await cli(running, "step", "retry-all", str(job))
    assert code == 0, (out, err)
    await settled(running, job, 4, execute_count=1)
    code, out, err = await cli(running, "step", "ignore", str(job))
    assert code == 0, (out, err)
    done = await job_status(running, job, 3)
    assert [s["status"] for s in done["step_instance_list"]] == [6, 3]
    # an operation the step is not in a state for is refused with the server's reason
    code, out, err = await cli(running, "step", "next", str(job))
    assert code == 2 and "error" in err and "Traceback" not in err

    # terminate a running step, then go on to the next one
    plan, _ = await make_plan(
        running,
        [script("slow", "echo started; sleep 60\n", target), script("two", "echo two\n", target)],
        [], name="slow",
    )  # fmt: skip
    job = int((await execute(running, plan))["data"]["job_instance_id"])
    await job_status(running, job, 2)
    await started(running, job)
    code, out, err = await cli(running, "terminate", str(job))
    assert code == 0, (out, err)
    stopped = await eventually(lambda: _finished(running, job), timeout=60, interval=0.2)
    assert stopped["step_instance_list"][0]["status"] == 11, stopped
    code, out, err = await cli(running, "step", "next", str(job))
    assert code == 0, (out, err)
    done = await job_status(running, job, 3)
    assert [s["status"] for s in done["step_instance_list"]] == [5, 3]

    # skip ends the wait for hosts that do not stop; a step that is not stopping refuses it
    code, out, err = await cli(running, "step", "skip", str(job))
    assert code == 2 and "is not being terminated" in err, (out, err)


async def _finished(running: Running, job: int) -> dict[str, Any] | None:
    data = await running.wire.status(job)
    return data if data.get("finished") else None


async def test_async_events_resume_since(running: Running) -> None:
    await running.start_agents([WEB])
    job = (
        await running.wire.run_script("for i in 1 2 3; do echo line $i; sleep 0.3; done", [WEB])
    )["job_instance_id"]
    async with client(running) as c:
        every = [e async for e in c.events(job)]
        kinds = [e["event"] for e in every]
        assert kinds[0] == "status" and kinds[-1] == "end"
        outputs = [e for e in every if e["event"] == "output"]
        assert "".join(e["data"]["content"] for e in outputs) == "line 1\nline 2\nline 3\n"
        first = outputs[0]
        rest = [e async for e in c.events(job, since=first["id"])]
    text = "".join(e["data"]["content"] for e in rest if e["event"] == "output")
    assert "line 1\n" + text == "line 1\nline 2\nline 3\n" or first["data"]["content"] + text == (
        "line 1\nline 2\nline 3\n"
    )
    code, out, _ = await cli(running, "logs", "-f", str(job), "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and lines[-1]["event"] == "end"


async def test_jobs_filters_on_a_real_history(running: Running) -> None:
    await running.start_agents([WEB])
    code, _, _ = await cli(running, "run", "-H", WEB, "-c", "true", "--name", "good-one")
    assert code == 0
    code, _, _ = await cli(running, "run", "-H", WEB, "-c", "exit 4", "--name", "bad-one")
    assert code == 1

    async def names(*filters: str) -> list[str]:
        code, out, err = await cli(running, "jobs", "--json", *filters)
        assert code == 0, (out, err)
        return sorted(r["name"] for r in json.loads(out))

    assert await names() == ["bad-one", "good-one"]
    assert await names("--status", "failed") == ["bad-one"]
    assert await names("--status", "3") == ["good-one"]
    assert await names("--name", "good") == ["good-one"]
    assert await names("--user", "admin", "--launch-mode", "api") == ["bad-one", "good-one"]
    assert await names("--user", "nobody") == []
    assert await names("--launch-mode", "cron") == []
    assert await names("--ip", WEB, "--since", "1h") == ["bad-one", "good-one"]
    assert await names("--until", "2h") == []
    code, out, err = await cli(running, "jobs", "--since", "40d")
    assert code == 2 and "30 days" in err, (out, err)
    code, out, _ = await cli(running, "jobs", "--status", "failed")
    assert code == 0 and "bad-one" in out and "failed" in out and "good-one" not in out


async def test_step_skip_ends_a_termination_an_agent_cannot_answer(
    tmp_path: Path, database_url: str
) -> None:
    """An agent frozen (SIGSTOP) while its script runs cannot stop it: ``terminate``
    leaves the step stopping, and ``step skip`` stops waiting for it."""
    # the tests' usual 5 s wait for an agent to confirm a termination, and their 2 s
    # heartbeat (the server ends a connection silent for two), each end the termination
    # by themselves: on a loaded machine before the skip is sent
    async with run_server(
        tmp_path, database_url, engine={"terminate_wait": 120.0}, server={"heartbeat": 120.0}
    ) as running:
        await _skip_a_termination(running, tmp_path)


async def _skip_a_termination(running: Running, tmp_path: Path) -> None:
    ip = "127.0.12.9"
    agent = subprocess.Popen(
        [sys.executable, "-m", "jobfleet", "agent", "--server", running.url, "--state-dir",
         str(tmp_path / "agent"), "--ip", ip, "--log-level", "warning"],
        env={**os.environ, "JOBFLEET_ENROLL_TOKEN": running.boot["enroll_token"]},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        async def alive() -> bool:
            return any(h.ip == ip and h.alive for h in await running.server.inventory.list())

        await eventually(alive, timeout=60)
        target = {"ip_list": [{"bk_cloud_id": 0, "ip": ip}]}
        plan, _ = await make_plan(
            running,
            [script("slow", "echo started; sleep 60\n", target), script("two", "true\n", target)],
            [], name="frozen",
        )  # fmt: skip
        job = int((await execute(running, plan))["data"]["job_instance_id"])
        await job_status(running, job, 2)
        step = int((await running.wire.status(job))["step_instance_list"][0]["step_instance_id"])

        async def printed() -> bool:
            return "started" in ((await running.wire.logs(job, step, [ip])).get(ip) or "")

        await eventually(printed, timeout=60, interval=0.2)
        agent.send_signal(signal.SIGSTOP)
        code, out, err = await cli(running, "terminate", str(job))
        assert code == 0, (out, err)

        async def stopping() -> bool:
            data = await running.wire.status(job)
            return bool(data["step_instance_list"][0]["status"] == 10)

        await eventually(stopping, timeout=30, interval=0.2)
        code, out, err = await cli(running, "step", "skip", str(job))
        assert code == 0, (out, err)
        done = await eventually(lambda: _finished(running, job), timeout=60, interval=0.2)
        assert done["step_instance_list"][0]["status"] == 11, done
        hosts = done["step_instance_list"][0]["step_ip_result_list"]
        assert [h["status"] for h in hosts] == [404], hosts
    finally:
        agent.send_signal(signal.SIGCONT)
        agent.terminate()
        try:
            await asyncio.to_thread(agent.wait, 20)
        except subprocess.TimeoutExpired:
            agent.kill()
            await asyncio.to_thread(agent.wait)
