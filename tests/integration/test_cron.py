"""Crons through the bk-job v3 routes, and the scheduler that fires them.

The servers here run the cron clock 60 times faster than the wall clock, so a
``* * * * *`` cron fires every second.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import func, insert, select, update
from tests.integration.harness import (
    Proc,
    Running,
    Wire,
    eventually,
    free_port,
    run_server,
    wait_healthy,
)

from jobfleet.domain.plans import parse_steps
from jobfleet.domain.variables import parse_definitions
from jobfleet.server import read_bootstrap
from jobfleet.store.database import Database, now_ms
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import (
    audit_log,
    businesses,
    cron_firings,
    crons,
    job_instances,
    job_plans,
    job_templates,
)
from jobfleet.store.templates import seal_variables

A = "127.0.0.91"
FAST = {"cron_time_scale": 60}
BIZ = {"bk_scope_type": "biz", "bk_scope_id": "2"}
GREET = 'echo "greeting=$greeting token=${#token}"\n'


async def make_plan(db: Database, cipher: Cipher, *, biz: int = 2, name: str = "plan",
                    ip: str = A, content: str = GREET) -> int:
    """A template and a plan of one script step with two variables, written to the store."""
    defs = parse_definitions([
        {"name": "greeting", "type": 1, "value": "from-plan"},
        {"name": "token", "type": 4, "value": "plan-token"},
        {"name": "targets", "type": 3},
        {"name": "items", "type": 6, "value": "(a b)"},
    ])
    for i, var in enumerate(defs, start=1):
        var.id = i
    steps = parse_steps([{"name": "greet", "type": 1, "script_info": {
        "script_type": 1, "script_content": content, "script_language": 1,
        "account": {"alias": "root"},
        "server": {"ip_list": [{"bk_cloud_id": 0, "ip": ip}]}}}], defs)
    steps[0]["id"] = 1
    now = now_ms()
    common = {"bk_biz_id": biz, "description": "", "steps": steps,
              "variables": seal_variables(defs, cipher), "creator": "admin",
              "create_time": now, "last_modify_user": "admin", "last_modify_time": now}
    async with db.begin() as conn:
        res = await conn.execute(insert(job_templates).values(
            name=f"{name}-template", version=1, next_step_id=2, next_variable_id=len(defs) + 1,
            **common))
        res = await conn.execute(insert(job_plans).values(
            name=name, template_id=res.inserted_primary_key[0], template_version=1,
            **{**common, "steps": [{**s, "enabled": True} for s in steps]}))
        return int(res.inserted_primary_key[0])


async def save(wire: Wire, **body: Any) -> dict[str, Any]:
    return await wire.v3("save_cron", {**BIZ, **body})


async def saved(wire: Wire, **body: Any) -> dict[str, Any]:
    answer = await save(wire, **body)
    assert answer["result"], answer
    return dict(answer["data"])


async def set_status(wire: Wire, cron_id: int, status: int) -> dict[str, Any]:
    return await wire.v3("update_cron_status", {**BIZ, "id": cron_id, "status": status})


async def cron_jobs(wire: Wire, cron_id: int) -> list[dict[str, Any]]:
    answer = await wire.v3("get_job_instance_list", {
        "bk_biz_id": 2, "job_cron_id": cron_id, "create_time_start": now_ms() - 600_000,
        "create_time_end": now_ms() + 60_000, "length": 1000}, method="GET")
    assert answer["result"], answer
    return list(answer["data"]["data"])


async def firings(db: Database, cron_id: int) -> list[Any]:
    async with db.connect() as conn:
        rows = await conn.execute(select(cron_firings).where(cron_firings.c.cron_id == cron_id)
                                  .order_by(cron_firings.c.slot))
        return list(rows.all())


async def test_cron_fires_the_plan_with_its_variables(tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path, database_url, engine=FAST) as running:
        await running.start_agents([A])
        server, wire = running.server, running.wire
        plan_id = await make_plan(server.db, server.cipher)
        cron = await saved(wire, name="every minute", job_plan_id=plan_id,
                           expression="* * * * *", global_var_list=[
                               {"name": "greeting", "value": "from-cron"},
                               {"id": 2, "value": "cron-token-1234"}])
        cron_id = cron["id"]
        assert cron["status"] == 2 and cron["expression"] == "* * * * *"
        assert cron["execute_time_zone"] == "UTC" and "execute_time" not in cron
        assert cron["global_var_list"] == [
            {"id": 1, "name": "greeting", "type": 1, "value": "from-cron", "server": None},
            {"id": 2, "name": "token", "type": 4, "value": "******", "server": None}]
        assert "cron-token-1234" not in json.dumps(cron)
        async with server.db.connect() as conn:
            stored = (await conn.execute(select(crons.c.variables)
                                         .where(crons.c.id == cron_id))).scalar_one()
        assert stored[1]["value"].startswith("enc:v1:")
        # a new cron is paused: nothing fires
        await asyncio.sleep(2.2)
        assert await cron_jobs(wire, cron_id) == []

        started = await set_status(wire, cron_id, 1)
        assert started["result"], started
        assert started["data"]["id"] == cron_id
        assert {k for k, v in started["data"].items() if v is not None} == {"id"}

        async def two_jobs() -> list[dict[str, Any]] | None:
            jobs = await cron_jobs(wire, cron_id)
            return jobs if len(jobs) >= 2 else None
        jobs = await eventually(two_jobs, timeout=10)
        assert {(j["launch_mode"], j["job_plan_id"], j["type"]) for j in jobs} == {(3, plan_id, 0)}
        assert {j["operator"] for j in jobs} == {"admin"}
        job_id = jobs[-1]["job_instance_id"]
        status = await wire.wait(job_id)
        assert status["job_instance"]["status"] == 3, status
        step_id = status["step_instance_list"][0]["step_instance_id"]
        logs = await wire.logs(job_id, step_id, [A])
        assert logs[A] == "greeting=from-cron token=15\n"

        paused = await set_status(wire, cron_id, 2)
        assert paused["result"], paused
        await asyncio.sleep(0.5)
        count = len(await cron_jobs(wire, cron_id))
        await asyncio.sleep(2.2)
        assert len(await cron_jobs(wire, cron_id)) == count
        rows = await firings(server.db, cron_id)
        fired = [r for r in rows if r.outcome == "fired"]
        assert len(fired) == count
        assert sorted(r.job_instance_id for r in fired) == sorted(
            j["job_instance_id"] for j in await cron_jobs(wire, cron_id))
        # one cron minute apart: the clock runs 60 times faster, so a scheduler held up
        # for a wall-clock second (a loaded machine) misses a slot, which is then
        # recorded as skipped for the later one, never lost without a trace
        skipped = {r.slot for r in rows if r.outcome == "skipped"}
        for a, b in itertools.pairwise(fired):
            assert b.slot > a.slot and (b.slot - a.slot) % 60 == 0, (a.slot, b.slot)
            if b.slot - a.slot > 60:
                assert a.slot + 60 in skipped, (a.slot, b.slot, sorted(skipped))
        detail = await wire.v3("get_cron_detail", {**BIZ, "id": cron_id}, method="GET")
        assert detail["data"]["status"] == 2


async def test_one_shot_fires_once(tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path, database_url, engine=FAST) as running:
        await running.start_agents([A])
        server, wire = running.server, running.wire
        plan_id = await make_plan(server.db, server.cipher)
        past = await save(wire, name="too late", job_plan_id=plan_id,
                          execute_time=int(time.time()) - 5)
        assert past["code"] == 1245006, past
        # execute_time is wall-clock seconds, whatever the cron clock's speed
        at = int(time.time()) + 3
        cron = await saved(wire, name="once", job_plan_id=plan_id, execute_time=at,
                           execute_time_zone="Asia/Shanghai")
        assert (cron["execute_time"], cron["expression"]) == (at, None)
        assert (await set_status(wire, cron["id"], 1))["result"]

        async def one_job() -> list[dict[str, Any]] | None:
            jobs = await cron_jobs(wire, cron["id"])
            return jobs or None
        jobs = await eventually(one_job, timeout=10)
        assert time.time() >= at - 0.05
        await asyncio.sleep(2)
        assert len(await cron_jobs(wire, cron["id"])) == 1
        status = await wire.wait(jobs[0]["job_instance_id"])
        assert status["job_instance"]["status"] == 3
        # done: paused, and its time has passed, so it cannot start again
        detail = await wire.v3("get_cron_detail", {**BIZ, "id": cron["id"]}, method="GET")
        assert detail["data"]["status"] == 2
        again = await set_status(wire, cron["id"], 1)
        assert again["code"] == 1245006, again
        assert [r.outcome for r in await firings(server.db, cron["id"])] == ["fired"]


async def test_a_start_racing_a_one_shot_firing_never_leaves_it_running_without_a_slot(
        tmp_path: Path, database_url: str, monkeypatch: Any) -> None:
    """update_cron_status reads the cron, the scheduler fires its one slot (and pauses
    it), then the start is written: it must not be written over the firing, leaving a
    running cron with no next slot that never fires again. The scheduler is driven by
    hand, in that order, between the start's read and its write."""
    async with run_server(tmp_path, database_url, engine=FAST) as running:
        server, wire = running.server, running.wire
        await server.cron_scheduler.stop()
        await server.inventory.add(2, A)
        plan_id = await make_plan(server.db, server.cipher)
        # far enough ahead for the save and the start on a loaded machine
        at = int(time.time()) + 5
        cron = await saved(wire, name="once", job_plan_id=plan_id, execute_time=at)
        assert (await set_status(wire, cron["id"], 1))["result"]
        await asyncio.sleep(max(at - time.time(), 0) + 0.2)
        read = server.crons.get
        raced: list[int] = []

        async def read_then_fire(*args: Any) -> Any:
            row = await read(*args)
            if not raced:
                raced.append(await server.cron_scheduler.run_due())
            return row
        monkeypatch.setattr(server.crons, "get", read_then_fire)
        started = await set_status(wire, cron["id"], 1)
        assert raced == [1]
        async with server.db.connect() as conn:
            row = (await conn.execute(select(crons).where(crons.c.id == cron["id"]))).one()
        assert row.status == 2 or row.next_fire_at is not None, (row, started)
        # the start read the cron again: its one slot is past, as a start after the firing
        assert started["code"] == 1245006, started
        assert [r.outcome for r in await firings(server.db, cron["id"])] == ["fired"]


