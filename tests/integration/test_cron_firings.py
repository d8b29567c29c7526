"""A cron's history of firings through ``GET /api/jobfleet/v1/crons/{id}/firings``:
the firings the scheduler wrote, newest first, with the jobs they started; the scope
rules and bad input answered with the envelope."""

from __future__ import annotations

import time
from pathlib import Path

from tests.integration.harness import eventually, run_server
from tests.integration.test_cron import BIZ, FAST, A, make_plan, saved, set_status

V1 = "/api/jobfleet/v1"


async def test_the_history_of_a_cron_firing_every_minute(tmp_path: Path,
                                                         database_url: str) -> None:
    async with run_server(tmp_path, database_url, engine=FAST) as running:
        await running.start_agents([A])
        server, wire = running.server, running.wire
        plan_id = await make_plan(server.db, server.cipher)
        cron = await saved(wire, name="every minute", job_plan_id=plan_id,
                           expression="* * * * *")
        path = f"{V1}/crons/{cron['id']}/firings"
        empty = await wire.get(path, BIZ)
        assert empty["result"] and empty["data"] == {
            "start": 0, "length": 20, "total": 0, "data": []}, empty
        assert (await set_status(wire, cron["id"], 1))["result"]

        async def two() -> list[dict[str, object]] | None:
            data = (await wire.get(path, BIZ))["data"]
            return data["data"] if data["total"] >= 2 else None
        firings = await eventually(two, timeout=20)
        assert (await set_status(wire, cron["id"], 2))["result"]
        newest, older = firings[0], firings[1]
        assert int(newest["slot"]) > int(older["slot"])  # newest first
        assert newest["outcome"] == "fired" and newest["job_instance_id"]
        assert newest["cron_id"] == cron["id"]
        # slots are on the cron clock, slot_time on the wall clock, near when it was handled
        assert abs(int(newest["slot_time"]) - int(newest["handled_time"])) <= 60
        assert abs(int(newest["handled_time"]) - time.time()) < 600
        final = await wire.wait(int(str(newest["job_instance_id"])))
        answer = await wire.get(path, {**BIZ, "start": 0, "length": 1000})
        row = next(f for f in answer["data"]["data"]
                   if f["job_instance_id"] == newest["job_instance_id"])
        assert row["job_status"] == final["job_instance"]["status"] == 3
        page = await wire.get(path, {**BIZ, "start": 1, "length": 1})
        assert page["data"]["start"] == 1 and len(page["data"]["data"]) == 1
        assert page["data"]["data"][0]["slot"] == answer["data"]["data"][1]["slot"]
        # the bk_biz_id form of the scope works too
        assert (await wire.get(path, {"bk_biz_id": 2}))["data"]["total"] >= 2


async def test_scope_and_bad_input(tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path, database_url) as running:
        server, wire = running.server, running.wire
        plan_id = await make_plan(server.db, server.cipher)
        cron = await saved(wire, name="nightly", job_plan_id=plan_id, expression="0 2 * * *")
        path = f"{V1}/crons/{cron['id']}/firings"
        # a cron of another business does not exist there
        assert (await wire.post(f"{V1}/businesses", {"bk_biz_id": 3, "name": "three"}))["result"]
        other = await wire.get(path, {"bk_scope_type": "biz", "bk_scope_id": "3"})
        assert other["code"] == 1245001, other
        unknown = await wire.get(f"{V1}/crons/999999/firings", BIZ)
        assert unknown["code"] == 1245001, unknown
        for bad_id in ("abc", "-1", "0", "9" * 40):
            resp = await wire.http.get(f"{V1}/crons/{bad_id}/firings", params=BIZ,
                                       headers=wire.headers())
            assert resp.status_code < 500 and resp.json()["code"] != 0, (bad_id, resp.text)
        for bad in ({"length": 5000}, {"start": -1}, {"length": "x"}):
            answer = await wire.get(path, {**BIZ, **bad})
            assert answer["code"] != 0 and not answer["result"], (bad, answer)
        missing = await wire.get(path, {})
        assert missing["code"] != 0, missing
        # a user who does not hold the business
        assert (await wire.post(f"{V1}/users", {"username": "stranger"}))["result"]
        denied = await wire.get(path, BIZ, headers=wire.headers(bk_username="stranger"))
        assert denied["code"] == 9900403, denied
