"""A careless dangerous-statement rule cannot stall the server: a crafted script is
answered within the check's time bound while the server goes on answering others."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from tests.integration.harness import (
    Running,
    Wire,
    b64,
    free_port,
    stop_process,
    wait_healthy,
)
from tests.integration.test_dangerous_rules import run_body

from jobfleet.server import read_bootstrap
from jobfleet.store.tables import job_instances

ADMIN = "/api/jobfleet/v1"
# exponential in Python's re: the old matcher spends days on CRAFTED; the "rm " prefix
# gets the expression past the probes made at creation, as a careless rule would
CATASTROPHIC = r"^rm (a|aa)+$"
CRAFTED = "rm " + "a" * 60 + "!"
SCRIPT = f"#!/bin/bash\necho start\n{CRAFTED}\necho end\n"
# one intercept rule and eleven scan rules: 12 x 0.5 s per rule is past the 3 s a
# whole check may take, so the check lasts long enough to see the server answer others
RULES = 12
# the machine is shared: loose bounds (the unbounded check never ends)
ANSWER_WITHIN = 30.0
HEALTHZ_WITHIN = 5.0


@pytest.fixture
async def server_process(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Wire, Path]]:
    """``jobfleet server`` with its default limits, as its own process: the test's
    event loop is not the server's, so a frozen server cannot hide."""
    port = free_port()
    log = tmp_path / "server.log"
    data = tmp_path / "server"
    args = [sys.executable, "-m", "jobfleet", "server", "--data-dir", str(data),
            "--port", str(port), "--agent-port", str(free_port()),
            "--database-url", database_url, "--log-level", "warning"]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        async def ended() -> None:
            assert proc.poll() is None, log.read_text()

        # a wait for the process to listen: a loaded CI machine has taken over 60 s
        await wait_healthy(url, ended, timeout=180)
        boot = read_bootstrap(data)
        wire = Wire(url, boot["bk_app_code"], boot["bk_app_secret"], boot["admin_user"])
        try:
            yield wire, log
        finally:
            await wire.close()
    finally:
        await stop_process(proc)