async def test_a_save_racing_a_one_shot_firing_is_not_written_over_it(
        tmp_path: Path, database_url: str, monkeypatch: Any) -> None:
    """save_cron reads a running one-shot, the scheduler fires its slot (and pauses it),
    then the save is written: it must not be written over the firing, leaving a paused
    cron with a slot (or a running one firing again). The scheduler is driven by hand, in
    that order, between the save's read and its write."""
    async with run_server(tmp_path, database_url, engine=FAST) as running:
        server, wire = running.server, running.wire
        await server.cron_scheduler.stop()
        await server.inventory.add(2, A)
        plan_id = await make_plan(server.db, server.cipher)
        # far enough ahead for the save and the start on a loaded machine
        at = int(time.time()) + 5
        cron = await saved(wire, name="once", job_plan_id=plan_id, execute_time=at)
        assert (await set_status(wire, cron["id"], 1))["result"]
        await asyncio.sleep(max(at - time.time(), 0) + 0.2)
        read = server.crons.get
        raced: list[int] = []

        async def read_then_fire(*args: Any) -> Any:
            row = await read(*args)
            if not raced:
                raced.append(await server.cron_scheduler.run_due())
            return row
        monkeypatch.setattr(server.crons, "get", read_then_fire)
        later = int(time.time()) + 3600
        answer = await save(wire, id=cron["id"], name="moved", execute_time=later,
                            execute_time_zone="Asia/Shanghai")
        assert raced == [1]
        assert answer["result"], answer
        async with server.db.connect() as conn:
            row = (await conn.execute(select(crons).where(crons.c.id == cron["id"]))).one()
        # saved over the cron as the firing left it: paused, nothing left to fire
        assert (row.name, row.execute_time, row.status, row.next_fire_at) == (
            "moved", later, 2, None)
        assert (answer["data"]["status"], answer["data"]["execute_time"]) == (2, later)
        assert await server.cron_scheduler.run_due() == 0
        assert [r.outcome for r in await firings(server.db, cron["id"])] == ["fired"]


