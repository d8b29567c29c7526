"""SQL steps through the published client, against a real MariaDB and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bkapi_component.open.client import Client
from sqlalchemy import select
from tests.integration.dbservers import OTHER_USER, DbServer, mariadb, postgresql
from tests.integration.harness import Running

from jobfleet.store.tables import accounts, step_instances

IPS = ["127.0.0.2", "127.0.0.3"]
PASSWORD = "Sql-pa55-never-on-argv"
TYPES = {"mysql": 9, "postgresql": 12}
SLEEP = {"mysql": "SELECT SLEEP(5);", "postgresql": "SELECT pg_sleep(5);"}
GREET = {"mysql": "SELECT CONCAT('hi ', CURRENT_USER()) AS greeting;",
         "postgresql": "SELECT 'hi ' || current_user AS greeting;"}


@pytest.fixture(scope="module")
def mysql_server() -> Iterator[DbServer]:
    with mariadb(PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def postgresql_server() -> Iterator[DbServer]:
    with postgresql(PASSWORD) as server:
        yield server


def _client(running: Running) -> Client:
    client = Client(endpoint=running.url, bk_api_ver="v2")
    client.update_bkapi_authorization(bk_app_code=running.boot["bk_app_code"],
                                      bk_app_secret=running.boot["bk_app_secret"],
                                      bk_username="admin")
    return client


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def create_db_account(client: Client, kind: str, server: DbServer, alias: str,
                      password: str = PASSWORD) -> dict[str, Any]:
    listed = client.jobv3.get_account_list({"bk_biz_id": 2, "category": 1})
    root = next(a["id"] for a in listed["data"]["data"] if a["alias"] == "root")
    made = client.jobv3.create_account({
        "bk_biz_id": 2, "category": 2, "type": TYPES[kind], "account": server.user,
        "alias": alias, "db_password": password, "db_port": server.port,
        "db_name": server.database, "db_system_account_id": root})
    assert made["result"], made
    assert password not in json.dumps(made)
    return dict(made["data"])


def run_sql(client: Client, account_id: int, sql: str) -> dict[str, Any]:
    sub = client.jobv3.fast_execute_sql({
        "bk_biz_id": 2, "db_account_id": account_id, "script_content": _b64(sql),
        "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in IPS]}})
    assert sub["result"], sub
    return wait_job(client, sub["data"]["job_instance_id"])


def wait_job(client: Client, job_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        status = client.jobv3.get_job_instance_status(
            {"bk_biz_id": 2, "job_instance_id": job_id, "return_ip_result": True})
        if status["data"]["finished"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    data = status["data"]
    step = data["step_instance_list"][0]
    logs = client.jobv3.batch_get_job_instance_ip_log({
        "bk_biz_id": 2, "job_instance_id": job_id,
        "step_instance_id": step["step_instance_id"],
        "ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in IPS]})
    return {"status": data, "logs": {i["ip"]: i["log_content"]
                                     for i in logs["data"]["script_task_logs"]}}


async def _plan(running: Running, name: str, template: dict[str, Any]) -> int:
    """The id of a new plan of a new template made of ``template``."""
    own = "/api/jobfleet/v1"
    tpl = await running.wire.post(f"{own}/templates?bk_biz_id=2", template)
    assert tpl["result"], tpl
    plan = await running.wire.post(f"{own}/templates/{tpl['data']['id']}/plans?bk_biz_id=2",
                                   {"name": name})
    assert plan["result"], plan
    return int(plan["data"]["id"])


def command_lines() -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace"))
            except OSError:
                continue
    return out


def sql_flow(running: Running, kind: str, server: DbServer) -> dict[str, Any]:
    client = _client(running)
    account = create_db_account(client, kind, server, f"{kind}-app")
    assert account["category"] == 2 and account["type"] == TYPES[kind]
    assert account["db_port"] == server.port
    wrong = create_db_account(client, kind, server, f"{kind}-wrong", password="not-it")
    out: dict[str, Any] = {"account": account}
    out["greet"] = run_sql(client, account["id"], GREET[kind])
    out["broken"] = run_sql(client, account["id"], "SELECT * FROM no_such_table;")
    out["wrong"] = run_sql(client, wrong["id"], GREET[kind])
    # while the client runs, no process on this machine shows the password
    sub = client.jobv3.fast_execute_sql({
        "bk_biz_id": 2, "db_account_id": account["id"], "script_content": _b64(SLEEP[kind]),
        "target_server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}})
    assert sub["result"], sub
    seen_client = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = command_lines()
        assert not any(PASSWORD in line for line in lines)
        if any(f"={server.user}" in line and str(server.port) in line for line in lines):
            seen_client = True
            break
        time.sleep(0.05)
    out["seen_client"] = seen_client
    out["slept"] = wait_job(client, sub["data"]["job_instance_id"])["status"]
    return out


@pytest.mark.parametrize("kind", ["mysql", "postgresql"])
async def test_fast_execute_sql(running: Running, kind: str,
                                request: pytest.FixtureRequest) -> None:
    server: DbServer = request.getfixturevalue(f"{kind}_server")
    await running.start_agents(IPS)
    out = await asyncio.to_thread(sql_flow, running, kind, server)
    greet = out["greet"]
    assert greet["status"]["job_instance"]["status"] == 3, greet
    step = greet["status"]["step_instance_list"][0]
    assert step["type"] == 4
    assert sorted((r["ip"], r["status"], r["exit_code"]) for r in step["step_ip_result_list"]) \
        == [(ip, 9, 0) for ip in IPS]
    for ip in IPS:
        assert "hi sqlapp" in greet["logs"][ip], greet["logs"]
    broken = out["broken"]
    assert broken["status"]["job_instance"]["status"] == 4
    codes = {r["exit_code"] for r in
             broken["status"]["step_instance_list"][0]["step_ip_result_list"]}
    statuses = {r["status"] for r in
                broken["status"]["step_instance_list"][0]["step_ip_result_list"]}
    assert statuses == {104} and codes == {1 if kind == "mysql" else 3}
    assert all("no_such_table" in log for log in broken["logs"].values()), broken["logs"]
    wrong = out["wrong"]
    assert wrong["status"]["job_instance"]["status"] == 4
    assert all("sqlapp" in log for log in wrong["logs"].values())
    assert out["seen_client"]
    assert out["slept"]["job_instance"]["status"] == 3
    # at rest the password is sealed, in the account and in each step's snapshot
    async with running.server.db.connect() as conn:
        sealed = (await conn.execute(select(accounts.c.password).where(
            accounts.c.id == out["account"]["id"]))).scalar_one()
        configs = (await conn.execute(select(step_instances.c.config).where(
            step_instances.c.type == 4))).scalars().all()
    assert sealed.startswith("enc:v1:") and PASSWORD not in sealed
    assert configs and all(PASSWORD not in json.dumps(c) for c in configs)


async def test_sql_refusals(running: Running, mysql_server: DbServer) -> None:
    await running.start_agents(IPS[:1])
    wire = running.wire
    target = {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}
    base = {"bk_biz_id": 2, "script_content": _b64("SELECT 1;"), "target_server": target}
    client = _client(running)
    account = await asyncio.to_thread(create_db_account, client, "mysql", mysql_server, "dba")
    root = (await wire.v3("get_account_list", {"bk_biz_id": 2, "category": 1},
                          method="GET"))["data"]["data"][0]["id"]
    cases = [
        ({**base}, 1241004),  # no db_account_id
        ({**base, "db_account_id": 999_999}, 1244003),
        ({**base, "db_account_id": root}, 1244003),  # a system account is no database account
        ({**base, "db_account_id": account["id"], "script_content": None}, 1241004),
        ({**base, "db_account_id": account["id"], "script_content": "%%%"}, 1241005),
        ({**base, "db_account_id": account["id"], "target_server": None}, 1241004),
        ({**base, "db_account_id": "x"}, 1241010),
        # PostgreSQL (the store) cannot hold a NUL: refused alike on every store
        ({**base, "db_account_id": account["id"], "script_content": _b64("SELECT 1;\x00")},
         1241010),
    ]
    for body, code in cases:
        answer = await wire.v3("fast_execute_sql", {k: v for k, v in body.items()
                                                    if v is not None})
        assert answer["code"] == code, (body, answer)
    # a stored SQL script runs by its id here, and nowhere else
    made = await wire.v3("create_script", {"bk_biz_id": 2, "name": "ping", "script_language": 6,
                                           "content": _b64("SELECT 'pong' AS ping;"),
                                           "version": "1"})
    assert made["result"], made
    script_id = made["data"]["script_id"]
    await wire.v3("publish_script_version", {"bk_biz_id": 2, "script_id": script_id,
                                             "script_version_id": made["data"]["id"]})
    by_id = await wire.v3("fast_execute_sql", {"bk_biz_id": 2, "db_account_id": account["id"],
                                               "script_id": script_id, "target_server": target})
    assert by_id["result"], by_id
    done = await wire.wait(by_id["data"]["job_instance_id"])
    assert done["job_instance"]["status"] == 3, done
    logs = await wire.logs(by_id["data"]["job_instance_id"], by_id["data"]["step_instance_id"],
                           IPS[:1])
    assert logs == {IPS[0]: "ping\npong\n"}
    as_shell = await wire.v3("fast_execute_script", {"bk_biz_id": 2, "script_id": script_id,
                                                     "account_alias": "root",
                                                     "target_server": target})
    assert as_shell["code"] == 1241010, as_shell
    shell = await wire.v3("create_script", {"bk_biz_id": 2, "name": "sh", "script_language": 1,
                                            "content": _b64("echo"), "version": "1"})
    await wire.v3("publish_script_version", {"bk_biz_id": 2,
                                             "script_id": shell["data"]["script_id"],
                                             "script_version_id": shell["data"]["id"]})
    not_sql = await wire.v3("fast_execute_sql", {"bk_biz_id": 2, "db_account_id": account["id"],
                                                 "script_id": shell["data"]["script_id"],
                                                 "target_server": target})
    assert not_sql["code"] == 1241010, not_sql
    for field, value, code in (("db_port", 70000, 1241010), ("db_host", "a b", 1241010),
                               ("db_system_account_id", 999_999, 1244003),
                               ("type", 1, 1241010), ("id", 999_999, 1244003)):
        bad = await wire.v3("update_account", {"bk_biz_id": 2, "id": account["id"],
                                               field: value})
        assert bad["code"] == code, (field, bad)


async def test_sql_step_in_a_plan(running: Running, mysql_server: DbServer) -> None:
    await running.start_agents(IPS)
    client = _client(running)
    account = await asyncio.to_thread(create_db_account, client, "mysql", mysql_server,
                                      "plan-db")
    plan_id = await _plan(running, "db check now", {
        "name": "db check", "step_list": [{"name": "count", "type": 1, "script_info": {
            "script_content": "SELECT 40 + 2 AS answer;", "script_language": 6,
            "account": {"id": account["id"]},
            "server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in IPS]}}}]})

    def launch() -> dict[str, Any]:
        started = client.jobv3.execute_job_plan({"bk_biz_id": 2,
                                                 "job_plan_id": plan_id})
        assert started["result"], started
        return wait_job(client, started["data"]["job_instance_id"])

    out = await asyncio.to_thread(launch)
    assert out["status"]["job_instance"]["status"] == 3, out
    step = out["status"]["step_instance_list"][0]
    assert step["type"] == 4
    detail = await running.wire.v3("get_step_instance_detail", {
        "bk_biz_id": 2, "job_instance_id": out["status"]["job_instance"]["job_instance_id"],
        "step_instance_id": step["step_instance_id"]}, method="GET")
    info = detail["data"]["script_info"]
    assert info["script_language"] == 6
    assert info["account"] == {"id": account["id"], "name": "sqlapp", "alias": "plan-db"}
    assert PASSWORD not in json.dumps(detail)
    assert out["logs"] == {ip: "answer\n42\n" for ip in IPS}


async def test_a_value_set_by_a_host_is_not_sql_on_the_next_hosts(
        running: Running, mysql_server: DbServer) -> None:
    """A changeable variable a host set is not pasted into an SQL step's text: it would
    be SQL of that host's choosing run on every host of the step."""
    await running.start_agents(IPS)
    client = _client(running)
    account = await asyncio.to_thread(create_db_account, client, "mysql", mysql_server,
                                      "host-set-db")
    hostile = "x' UNION SELECT CONCAT('own', 'ed') AS rel -- "
    plan_id = await _plan(running, "db host value now", {
        "name": "db host value", "global_var_list": [
            {"name": "release", "type": 1, "value": "r-default", "changeable": 1}],
        "step_list": [
            {"name": "set", "type": 1, "script_info": {
                "script_content": f"release=\"{hostile}\"\n", "script_language": 1,
                "account": {"alias": "root"},
                "server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}}},
            {"name": "read", "type": 1, "script_info": {
                "script_content": "SELECT '${release}' AS rel;", "script_language": 6,
                "account": {"id": account["id"]},
                "server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in IPS]}}}]})
    started = await running.wire.v3("execute_job_plan",
                                    {"bk_biz_id": 2, "job_plan_id": plan_id})
    assert started["result"], started
    job_id = started["data"]["job_instance_id"]
    status = await running.wire.wait(job_id)
    assert [s["status"] for s in status["step_instance_list"]] == [3, 4], status
    step_id = status["step_instance_list"][1]["step_instance_id"]
    logs = await running.wire.logs(job_id, step_id, IPS)
    for log in logs.values():
        assert "owned" not in log, logs
        assert "variable 'release' was set by a host" in log, logs


async def update_db_account(running: Running, account_id: int,
                            **fields: Any) -> dict[str, Any]:
    """update_account is a gateway-only operation the published client does not declare:
    sent as the gateway path it has."""
    changed = await running.wire.v3("update_account", {"bk_biz_id": 2, "id": account_id,
                                                       **fields})
    assert changed["result"], changed
    assert PASSWORD not in json.dumps(changed)
    return dict(changed["data"])


async def test_update_db_account(running: Running, mysql_server: DbServer,
                                 postgresql_server: DbServer) -> None:
    """A database account moved to another server, port, database and password runs there."""
    await running.start_agents(IPS)
    client = _client(running)
    # made for the MariaDB server with a wrong password, then pointed at PostgreSQL
    made = await asyncio.to_thread(create_db_account, client, "mysql", mysql_server, "moving",
                                   password="stale")
    first = await asyncio.to_thread(run_sql, client, made["id"], GREET["mysql"])
    assert first["status"]["job_instance"]["status"] == 4
    moved = await update_db_account(
        running, made["id"], type=12, db_port=postgresql_server.port,
        db_name=postgresql_server.database, db_password=PASSWORD, db_host="127.0.0.1",
        description="now on PostgreSQL")
    assert (moved["type"], moved["db_port"], moved["db_name"], moved["description"]) == (
        12, postgresql_server.port, postgresql_server.database, "now on PostgreSQL")
    assert "password" not in moved and "db_password" not in moved
    second = await asyncio.to_thread(run_sql, client, made["id"], GREET["postgresql"])
    assert second["status"]["job_instance"]["status"] == 3, second
    assert all("hi sqlapp" in log for log in second["logs"].values())
    # back to MariaDB with only the fields that differ; the password stays
    back = await update_db_account(running, made["id"], type=9, db_port=mysql_server.port,
                                   db_name=mysql_server.database)
    assert back["db_port"] == mysql_server.port
    listed = await asyncio.to_thread(client.jobv3.get_account_list,
                                     {"bk_biz_id": 2, "category": 2})
    assert [a["db_port"] for a in listed["data"]["data"] if a["id"] == made["id"]] == [
        mysql_server.port]
    third = await asyncio.to_thread(run_sql, client, made["id"], GREET["mysql"])
    assert third["status"]["job_instance"]["status"] == 3, third
    async with running.server.db.connect() as conn:
        sealed = (await conn.execute(select(accounts.c.password).where(
            accounts.c.id == made["id"]))).scalar_one()
    assert sealed.startswith("enc:v1:") and PASSWORD not in sealed


async def test_sql_step_variables_and_retry(running: Running, mysql_server: DbServer) -> None:
    """A plan's SQL step selects a global variable's value; a failed SQL step is retried
    (failed hosts, then all hosts) through operate_step_instance."""
    await running.start_agents(IPS)
    client = _client(running)
    account = await asyncio.to_thread(create_db_account, client, "mysql", mysql_server,
                                      "vars-db")
    table = f"retry_{int(time.time() * 1000)}"
    plan_id = await _plan(running, "db vars now", {
        "name": "db vars", "global_var_list": [
            {"name": "release", "type": 1, "value": "r-default"},
            {"name": "table", "type": 1, "value": table}],
        "step_list": [{"name": "read", "type": 1, "script_info": {
            "script_content": "SELECT '${release}' AS rel, COUNT(*) AS n FROM ${table};",
            "script_language": 6, "account": {"id": account["id"]},
            "server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in IPS]}}}]})

    def operate(job_id: int, step_id: int, code: int) -> dict[str, Any]:
        return dict(client.jobv3.operate_step_instance({
            "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
            "operation_code": code}))

    def flow() -> dict[str, Any]:
        started = client.jobv3.execute_job_plan({
            "bk_biz_id": 2, "job_plan_id": plan_id,
            "global_var_list": [{"name": "release", "value": "r-42"}]})
        assert started["result"], started
        job_id = started["data"]["job_instance_id"]
        failed = wait_job(client, job_id)
        step_id = failed["status"]["step_instance_list"][0]["step_instance_id"]
        # all hosts again: the table is still missing
        retried_all = operate(job_id, step_id, 8)
        failed_again = wait_job(client, job_id)
        # the table comes to exist; retrying the failed hosts passes
        made = run_sql(client, account["id"], f"CREATE TABLE IF NOT EXISTS {table} (id INT);")
        retried = operate(job_id, step_id, 2)
        again = wait_job(client, job_id)
        # a step that passed has nothing to retry
        refused = operate(job_id, step_id, 2)
        run_sql(client, account["id"], f"DROP TABLE IF EXISTS {table};")
        return {"failed": failed, "retried_all": retried_all, "failed_again": failed_again,
                "made": made, "retried": retried, "again": again, "refused": refused,
                "job_id": job_id, "step_id": step_id}

    out = await asyncio.to_thread(flow)
    assert out["failed"]["status"]["job_instance"]["status"] == 4, out["failed"]
    assert all(table in log for log in out["failed"]["logs"].values()), out["failed"]["logs"]
    assert out["retried_all"]["result"], out["retried_all"]
    assert out["failed_again"]["status"]["job_instance"]["status"] == 4, out["failed_again"]
    assert out["made"]["status"]["job_instance"]["status"] == 3, out["made"]
    assert out["retried"]["result"], out["retried"]
    assert out["again"]["status"]["job_instance"]["status"] == 3, out["again"]
    assert out["again"]["logs"] == {ip: "rel\tn\nr-42\t0\n" for ip in IPS}, out["again"]
    assert out["refused"]["code"] == 1241003, out["refused"]
    detail = await running.wire.v3("get_step_instance_status", {
        "bk_biz_id": 2, "job_instance_id": out["job_id"],
        "step_instance_id": out["step_id"]}, method="GET")
    assert detail["data"]["execute_count"] == 2, detail


async def test_oracle_and_db2_without_client(running: Running, tmp_path: Path) -> None:
    """Oracle and DB2 accounts are accepted; a host without sqlplus / db2 fails with a
    line that names the missing client, and the password is on no command line."""
    await running.start_agents(IPS[:1])
    wire = running.wire
    root = (await wire.v3("get_account_list", {"bk_biz_id": 2, "category": 1},
                          method="GET"))["data"]["data"][0]["id"]
    target = {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}
    for type_, program in ((10, "sqlplus"), (11, "db2")):
        made = await wire.v3("create_account", {
            "bk_biz_id": 2, "category": 2, "type": type_, "account": "scott",
            "alias": f"db-{type_}", "db_password": PASSWORD, "db_system_account_id": root,
            "db_host": "127.0.0.1", "db_name": "ORCL"})
        assert made["result"], made
        assert made["data"]["db_port"] == (1521 if type_ == 10 else 50000)
        sub = await wire.v3("fast_execute_sql", {
            "bk_biz_id": 2, "db_account_id": made["data"]["id"],
            "script_content": _b64("SELECT 1 FROM dual;"), "target_server": target})
        assert sub["result"], sub
        done = await wire.wait(sub["data"]["job_instance_id"])
        assert done["job_instance"]["status"] == 4, done
        host = done["step_instance_list"][0]["step_ip_result_list"][0]
        assert (host["status"], host["exit_code"]) == (104, 1), host
        logs = await wire.logs(sub["data"]["job_instance_id"], sub["data"]["step_instance_id"],
                               IPS[:1])
        assert f"client '{program}' is not installed" in logs[IPS[0]], logs
        assert PASSWORD not in logs[IPS[0]]


# work the server does not stop for when its client goes away (MariaDB notices a gone
# client in SLEEP(), not in work of its own)
LONG = {"mysql": "SELECT BENCHMARK(20000000000, MD5('slow')) AS slept;",
        "postgresql": "SELECT pg_sleep(60) AS slept;"}
RUNNING = {
    "mysql": "SELECT COUNT(*) FROM information_schema.processlist"
             " WHERE info LIKE 'SELECT BENCHMARK(%';",
    "postgresql": "SELECT count(*) FROM pg_stat_activity"
                  " WHERE query LIKE 'SELECT pg_sleep(60)%' AND state = 'active';",
}


def cancel_left(server: DbServer, kind: str) -> None:
    """Stops what the test left running, so the shared server is not kept busy."""
    if kind == "postgresql":
        server.query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
                     " WHERE query LIKE 'SELECT pg_sleep(60)%';")
        return
    ids = server.query("SELECT id FROM information_schema.processlist"
                       " WHERE info LIKE 'SELECT BENCHMARK(%';").split()
    server.query("".join(f"KILL QUERY {int(i)};" for i in ids))


@pytest.mark.parametrize("kind", ["mysql", "postgresql"])
async def test_a_statement_past_the_step_timeout_ends_on_the_server(
        running: Running, kind: str, request: pytest.FixtureRequest) -> None:
    """The step's timeout kills the client on the host and also ends its statement on the
    database server, which would otherwise keep running (and holding its locks)."""
    server: DbServer = request.getfixturevalue(f"{kind}_server")
    await running.start_agents(IPS[:1])
    client = _client(running)
    account = await asyncio.to_thread(create_db_account, client, kind, server, f"{kind}-slow")
    sub = await running.wire.v3("fast_execute_sql", {
        "bk_biz_id": 2, "db_account_id": account["id"], "script_content": _b64(LONG[kind]),
        "timeout": 3, "target_server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}})
    assert sub["result"], sub
    done = await running.wire.wait(sub["data"]["job_instance_id"])
    host = done["step_instance_list"][0]["step_ip_result_list"][0]
    assert host["status"] == 102, done  # the script timed out
    left = "?"
    # the server's bound is 3 s past the step's timeout
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = (await asyncio.to_thread(server.query, RUNNING[kind])).strip()
        if left == "0":
            break
        await asyncio.sleep(0.2)
    if left != "0":
        await asyncio.to_thread(cancel_left, server, kind)
    assert left == "0", f"the statement still runs on the server: {left}"


async def test_a_terminated_job_ends_its_statement_on_postgresql(
        running: Running, postgresql_server: DbServer) -> None:
    """Terminating the job kills the client; PostgreSQL ends the statement of the client
    gone at once, not at the step's timeout."""
    await running.start_agents(IPS[:1])
    client = _client(running)
    account = await asyncio.to_thread(create_db_account, client, "postgresql",
                                      postgresql_server, "postgresql-stopped")
    sub = await running.wire.v3("fast_execute_sql", {
        "bk_biz_id": 2, "db_account_id": account["id"],
        "script_content": _b64(LONG["postgresql"]), "timeout": 600,
        "target_server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}})
    assert sub["result"], sub
    job_id = sub["data"]["job_instance_id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = await asyncio.to_thread(postgresql_server.query, RUNNING["postgresql"])
        if seen.strip() == "1":
            break
        await asyncio.sleep(0.1)
    stop = await running.wire.v3("operate_job_instance", {
        "bk_biz_id": 2, "job_instance_id": job_id, "operation_code": 1})
    assert stop["result"], stop
    done = await running.wire.wait(job_id)
    assert done["job_instance"]["status"] == 11, done  # terminated
    left = "?"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = (await asyncio.to_thread(postgresql_server.query,
                                        RUNNING["postgresql"])).strip()
        if left == "0":
            break
        await asyncio.sleep(0.2)
    if left != "0":
        await asyncio.to_thread(cancel_left, postgresql_server, "postgresql")
    assert left == "0", f"the statement still runs on the server: {left}"


HARD_PASSWORD = "a'b c;d%s$HOME\\x`y`&z\"é中 !"


@pytest.mark.parametrize("kind", ["mysql", "postgresql"])
async def test_a_password_with_quotes_spaces_dollars_and_non_ascii_connects(
        running: Running, kind: str, request: pytest.FixtureRequest) -> None:
    server: DbServer = request.getfixturevalue(f"{kind}_server")
    if kind == "mysql":
        quoted = HARD_PASSWORD.replace("\\", "\\\\").replace("'", "\\'")
        server.query(f"CREATE USER IF NOT EXISTS '{OTHER_USER}'@'%' IDENTIFIED BY '{quoted}';"
                     f"GRANT ALL ON {server.database}.* TO '{OTHER_USER}'@'%';")
    else:
        quoted = HARD_PASSWORD.replace("'", "''")
        server.query(f"DROP ROLE IF EXISTS {OTHER_USER}; "
                     f"CREATE ROLE {OTHER_USER} LOGIN PASSWORD '{quoted}';")
    await running.start_agents(IPS[:1])
    client = _client(running)
    other = DbServer(server.port, OTHER_USER, HARD_PASSWORD, server.database, server.directory,
                     server.admin)
    account = await asyncio.to_thread(create_db_account, client, kind, other, f"{kind}-hard",
                                      HARD_PASSWORD)
    sub = await running.wire.v3("fast_execute_sql", {
        "bk_biz_id": 2, "db_account_id": account["id"], "script_content": _b64(
            "SELECT 'in' AS hard;"),
        "target_server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}})
    assert sub["result"], sub
    done = await running.wire.wait(sub["data"]["job_instance_id"])
    logs = await running.wire.logs(sub["data"]["job_instance_id"],
                                   sub["data"]["step_instance_id"], IPS[:1])
    assert done["job_instance"]["status"] == 3, (done, logs)
    assert "in" in logs[IPS[0]] and HARD_PASSWORD not in logs[IPS[0]]
    # the wrong one is refused: the password is checked, not ignored
    wrong = await asyncio.to_thread(create_db_account, client, kind, other, f"{kind}-hard2",
                                    HARD_PASSWORD[:-1])
    sub = await running.wire.v3("fast_execute_sql", {
        "bk_biz_id": 2, "db_account_id": wrong["id"], "script_content": _b64("SELECT 1;"),
        "target_server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}})
    done = await running.wire.wait(sub["data"]["job_instance_id"])
    assert done["job_instance"]["status"] == 4, done
