"""Job control and live output from the CLI and the SDK, and people's credentials:
``run --stream``, ``logs -f``, ``jobs``, ``terminate``, ``step``, exit codes, personal
tokens and the event stream's resume."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import httpx
from tests.integration.harness import Running, eventually
from tests.integration.test_cli_and_sdk import cli

from jobfleet.sdk import JobClient

IPS = ["127.0.9.2", "127.0.9.3"]


async def test_stream_follow_jobs_terminate_and_exit_codes(running: Running) -> None:
    await running.start_agents(IPS)
    code, out = await cli(running, "--version")
    assert code == 0 and out.startswith("jobfleet ")
    code, out = await cli(running, "run", "--stream", "--host", IPS[0], "--host", IPS[1],
                          "-c", "echo one; sleep 1; echo two")
    assert code == 0, out
    assert f"{IPS[0]}: one" in out and f"{IPS[1]}: two" in out
    code, out = await cli(running, "run", "--stream", "--host", IPS[0], "-c", "exit 3")
    assert code == 1, out

    code, out = await cli(running, "jobs", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 2
    failed = max(int(r.get("id") or r.get("job_instance_id")) for r in rows)
    code, _ = await cli(running, "status", str(failed))
    assert code == 1
    code, _ = await cli(running, "logs", str(failed))
    assert code == 1
    code, out = await cli(running, "logs", "-f", str(failed - 1))
    assert code == 0 and f"{IPS[0]}: one" in out

    job = (await running.wire.run_script("echo started; sleep 60", IPS))["job_instance_id"]
    follower = asyncio.create_task(cli(running, "logs", "-f", str(job)))
    await asyncio.sleep(2)
    code, out = await cli(running, "terminate", str(job))
    assert code == 0, out
    code, out = await asyncio.wait_for(follower, 60)
    assert code == 1 and "started" in out
    code, out = await cli(running, "step", "retry", str(job), "--json")
    assert code in (0, 1)


async def test_personal_token_and_sdk_events_resume(running: Running) -> None:
    await running.start_agents(IPS[:1])
    wire = running.wire
    assert (await wire.post("/api/jobfleet/v1/users", {"username": "dev"}))["result"]
    assert (await wire.post("/api/jobfleet/v1/users/dev/grants",
                            {"scope_type": "biz", "scope_id": "2"}))["result"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobfleet", "--server", running.url, "--bootstrap",
        str(running.data_dir / "server" / "bootstrap.json"), "admin", "user", "passwd", "dev",
        "--stdin", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ})
    out, _ = await proc.communicate(b"dev-password-1\n")
    assert proc.returncode == 0, out
    assert await running.server.people.check_password("dev", "dev-password-1")

    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as http:
        made = (await http.post("/api/jobfleet/v1/tokens", json={"expires_in": 600},
                                headers=wire.headers(bk_username="dev"))).json()
        assert made["result"], made
        bearer = {"Authorization": f"Bearer {made['data']['token']}"}
        me = (await http.get("/api/jobfleet/v1/whoami", headers=bearer)).json()
        assert me["data"]["username"] == "dev"
        bad = await http.get("/api/jobfleet/v1/whoami", headers={"Authorization": "Bearer x"})
        assert bad.json()["code"] != 0
        # the token is no administrator, whatever app it stands in for
        refused = (await http.post("/api/jobfleet/v1/users", json={"username": "x"},
                                   headers=bearer)).json()
        assert refused["code"] != 0

    job = (await wire.run_script("for i in 1 2 3; do echo line $i; done", IPS[:1]))[
        "job_instance_id"]
    await wire.wait(job)
    entries = await running.server.audit.recent(50)
    assert any(e["action"] == "create_personal_token" for e in entries)

    def events(cursor: str | None = None) -> list[dict[str, object]]:
        with JobClient(running.url, running.boot["bk_app_code"], running.boot["bk_app_secret"],
                       "admin", biz=2) as client:
            return list(client.events(job, cursor=cursor))

    every = await asyncio.to_thread(events)
    kinds = [e["event"] for e in every]
    assert kinds[0] == "status" and kinds[-1] == "end"
    text = "".join(e["data"]["content"] for e in every if e["event"] == "output")  # type: ignore[index]
    assert text == "line 1\nline 2\nline 3\n"
    # resuming from the last output's id sends no output again
    last = [e for e in every if e["event"] == "output"][-1]["id"]
    again = await asyncio.to_thread(events, str(last))
    assert not [e for e in again if e["event"] == "output"]

    os.environ.update({"JOBFLEET_SERVER": running.url,
                       "JOBFLEET_APP_CODE": running.boot["bk_app_code"],
                       "JOBFLEET_APP_SECRET": running.boot["bk_app_secret"]})
    try:
        with JobClient.from_env() as client:
            assert client.base_url == running.url
    finally:
        for key in ("JOBFLEET_SERVER", "JOBFLEET_APP_CODE", "JOBFLEET_APP_SECRET"):
            os.environ.pop(key, None)
    await eventually(lambda: asyncio.sleep(0, True))


async def test_event_stream_ids_past_the_store_are_refused(running: Running) -> None:
    """A job id or a resume cursor past what the store holds is refused with the envelope
    before the stream starts, never a bare 500 nor a stream cut short."""
    await running.start_agents(IPS[:1])
    wire = running.wire
    job = (await wire.run_script("echo hi", IPS[:1]))["job_instance_id"]
    final = await wire.wait(job)
    step = final["step_instance_list"][0]["step_instance_id"]
    host = {h.ip: h.bk_host_id for h in await running.server.inventory.list()}[IPS[0]]
    events = "/api/jobfleet/v1/jobs/{}/events"
    huge = "9" * 23
    for path, params in (
        (events.format(huge), {}),
        (events.format(job), {"hosts": "all", "cursor": f"{step}.0.{host}:{huge}"}),
        (events.format(job), {"hosts": "all", "cursor": f"{step}.0.{host}:-{huge}"}),
    ):
        resp = await wire.http.get(path, params=params, headers=wire.headers())
        answer = resp.json()
        assert (answer["result"], answer["code"]) == (False, 1241010), (path, params, answer)
    # the largest cursor the store holds still streams to the end
    resp = await wire.http.get(events.format(job), headers=wire.headers(), params={
        "hosts": "all", "cursor": f"{step}.0.{host}:{2**31 - 1}"})
    assert resp.status_code == 200 and "event: end" in resp.text, resp.text
    assert "event: output" not in resp.text