async def test_saves_of_different_fields_racing_each_other_keep_both(
        tmp_path: Path, database_url: str, monkeypatch: Any) -> None:
    """One save renames the cron; another, between the first's read and its write, gives
    it new values. The rename must not write back the values it read: both are kept."""
    async with run_server(tmp_path, database_url, engine=FAST) as running:
        server, wire = running.server, running.wire
        await server.cron_scheduler.stop()
        await server.inventory.add(2, A)
        plan_id = await make_plan(server.db, server.cipher)
        cron = await saved(wire, name="daily", job_plan_id=plan_id, expression="0 3 * * *",
                           global_var_list=[{"name": "greeting", "value": "first"}])
        read = server.crons.get
        raced: list[str] = []

        async def read_then_save(*args: Any) -> Any:
            row = await read(*args)
            if not raced:
                raced.append("started")  # the racing save's own reads are left alone
                await saved(wire, id=cron["id"], global_var_list=[
                    {"name": "greeting", "value": "second"}])
            return row
        monkeypatch.setattr(server.crons, "get", read_then_save)
        renamed = await saved(wire, id=cron["id"], name="nightly")
        assert len(raced) == 1
        monkeypatch.setattr(server.crons, "get", read)
        detail = await wire.v3("get_cron_detail", {**BIZ, "id": cron["id"]}, method="GET")
        assert detail["result"], detail
        for view in (renamed, detail["data"]):
            values = {v["name"]: v["value"] for v in view["global_var_list"]}
            assert (view["name"], values["greeting"]) == ("nightly", "second")


async def greeting_becomes_a_password(db: Database, cipher: Cipher, table: Any,
                                      row_id: int) -> None:
    """The plan's (or template's) ``greeting`` variable made a password, as an edit of the
    template (then a sync) makes it."""
    async with db.begin() as conn:
        stored = (await conn.execute(select(table.c.variables)
                                     .where(table.c.id == row_id))).scalar_one()
        changed = [{**v, "type": 4, "value": cipher.encrypt(v["value"])}
                   if v["name"] == "greeting" else v for v in stored]
        await conn.execute(update(table).where(table.c.id == row_id).values(variables=changed))


