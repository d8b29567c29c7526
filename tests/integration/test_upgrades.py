"""A server started on a database an older jobfleet wrote upgrades it and answers about
its jobs, scripts, plans, crons and accounts as before (crons that shared a name before
names were held too); one started on a database a newer jobfleet upgraded refuses it,
in one line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, MetaData, select, text
from tests.conftest import fresh_database, upgrade_to
from tests.integration import test_cron as cron
from tests.integration.harness import Proc, Running, Wire, b64, eventually, free_port, run_server
from tests.integration.test_cron import make_plan as make_cron_plan
from tests.integration.test_plans import hosts, make_plan, script

from jobfleet.store import tables
from jobfleet.store.database import Database
from jobfleet.store.revisions import shipped_head

IP = "127.0.0.93"
BIZ = {"bk_scope_type": "biz", "bk_scope_id": "2"}
# the oldest revision with every table the main routes read
OLD = "0004"


async def _ok(answer: Any) -> dict[str, Any]:
    reply = await answer
    assert reply["result"], reply
    return dict(reply)


async def _history(run: Running) -> dict[str, Any]:
    """A fleet's history: a finished job with its output, a script, an account with a
    password, a plan with a secret variable and a cron of it."""
    wire = run.wire
    await run.start_agents([IP])
    job = await run.wire.run_script("echo 'héllo 名前 ✓'; printf 'second line\\n' >&2", [IP])
    await wire.wait(job["job_instance_id"])
    made = await _ok(wire.v3("create_script", {
        **BIZ, "name": "清理-cleanup", "script_language": 1, "version": "1.0",
        "content": b64("#!/bin/bash\necho 'ünï'\n" + "x" * 5000), "description": "déjà"}))
    account = await _ok(wire.v3("create_account", {
        **BIZ, "account": "Admin", "alias": "win-admin", "type": 2, "category": 1,
        "password": "s3cret-pässword", "description": "Windows"}))
    plan_id, _ = await make_plan(run, [script("greet", "echo ${name} ${#token}\n", hosts(IP))], [
        {"name": "name", "type": 1, "value": "plain 值"},
        {"name": "token", "type": 4, "value": "plan-token"}])
    cron = await _ok(wire.v3("save_cron", {
        **BIZ, "job_plan_id": plan_id, "name": "nightly 夜", "expression": "0 3 * * *"}))
    return {"job": job["job_instance_id"], "step": job["step_instance_id"],
            "script": made["data"]["script_id"], "account": account["data"]["id"],
            "plan": plan_id, "cron": cron["data"]["id"]}


async def _answers(wire: Wire, ids: dict[str, Any]) -> dict[str, Any]:
    """What the main routes say about that history."""
    get = "GET"
    biz = {"bk_biz_id": 2}
    answers = {
        "status": await wire.status(ids["job"]),
        "logs": await wire.logs(ids["job"], ids["step"], [IP]),
        "scripts": await _ok(wire.v3("get_script_list", biz, method=get)),
        "versions": await _ok(wire.v3(
            "get_script_version_list", {**biz, "script_id": ids["script"]}, method=get)),
        "accounts": await _ok(wire.v3("get_account_list", biz, method=get)),
        "plan": await _ok(wire.v3(
            "get_job_plan_detail", {**biz, "job_plan_id": ids["plan"]}, method=get)),
        "crons": await _ok(wire.v3("get_cron_list", biz, method=get)),
        "cron": await _ok(wire.v3("get_cron_detail", {**biz, "id": ids["cron"]}, method=get)),
    }
    for answer in answers.values():
        if isinstance(answer, dict):
            answer.pop("request_id", None)
            answer.pop("job_request_id", None)
    return answers


def _rows(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [dict(row) for row in conn.execute(select(table)).mappings()]
        for name, table in tables.metadata.tables.items()
    }


# columns an older schema has and today's dropped: the value an older jobfleet wrote
DROPPED: dict[tuple[str, str], Any] = {("step_hosts", "log_size"): 0}


def _restore(conn: Connection, rows: dict[str, list[dict[str, Any]]]) -> None:
    """The rows into the tables the older schema has, with the columns it has: what an
    older jobfleet would have left there."""
    old = MetaData()
    old.reflect(conn)
    for table in old.sorted_tables:
        kept = [{c.name: row[c.name] if c.name in row else DROPPED[table.name, c.name]
                 for c in table.columns} for row in rows.get(table.name, [])]
        if kept:
            conn.execute(table.insert(), kept)
        id_column = table.columns.get("id")
        if conn.dialect.name == "postgresql" and id_column is not None and kept and (
            id_column.autoincrement is True or id_column.autoincrement == "auto"
        ) and conn.exec_driver_sql(
            f"SELECT pg_get_serial_sequence('{table.name}', 'id')"
        ).scalar():
            # as a restore does: the next id follows the restored ones
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                f"(SELECT max(id) FROM {table.name}))"
            )



async def _dump(url: str) -> dict[str, list[dict[str, Any]]]:
    db = Database(url)
    try:
        async with db.connect() as conn:
            rows: dict[str, list[dict[str, Any]]] = await conn.run_sync(_rows)
    finally:
        await db.close()
    return rows


async def _restore_at(url: str, revision: str, rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """``rows`` into the empty database at ``url`` brought up to ``revision``; the
    revisions it is then at."""
    db = Database(url)
    try:
        async with db.begin() as conn:
            await conn.run_sync(upgrade_to(revision))
            await conn.run_sync(_restore, rows)
        return await db.revisions()
    finally:
        await db.close()

def _backend(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


async def test_a_server_upgrades_an_older_database_and_answers_as_before(
    tmp_path: Path, database_url: str
) -> None:
    async with run_server(tmp_path, database_url) as run:
        ids = await _history(run)
        before = await _answers(run.wire, ids)
    text_of_accounts = json.dumps(before["accounts"])
    assert "s3cret" not in text_of_accounts and "password" not in text_of_accounts
    rows = await _dump(database_url)
    older = tmp_path / "older"
    older.mkdir()
    async with fresh_database(_backend(database_url), older) as old_url:
        assert await _restore_at(old_url, OLD, rows) == [OLD]
        # the same node (its data directory holds the key its secrets are sealed with)
        async with run_server(tmp_path, old_url) as run:
            assert await run.server.db.revisions() == [shipped_head()]
            after = await _answers(run.wire, ids)
            assert after == before
            # and it goes on working: the plan runs with its sealed variable
            await run.start_agents([IP])
            launched = await _ok(run.wire.v3(
                "execute_job_plan", {"bk_biz_id": 2, "job_plan_id": ids["plan"]}))
            job = launched["data"]["job_instance_id"]
            status = await run.wire.wait(job)
            step = status["step_instance_list"][0]["step_instance_id"]
            assert (await run.wire.logs(job, step, [IP]))[IP].strip() == "plain 值 10"


async def test_a_server_refuses_a_database_newer_than_itself(
    tmp_path: Path, database_url: str
) -> None:
    db = Database(database_url)
    try:
        async with db.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0099_later'"))
    finally:
        await db.close()
    proc = Proc(["jobfleet", "server", "--data-dir", str(tmp_path / "server"),
                 "--port", str(free_port()), "--database-url", database_url], {})
    await proc.start()
    code, said = await proc.ended()
    assert code == 2, said
    assert "Traceback" not in said, said
    refused = [line for line in said.splitlines() if "database_schema_refused" in line]
    assert len(refused) == 1, said
    assert "0099_later" in refused[0] and "newer jobfleet" in refused[0]


async def test_crons_sharing_a_name_before_names_were_held_survive_the_upgrade(
    tmp_path: Path, database_url: str
) -> None:
    """A database at 0022 where eight crons of a business share a name upgrades: they
    list, fire and are saved whole as before, a ninth of the name is refused, and of
    six renamed to one new name at once, one holds it alone."""
    async with run_server(tmp_path, database_url, engine=cron.FAST) as running:
        plan_id = await make_cron_plan(running.server.db, running.server.cipher)
        ids = [(await cron.saved(running.wire, name=f"nightly {i}", job_plan_id=plan_id,
                                 expression="0 2 * * *"))["id"] for i in range(8)]
    rows = await _dump(database_url)
    for row in rows["crons"]:
        row["name"] = "nightly"
    older = tmp_path / "older"
    older.mkdir()
    async with fresh_database(_backend(database_url), older) as old_url:
        await _restore_at(old_url, "0022_cron_firing_time", rows)
        # the same node: its data directory holds the key the plan's secrets are sealed with
        async with run_server(tmp_path, old_url, engine=cron.FAST) as running:
            wire = running.wire
            listed = await wire.v3("get_cron_list", {**BIZ, "name": "nightly"}, method="GET")
            assert sorted((c["id"], c["name"]) for c in listed["data"]["data"]) == [
                (i, "nightly") for i in ids], listed
            for cron_id in ids:
                kept = await cron.saved(wire, id=cron_id, name="nightly", job_plan_id=plan_id,
                                        expression="0 4 * * *")
                assert (kept["name"], kept["expression"]) == ("nightly", "0 4 * * *")
            ninth = await cron.save(wire, name="nightly", job_plan_id=plan_id,
                                     expression="0 2 * * *")
            assert ninth["code"] == 1245004, ninth
            # renamed away at once, one cron holds the new name alone and cannot come back
            renames = await asyncio.gather(
                *(cron.save(wire, id=i, name="weekly") for i in ids[2:]))
            assert sorted(r["code"] for r in renames) == [0] + [1245004] * 5, renames
            moved = next(r["data"]["id"] for r in renames if r["result"])
            assert (await cron.save(wire, id=moved, name="nightly"))["code"] == 1245004
            assert (await cron.save(wire, name="weekly", job_plan_id=plan_id,
                                    expression="0 2 * * *"))["code"] == 1245004
            # and a cron that shares its name fires its plan
            await running.start_agents([cron.A])
            shared = ids[1]
            await cron.saved(wire, id=shared, name="nightly", expression="* * * * *")
            assert (await cron.set_status(wire, shared, 1))["result"]
            jobs = await eventually(lambda: cron.cron_jobs(wire, shared), timeout=10)
            status = await wire.wait(jobs[0]["job_instance_id"])
            assert status["job_instance"]["status"] == 3, status