async def admin(wire: Wire, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = dict((await wire.http.post(ADMIN + path, json=body, headers=wire.headers())).json())
    assert answer["result"], answer
    return answer


async def test_a_crafted_script_is_refused_in_time_and_the_server_keeps_answering(
    server_process: tuple[Wire, Path],
) -> None:
    wire, log = server_process
    # a user who may run scripts in business 2, not an administrator
    await admin(wire, "/users", {"username": "alice"})
    await admin(wire, "/users/alice/grants", {"scope_type": "biz", "scope_id": "2"})
    alice = wire.headers(bk_username="alice")
    ids = []
    for n in range(RULES):
        made = await wire.v3("create_dangerous_rule", {
            "expression": CATASTROPHIC, "script_language_list": [1],
            "action": 2 if n == 0 else 1, "description": f"careless {n}"})
        assert made["result"], made
        ids.append(made["data"]["id"])

    async with httpx.AsyncClient(base_url=wire.base, trust_env=False, timeout=60) as http:
        latencies: list[float] = []
        done = asyncio.Event()

        async def poll() -> None:
            while not done.is_set():
                begun = time.monotonic()
                assert (await http.get("/healthz")).status_code == 200
                latencies.append(time.monotonic() - begun)
                await asyncio.sleep(0.05)

        poller = asyncio.create_task(poll())
        await asyncio.sleep(0.2)
        begun = time.monotonic()
        resp = await http.post("/api/bk-job/prod/api/v3/fast_execute_script",
                               json=run_body(SCRIPT), headers=alice)
        took = time.monotonic() - begun
        # what the server answered while the check ran (and listed rules: a real call)
        during = len(latencies)
        listed = await wire.v3("get_dangerous_rule_list", {})
        done.set()
        await poller

    answer = resp.json()
    assert resp.status_code == 200 and answer["result"] is False, answer
    assert answer["code"] == 1244019, answer
    message = answer["message"]
    assert f"(id {ids[0]})" in message and "line 3" in message, message
    assert "took too long" in message and "careless 0" in message, message
    assert took < ANSWER_WITHIN, took
    assert listed["result"] and len(listed["data"]) == RULES
    # the server answered /healthz while the check was under way, and promptly
    assert during >= 3, (during, took)
    assert max(latencies) < HEALTHZ_WITHIN, latencies

    # check_script (bk-job) and the console's "try it" box report every rule's timeout
    check = await wire.http.post("/api/bk-job/prod/api/v3/check_script", headers=alice,
                                 json={"script_language": 1, "content": b64(SCRIPT)})
    found = check.json()
    assert found["result"], found
    assert [(f["line"], f["timed_out"], f["match_content"]) for f in found["data"]] == [
        (3, True, "")] * RULES
    assert [f["action"] for f in found["data"]] == [2] + [1] * (RULES - 1)
    tried = await admin(wire, "/dangerous-rules/check",
                        {"script_language": 1, "content": b64(SCRIPT)})
    assert tried["data"]["blocked"] is True
    assert [f["rule_id"] for f in tried["data"]["findings"]] == ids
    assert all(f["timed_out"] for f in tried["data"]["findings"])

    # a scan rule out of time is a logged warning, not a silent pass
    text = log.read_text()
    for rule_id in ids:
        assert f"dangerous_rule_timeout rule={rule_id} " in text, text[-2000:]
    assert CRAFTED not in text

    # a usual script runs the usual check: nothing found, no time lost
    clean = await wire.http.post("/api/bk-job/prod/api/v3/check_script", headers=alice,
                                 json={"script_language": 1, "content": b64("rm -rf /tmp/x\n")})
    assert clean.json()["data"] == []


async def test_creating_an_expression_that_backtracks_for_ever_is_refused(
    running: Running,
) -> None:
    wire = running.wire
    made = await wire.v3("create_dangerous_rule", {
        "expression": r"^(a|aa)+$", "script_language_list": [1], "action": 2})
    assert made["code"] == 1241010 and "[expression]" in made["message"], made
    assert "backtracks" in made["message"], made
    rule = await wire.v3("create_dangerous_rule", {
        "expression": r"rm\s+-rf", "script_language_list": [1], "action": 2})
    assert rule["result"], rule
    changed = await wire.v3("update_dangerous_rule", {"id": rule["data"]["id"],
                                                      "expression": r"^(x|xx)+$"})
    assert changed["code"] == 1241010 and "backtracks" in changed["message"], changed
    kept = await wire.v3("get_dangerous_rule_list", {})
    assert [r["expression"] for r in kept["data"]] == [r"rm\s+-rf"]
    # syntax errors answer as before
    broken = await wire.v3("create_dangerous_rule", {
        "expression": "rm (", "script_language_list": [1], "action": 2})
    assert broken["code"] == 1241010 and "not a valid regular expression" in broken["message"]


async def test_a_flood_of_slow_checks_is_answered_busy_not_queued(running: Running) -> None:
    """Checks that need the store's two threads wait there at most eight at a time: a
    flood of crafted launches beyond that is answered busy (1249429) at once, the rest
    are refused by the rule, nothing is a 500, and the slots come back afterwards."""
    wire = running.wire
    made = await wire.v3("create_dangerous_rule", {
        "expression": CATASTROPHIC, "script_language_list": [1], "action": 2})
    assert made["result"], made
    flood = 40

    async def launch() -> tuple[int, dict[str, Any]]:
        resp = await wire.http.post("/api/bk-job/prod/api/v3/fast_execute_script",
                                    json=run_body(SCRIPT), headers=wire.headers(),
                                    timeout=120)
        return resp.status_code, dict(resp.json())

    answers = await asyncio.gather(*(launch() for _ in range(flood)))
    busy = [a for status, a in answers if a["code"] == 1249429 and status == 429]
    refused = [a for status, a in answers if a["code"] == 1244019 and status == 200]
    assert len(busy) + len(refused) == flood, [(s, a["code"]) for s, a in answers]
    assert busy and len(refused) >= 8, (len(busy), len(refused))
    assert all(a["result"] is False and "busy" in a["message"] for a in busy), busy[0]
    async with running.server.db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(job_instances)))\
            .scalar_one() == 0
    # the slots are free again: the next crafted launch is checked, not turned away
    again = await wire.v3("fast_execute_script", run_body(SCRIPT))
    assert again["code"] == 1244019, again