async def test_a_value_for_a_variable_that_became_a_password_is_sealed(
        tmp_path: Path, database_url: str) -> None:
    """A cron gives a plain variable a value; the plan's variable then becomes a
    password: the value is sealed in the store and masked when shown, whether the plan
    was synced from its template, or the cron is read, or fires."""
    async with run_server(tmp_path, database_url, engine=FAST) as running:
        server, wire = running.server, running.wire
        await server.inventory.add(2, A)
        ids: dict[str, tuple[int, int]] = {}
        for how in ("synced", "read", "fired"):
            plan_id = await make_plan(server.db, server.cipher, name=how)
            cron = await saved(wire, name=how, job_plan_id=plan_id, expression="* * * * *",
                               global_var_list=[{"name": "greeting",
                                                 "value": f"GREETSECRET-{how}"}])
            assert cron["global_var_list"][0]["value"] == f"GREETSECRET-{how}"
            ids[how] = (plan_id, cron["id"])

        async def stored(how: str) -> list[dict[str, Any]]:
            async with server.db.connect() as conn:
                return list((await conn.execute(select(crons.c.variables).where(
                    crons.c.id == ids[how][1]))).scalar_one())

        async def sealed(how: str) -> None:
            shown = await wire.v3("get_cron_detail", {**BIZ, "id": ids[how][1]}, method="GET")
            assert "GREETSECRET" not in json.dumps(shown), shown
            assert shown["data"]["global_var_list"][0]["value"] == "******", shown
            [entry] = await stored(how)
            assert "GREETSECRET" not in json.dumps(entry) and entry["type"] == 4, entry
            assert server.cipher.decrypt(entry["value"]) == f"GREETSECRET-{how}"

        # the template's variable becomes a password, and the plan is synced with it
        async with server.db.connect() as conn:
            template_id = (await conn.execute(select(job_plans.c.template_id).where(
                job_plans.c.id == ids["synced"][0]))).scalar_one()
        await greeting_becomes_a_password(server.db, server.cipher, job_templates, template_id)
        resp = await wire.http.post(f"/api/jobfleet/v1/plans/{ids['synced'][0]}/sync",
                                    json={}, params={"bk_biz_id": 2}, headers=wire.headers())
        assert resp.json()["result"], resp.json()
        assert "GREETSECRET" not in json.dumps(await stored("synced"))
        await sealed("synced")
        # a plan changed before values were sealed with it: reading the cron seals it
        await greeting_becomes_a_password(server.db, server.cipher, job_plans, ids["read"][0])
        await sealed("read")
        # and so does its firing
        await greeting_becomes_a_password(server.db, server.cipher, job_plans, ids["fired"][0])
        assert (await set_status(wire, ids["fired"][1], 1))["result"]

        async def fired() -> bool:
            return any(r.outcome == "fired" for r in await firings(server.db, ids["fired"][1]))
        await eventually(fired, timeout=10)
        assert "GREETSECRET" not in json.dumps(await stored("fired"))
        await sealed("fired")


async def test_cron_api_rules(running: Running) -> None:
    wire, server = running.wire, running.server
    plan_id = await make_plan(server.db, server.cipher)
    base = {"name": "nightly", "job_plan_id": plan_id}

    async def code(**body: Any) -> tuple[int, str]:
        answer = await save(wire, **body)
        return answer["code"], answer.get("message", "")

    assert await code(**base, expression="0 0 ? * *") == (
        1241010, "Invalid parameter [expression]: '?' is not supported (in the day field); "
        "use '*'")
    got = await code(**base, expression="61 * * * *")
    assert got[0] == 1241010 and "minute 61 is out of range 0-59" in got[1]
    assert (await code(**base))[0] == 1241004
    assert (await code(**{**base, "name": "x" * 61}, expression="0 2 * * *"))[0] == 1241010
    assert (await code(name="n", expression="0 2 * * *"))[0] == 1241004
    assert (await code(**{**base, "job_plan_id": 999}, expression="0 2 * * *"))[0] == 1243009
    other_biz = await make_plan(server.db, server.cipher, biz=3, name="elsewhere")
    assert (await code(**{**base, "job_plan_id": other_biz}, expression="0 2 * * *"))[0] == 1243009
    got = await code(**base, expression="0 2 * * *", execute_time_zone="Mars/Base")
    assert got[0] == 1241010 and "IANA" in got[1]
    got = await code(**base, expression="0 2 * * *", global_var_list=[{"name": "nope"}])
    assert got[0] == 1241010 and "nope" in got[1]
    got = await code(**base, expression="0 2 * * *",
                     global_var_list=[{"name": "greeting", "server": {"host_id_list": [1]}}])
    assert got[0] == 1241010, got
    got = await code(**base, expression="0 2 * * *",
                     global_var_list=[{"name": "targets", "value": "127.1.2.3"}])
    assert got[0] == 1241010, got
    got = await code(**base, expression="0 2 * * *",
                     global_var_list=[{"name": "items", "value": "not an array"}])
    assert got[0] == 1241010, got
    got = await code(**base, execute_time=(int(time.time()) + 60) * 1000)
    assert got[0] == 1241010 and "milliseconds" in got[1]
    got = await code(**base, expression=",".join(["1"] * 200) + " * * * *")
    assert got[0] == 1241010 and "at most 255 characters" in got[1], got

    # the business's time zone is the default
    async with server.db.begin() as conn:
        await conn.execute(update(businesses).where(businesses.c.bk_biz_id == 2)
                           .values(timezone="Asia/Shanghai"))
    cron = await saved(wire, **base, expression="0/5 2 * * 1-5", global_var_list=[
        {"name": "token", "value": "first"},
        {"name": "targets", "server": {"ip_list": [{"bk_cloud_id": 0, "ip": A}]}}])
    cron_id = cron["id"]
    assert cron["execute_time_zone"] == "Asia/Shanghai"
    assert [v["name"] for v in cron["global_var_list"]] == ["token", "targets"]
    assert cron["global_var_list"][1]["server"] == {"ip_list": [{"bk_cloud_id": 0, "ip": A}]}

    # an update changes what it is given; a masked password keeps its value
    updated = await saved(wire, id=cron_id, name="weekday mornings", global_var_list=[
        {"name": "token", "value": "******"}, {"name": "greeting", "value": "hi"}])
    assert (updated["name"], updated["expression"]) == ("weekday mornings", "0/5 2 * * 1-5")
    assert [v["name"] for v in updated["global_var_list"]] == ["token", "greeting"]
    async with server.db.connect() as conn:
        stored = (await conn.execute(select(crons.c.variables)
                                     .where(crons.c.id == cron_id))).scalar_one()
    assert server.cipher.decrypt(stored[0]["value"]) == "first"
    bad = await save(wire, id=cron_id, expression="* * * *")
    assert bad["code"] == 1241010
    swapped = await saved(wire, id=cron_id, execute_time=int(time.time()) + 3600)
    assert swapped["expression"] is None and "execute_time" in swapped

    # starting computes the next slot strictly after now, on the cron clock
    assert (await set_status(wire, cron_id, 3))["code"] == 1241010
    assert (await set_status(wire, cron_id, 1))["result"]
    again = await saved(wire, id=cron_id, expression="0 3 * * *")
    async with server.db.connect() as conn:
        next_at = (await conn.execute(select(crons.c.next_fire_at)
                                      .where(crons.c.id == cron_id))).scalar_one()
    assert next_at > time.time() and next_at % 86400 == (3 - 8) % 24 * 3600
    assert again["status"] == 1

    listing = await wire.v3("get_cron_list", {**BIZ, "name": "MORNING"}, method="GET")
    assert [c["id"] for c in listing["data"]["data"]] == [cron_id]
    assert "global_var_list" not in listing["data"]["data"][0]
    now_s = int(time.time())
    for query, ids in (
        ({"status": 1}, [cron_id]),
        ({"status": 2}, []),
        ({"creator": "admin", "create_time_start": now_s - 60, "create_time_end": now_s + 60},
         [cron_id]),
        ({"last_modify_time_start": now_s + 60}, []),
        ({"id": cron_id, "name": "no such name"}, [cron_id]),
    ):
        page = await wire.v3("get_cron_list", {**BIZ, **query}, method="GET")
        assert [c["id"] for c in page["data"]["data"]] == ids, query
    assert abs(listing["data"]["data"][0]["create_time"] - now_s) < 60

    for name, body in (("get_cron_detail", {"id": 999}),
                       ("update_cron_status", {"id": 999, "status": 1}),
                       ("delete_cron", {"id": 999}),
                       ("save_cron", {"id": 999, "name": "x"})):
        answer = await wire.v3(name, {**BIZ, **body},
                               method="GET" if name.startswith("get") else "POST")
        assert answer["code"] == 1245001, (name, answer)
    # bk-job's own checks of the id and status
    for name, body, bad in (("get_cron_detail", {}, 1241002),
                            ("get_cron_detail", {"id": 0}, 1241002),
                            ("update_cron_status", {"status": 1}, 1241010),
                            ("update_cron_status", {"id": -1, "status": 1}, 1241010),
                            ("update_cron_status", {"id": cron_id}, 1241010)):
        answer = await wire.v3(name, {**BIZ, **body},
                               method="GET" if name.startswith("get") else "POST")
        assert answer["code"] == bad, (name, body, answer)
    deleted = await wire.v3("delete_cron", {**BIZ, "id": cron_id})
    assert deleted["result"] and "data" not in deleted
    gone = await wire.v3("get_cron_detail", {**BIZ, "id": cron_id}, method="GET")
    assert gone["code"] == 1245001
    async with server.db.connect() as conn:
        actions = [r[0] for r in await conn.execute(
            select(audit_log.c.action).where(audit_log.c.resource_type == "cron")
            .order_by(audit_log.c.id))]
    assert actions == ["create_cron", "update_cron", "update_cron", "start_cron",
                       "update_cron", "delete_cron"]


async def test_a_cron_name_is_held_by_one_cron_of_a_business(running: Running) -> None:
    """bk-job refuses a second cron of a name in a business (1245004), on create and on a
    rename, so its crons can be told apart by name."""
    wire, server = running.wire, running.server
    plan_id = await make_plan(server.db, server.cipher)
    first = await saved(wire, name="nightly", job_plan_id=plan_id, expression="0 2 * * *")
    again = await save(wire, name=" nightly ", job_plan_id=plan_id, expression="0 3 * * *")
    assert (again["code"], again["message"]) == (
        1245004, f"Cron job [nightly] already existed: it is cron {first['id']}"), again
    # bk-job checks the name after the expression and the variables
    bad = await save(wire, name="nightly", job_plan_id=plan_id, expression="0 2 * * *",
                     global_var_list=[{"name": "nope"}])
    assert bad["code"] == 1241010, bad
    other = await saved(wire, name="weekly", job_plan_id=plan_id, expression="0 2 * * 0")
    renamed = await save(wire, id=other["id"], name="nightly")
    assert renamed["code"] == 1245004, renamed
    # saved again under its own name, or renamed to a free one, a cron is saved
    assert (await saved(wire, id=first["id"], name="nightly"))["name"] == "nightly"
    assert (await saved(wire, id=other["id"], name="Sundays"))["name"] == "Sundays"
    async with server.db.connect() as conn:
        names = sorted((await conn.execute(select(crons.c.name))).scalars())
    assert names == ["Sundays", "nightly"]
    # two crons that shared a name before names were held: each is still saved whole
    # under the name it has (bk-job clients and the console send every field)
    # (migration 0023 marks the later of them as sharing the name)
    async with server.db.begin() as conn:
        await conn.execute(update(crons).where(crons.c.id == other["id"])
                           .values(name="nightly", name_shared=True))
    kept = await saved(wire, id=other["id"], name="nightly", expression="0 4 * * 0")
    assert (kept["name"], kept["expression"]) == ("nightly", "0 4 * * 0")


async def test_a_cron_name_is_held_by_one_of_many_saves_at_once(running: Running) -> None:
    """Saves that read a name free at the same time: one takes it, every other one is
    refused with 1245004, on create and on a rename, never a 500."""
    wire, server = running.wire, running.server
    plan_id = await make_plan(server.db, server.cipher)
    body = {"job_plan_id": plan_id, "expression": "0 2 * * *"}
    answers = await asyncio.gather(*(save(wire, name="race", **body) for _ in range(16)))
    codes = sorted(a["code"] for a in answers)
    assert codes == [0] + [1245004] * 15, answers
    winner = next(a["data"]["id"] for a in answers if a["result"])
    assert {a["message"] for a in answers if not a["result"]} == {
        f"Cron job [race] already existed: it is cron {winner}"}
    others = [(await saved(wire, name=f"other {i}", **body))["id"] for i in range(12)]
    answers = await asyncio.gather(*(save(wire, id=i, name="renamed") for i in others))
    assert sorted(a["code"] for a in answers) == [0] + [1245004] * 11, answers
    async with server.db.connect() as conn:
        names = list((await conn.execute(select(crons.c.name))).scalars())
    assert (names.count("race"), names.count("renamed"), len(names)) == (1, 1, 13)


async def test_a_cron_name_is_held_across_two_nodes(
    running: Running, tmp_path: Path, database_url: str
) -> None:
    """Two nodes on one database, each asked for the same new name, and each for the same
    rename, at once: one cron takes it, every other save is refused with 1245004."""
    other_dir = tmp_path / "node-b"
    (other_dir / "server").mkdir(parents=True)
    # every node of a cluster shares the secret key and agent CA (and the admin credentials)
    for name in ("secret.key", "bootstrap.json"):
        shutil.copy(running.data_dir / "server" / name, other_dir / "server" / name)
    shutil.copytree(running.data_dir / "server" / "tls", other_dir / "server" / "tls")
    plan_id = await make_plan(running.server.db, running.server.cipher)
    body = {"job_plan_id": plan_id, "expression": "0 2 * * *"}
    async with run_server(other_dir, database_url) as node_b:
        wires = [running.wire, node_b.wire] * 6
        answers = await asyncio.gather(*(save(w, name="both", **body) for w in wires))
        assert sorted(a["code"] for a in answers) == [0] + [1245004] * 11, answers
        others = [(await saved(running.wire, name=f"other {i}", **body))["id"] for i in range(8)]
        answers = await asyncio.gather(*(
            save(w, id=i, name="moved") for w, i in zip(wires, others, strict=False)))
        assert sorted(a["code"] for a in answers) == [0] + [1245004] * 7, answers
    async with running.server.db.connect() as conn:
        names = list((await conn.execute(select(crons.c.name))).scalars())
    assert (names.count("both"), names.count("moved")) == (1, 1), names


async def test_slot_missed_while_down_fires_once_on_start(
        tmp_path: Path, database_url: str) -> None:
    port = free_port()
    async with run_server(tmp_path, database_url, engine=FAST, port=port) as running:
        server, wire = running.server, running.wire
        await server.inventory.add(2, A)
        plan_id = await make_plan(server.db, server.cipher)
        at = int(time.time()) + 3
        once = await saved(wire, name="while down", job_plan_id=plan_id, execute_time=at)
        assert (await set_status(wire, once["id"], 1))["result"]
        late = await saved(wire, name="too long down", job_plan_id=plan_id,
                           execute_time=at + 1)
        assert (await set_status(wire, late["id"], 1))["result"]
        minutely = await saved(wire, name="minutely", job_plan_id=plan_id,
                               expression="* * * * *")
        assert (await set_status(wire, minutely["id"], 1))["result"]

        async def fired_once() -> bool:
            return any(r.outcome == "fired" for r in await firings(server.db, minutely["id"]))
        await eventually(fired_once, timeout=10)
    stopped = time.time()
    # down for at least two (scaled) minutes, so that more than one minute is missed
    # however long the first server took to stop
    await asyncio.sleep(max(at + 1.5 - time.time(), 0) + 2.0)
    restarting = time.time()
    # back within the grace window: the one-shot's slot and the latest minute run once
    async with run_server(tmp_path, database_url, engine=FAST, port=port) as running:
        server, wire = running.server, running.wire
        started = time.time()

        async def fired(cron_id: int) -> list[Any] | None:
            rows = [r for r in await firings(server.db, cron_id) if r.outcome == "fired"]
            return rows or None
        rows = await eventually(lambda: fired(once["id"]), timeout=10)
        assert len(rows) == 1 and rows[0].job_instance_id
        # the one-shot due ~2 s before this start was within the grace window too
        assert len(await eventually(lambda: fired(late["id"]), timeout=10)) == 1
        assert len(await cron_jobs(wire, once["id"])) == 1
        clock = server.cron_scheduler.clock
        # the minutes missed while down did not run one by one: the first is recorded
        # as skipped, the latest ran, then the schedule went on. What the second server
        # wrote, not slots after ``stopped``: a loaded machine's first server can stop
        # its scheduler a minute (a second here) before it has stopped, and that slot is
        # then the first one missed
        async def caught_up() -> list[Any] | None:
            rows = [r for r in await firings(server.db, minutely["id"])
                    if r.create_time >= restarting * 1000]
            return rows if len(rows) >= 2 else None
        # on a loaded machine the missed minutes may be settled after the one-shots
        after = await eventually(caught_up, timeout=10)
        minute_rows = await firings(server.db, minutely["id"])
        assert [r.outcome for r in after[:2]] == ["skipped", "fired"], after
        assert clock.wall(after[1].slot) <= started + 0.5
        assert "superseded" in after[0].message
        # one record for all the minutes missed while down; later slots of this clock (a
        # minute a second) can be superseded by a loaded machine's own lag, so they are
        # not counted here
        down = [r for r in after if clock.wall(r.slot) <= started + 0.5]
        assert [r.outcome for r in down].count("skipped") == 1, minute_rows
        before = [r for r in minute_rows if clock.wall(r.slot) <= stopped]
        assert "fired" in [r.outcome for r in before], minute_rows
        assert [r.outcome for r in await firings(server.db, late["id"])] == ["fired"]
        # a one-shot missed by more than the grace window is skipped, not run
        # far enough ahead that this server has stopped before it, however loaded the
        # machine (a slot reached while it still runs is fired, as it should be)
        again = int(time.time()) + 10
        more = await saved(wire, id=late["id"], execute_time=again)
        assert (await set_status(wire, more["id"], 1))["result"]
    await asyncio.sleep(max(again + 3 - time.time(), 0))
    async with run_server(tmp_path, database_url, engine={**FAST, "cron_grace": 1.0},
                          port=port) as running:
        server = running.server
        first_slot = server.cron_scheduler.clock.slot_of(at + 1)

        async def settled() -> list[str] | None:
            rows = [r for r in await firings(server.db, late["id"]) if r.slot > first_slot]
            return [r.outcome for r in rows] or None
        assert await eventually(settled, timeout=10) == ["skipped"]
        assert len(await cron_jobs(running.wire, late["id"])) == 1


async def start_proc(data_dir: Path, port: int, database_url: str,
                     env: dict[str, str]) -> Proc:
    proc = Proc(["jobfleet", "server", "--data-dir", str(data_dir), "--port", str(port),
                 "--agent-port", "0",
                 "--database-url", database_url, "--cron-time-scale", "60",
                 "--log-level", "warning"], env)
    await proc.start()

    async def ended() -> None:
        if proc.proc is not None and proc.proc.returncode is not None:
            out = await proc.proc.stdout.read() if proc.proc.stdout else b""
            raise AssertionError(f"server exited: {out.decode()[-2000:]}")

    await wait_healthy(f"http://127.0.0.1:{port}", ended, timeout=30)
    return proc


async def test_two_servers_fire_each_slot_once(tmp_path: Path, database_url: str) -> None:
    env = {"JOBFLEET_SECRET_KEY": Fernet.generate_key().decode()}
    first_dir, second_dir = tmp_path / "one", tmp_path / "two"
    ports = free_port(), free_port()
    first = await start_proc(first_dir, ports[0], database_url, env)
    procs = [first]
    db = Database(database_url)
    try:
        # a second node of the same installation: same database, keys and credentials
        second_dir.mkdir(mode=0o700)
        shutil.copy(first_dir / "bootstrap.json", second_dir / "bootstrap.json")
        shutil.copytree(first_dir / "tls", second_dir / "tls")
        procs.append(await start_proc(second_dir, ports[1], database_url, env))
        boot = read_bootstrap(first_dir)
        wires = [Wire(f"http://127.0.0.1:{p}", boot["bk_app_code"], boot["bk_app_secret"])
                 for p in ports]
        added = await wires[0].post("/api/jobfleet/v1/hosts", {"bk_biz_id": 2, "ip": A},
                                    headers=wires[0].headers())
        assert added["result"], added
        plan_id = await make_plan(db, Cipher(env["JOBFLEET_SECRET_KEY"].encode()))
        cron = await saved(wires[0], name="per second", job_plan_id=plan_id,
                           expression="* * * * *",
                           global_var_list=[{"name": "token", "value": "shared-key"}])
        assert (await set_status(wires[1], cron["id"], 1))["result"]

        async def four_fired() -> bool:
            return sum(r.outcome == "fired" for r in await firings(db, cron["id"])) >= 4
        # four slots (a second each) fired, by either node, rather than a fixed six seconds
        await eventually(four_fired, timeout=30, interval=0.25)
        assert (await set_status(wires[0], cron["id"], 2))["result"]
        await asyncio.sleep(1)
        async with db.connect() as conn:
            rows = list(await conn.execute(select(cron_firings)
                                           .where(cron_firings.c.cron_id == cron["id"])))
            jobs = (await conn.execute(select(func.count()).select_from(job_instances)
                                       .where(job_instances.c.cron_id == cron["id"]))).scalar()
        fired = [r for r in rows if r.outcome == "fired"]
        assert len(fired) >= 4, rows
        assert [r for r in rows if r.outcome == "failed"] == [], rows
        assert len({r.slot for r in rows}) == len(rows)
        assert jobs == len(fired)
        assert len({r.job_instance_id for r in fired}) == len(fired)
        nodes = {(d / "node_id").read_text().strip() for d in (first_dir, second_dir)}
        assert {r.node for r in fired} <= nodes
        for wire in wires:
            await wire.close()
    finally:
        await db.close()
        for proc in procs:
            await proc.stop()
        for proc in procs:
            if proc.proc is not None and proc.proc.stdout is not None:
                out = (await proc.proc.stdout.read()).decode()
                for failure in ("cron_pass_failed", "cron_fire_error", "cron_realign_failed"):
                    assert failure not in out, out[-3000:]


async def test_a_cron_stops_firing_for_a_user_who_lost_the_business(
        tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path, database_url, engine=FAST) as running:
        await running.start_agents([A])
        server, wire = running.server, running.wire
        plan_id = await make_plan(server.db, server.cipher)
        await server.identity.ensure_user("carol")
        await server.identity.grant("carol", "biz", "2")
        carol = {"headers": wire.headers(bk_username="carol")}
        made = await wire.post("/api/bk-job/prod/api/v3/save_cron",
                               {**BIZ, "name": "carol's", "job_plan_id": plan_id,
                                "expression": "* * * * *"}, **carol)
        assert made["result"], made
        cron_id = made["data"]["id"]
        started = await wire.post("/api/bk-job/prod/api/v3/update_cron_status",
                                  {**BIZ, "id": cron_id, "status": 1}, **carol)
        assert started["result"], started

        async def fired() -> bool:
            return bool(await cron_jobs(wire, cron_id))
        await eventually(fired, timeout=10)
        await server.identity.revoke("carol", "biz", "2")

        async def refused() -> bool:
            return any(r.outcome == "failed" for r in await firings(server.db, cron_id))
        await eventually(refused, timeout=10)
        failed = [r for r in await firings(server.db, cron_id) if r.outcome == "failed"]
        assert "no longer holds biz 2" in failed[0].message and failed[0].job_instance_id is None
        jobs = len(await cron_jobs(wire, cron_id))
        await asyncio.sleep(2)
        assert len(await cron_jobs(wire, cron_id)) == jobs


async def test_a_cron_stops_firing_through_an_app_no_longer_allowed_the_business(
        tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path, database_url, engine=FAST) as running:
        await running.start_agents([A])
        server = running.server
        plan_id = await make_plan(server.db, server.cipher)
        await server.identity.ensure_user("carol")
        await server.identity.grant("carol", "biz", "2")
        secret = await server.identity.create_app("ops", users=["carol"], biz=[2])
        through = Wire(running.url, "ops", secret, "carol")
        try:
            made = await through.post("/api/bk-job/prod/api/v3/save_cron",
                                      {**BIZ, "name": "carol's", "job_plan_id": plan_id,
                                       "expression": "* * * * *"})
            assert made["result"], made
            cron_id = made["data"]["id"]
            started = await through.post("/api/bk-job/prod/api/v3/update_cron_status",
                                         {**BIZ, "id": cron_id, "status": 1})
            assert started["result"], started
        finally:
            await through.close()

        async def fired() -> bool:
            return bool(await cron_jobs(running.wire, cron_id))
        await eventually(fired, timeout=10)
        # the app made again, limited to another business: carol still holds business 2
        await server.identity.delete_app("ops")
        await server.identity.create_app("ops", users=["carol"], biz=[3])

        # a slot due between the delete and the new app fails as "no longer exists";
        # the slots after it fail for the business
        limited = "App 'ops' may no longer act in biz 2"

        async def refused() -> bool:
            return any(r.outcome == "failed" and r.message == limited
                       for r in await firings(server.db, cron_id))
        await eventually(refused, timeout=10)
        failed = [r for r in await firings(server.db, cron_id) if r.outcome == "failed"]
        assert {r.message for r in failed} <= {limited, "App 'ops' no longer exists"}, failed
        assert all(r.job_instance_id is None for r in failed)
        jobs = len(await cron_jobs(running.wire, cron_id))
        await asyncio.sleep(2)
        assert len(await cron_jobs(running.wire, cron_id)) == jobs


async def test_cron_commands(tmp_path: Path, database_url: str) -> None:
    from tests.integration.test_cli_and_sdk import cli

    async with run_server(tmp_path, database_url, engine=FAST) as running:
        await running.start_agents([A])
        server, wire = running.server, running.wire
        plan_id = await make_plan(server.db, server.cipher)
        code, out = await cli(running, "cron", "add", "nightly", "--plan", str(plan_id),
                              "--cron", "0 2 * * *", "--tz", "Asia/Shanghai",
                              "--var", "greeting=cli", "--json")
        assert code == 0, out
        made = json.loads(out)
        assert (made["status"], made["expression"], made["execute_time_zone"]) == (
            2, "0 2 * * *", "Asia/Shanghai")
        assert made["global_var_list"][0]["value"] == "cli"
        code, out = await cli(running, "cron", "add", "every second", "--plan", str(plan_id),
                              "--cron", "* * * * *", "--start", "--json")
        assert code == 0, out
        quick = json.loads(out)
        assert quick["status"] == 1

        async def fired() -> bool:
            return bool(await cron_jobs(wire, quick["id"]))
        await eventually(fired, timeout=10)
        code, out = await cli(running, "cron", "pause", "every second")
        assert code == 0 and "paused" in out, out
        code, out = await cli(running, "cron", "add", "nightly", "--plan", str(plan_id),
                              "--cron", "0 3 * * *")
        assert code == 2 and f"already has a cron named 'nightly' (id {made['id']})" in out, out
        assert "Traceback" not in out
        code, out = await cli(running, "cron", "list")
        assert code == 0 and "nightly" in out and "2 crons" in out, out
        code, out = await cli(running, "cron", "delete", str(made["id"]))
        assert code == 0, out
        code, out = await cli(running, "cron", "add", "bad", "--plan", str(plan_id),
                              "--cron", "61 * * * *")
        assert code == 2 and "1241010" in out and "Traceback" not in out, out
