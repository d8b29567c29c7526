"""Who may do what: app restrictions, administration apps, secrets kept out of query
strings, and queries that never show another business's hosts."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import httpx
from sqlalchemy import event, select
from tests.integration.harness import Running, Wire, b64

from jobfleet.store.database import now_ms
from jobfleet.store.tables import audit_log

ADMIN = "/api/jobfleet/v1"
V3 = "/api/bk-job/prod/api/v3"
A, B = "127.0.0.2", "127.0.0.5"


async def admin(wire: Wire, method: str, path: str, body: Any = None,
                **override: str) -> dict[str, Any]:
    resp = await wire.http.request(method, ADMIN + path, json=body,
                                   headers=wire.headers(**override))
    return dict(resp.json())


def listing(biz: int) -> dict[str, Any]:
    return {"bk_biz_id": biz, "create_time_start": now_ms() - 60_000,
            "create_time_end": now_ms() + 60_000}


async def second_business(wire: Wire) -> None:
    made = await admin(wire, "POST", "/businesses", {"bk_biz_id": 3, "name": "three"})
    assert made["result"], made


async def test_apps_are_limited_to_their_users_and_businesses(running: Running) -> None:
    wire = running.wire
    await second_business(wire)
    assert (await admin(wire, "POST", "/users", {"username": "alice"}))["result"]
    for biz in ("2", "3"):
        await admin(wire, "POST", "/users/alice/grants", {"scope_type": "biz", "scope_id": biz})
    made = await admin(wire, "POST", "/apps", {"app_code": "limited",
                                               "allowed_users": ["alice"], "allowed_biz": [3]})
    assert made["result"], made
    assert (made["data"]["allowed_users"], made["data"]["allowed_biz"],
            made["data"]["is_admin"]) == (["alice"], [3], False)
    limited = Wire(running.url, "limited", made["data"]["app_secret"], "alice")
    try:
        ok = await limited.v3("get_job_instance_list", listing(3), method="GET")
        assert ok["result"], ok
        other_biz = await limited.v3("get_job_instance_list", listing(2), method="GET")
        assert other_biz["code"] == 9900403
        assert "'limited' may not touch biz 2" in other_biz["message"]
        for user in ("bob", "admin"):
            named = await limited.http.get(f"{V3}/get_job_instance_list", params=listing(3),
                                           headers=limited.headers(bk_username=user))
            assert named.json()["code"] == 9900403
            assert f"may not act for user '{user}'" in named.json()["message"]
        # the host list shows the app's businesses only
        await running.start_agents([A])
        hosts = await admin(limited, "GET", "/hosts")
        assert hosts["result"] and hosts["data"] == []
        # naming a business the app may not touch is refused, as on every route that
        # names one, not answered with an empty list
        named_biz = await admin(limited, "GET", "/hosts?bk_biz_id=2")
        assert named_biz["code"] == 9900403 and "may not touch biz 2" in named_biz["message"]
        own = await admin(limited, "GET", "/hosts?bk_biz_id=3")
        assert own["result"] and own["data"] == [], own
        # and a user who holds no business is refused one by name
        assert (await admin(wire, "POST", "/users", {"username": "nobody"}))["result"]
        stranger = await admin(wire, "GET", "/hosts?bk_biz_id=2", bk_username="nobody")
        assert stranger["code"] == 9900403 and "no permission" in stranger["message"], stranger
        assert (await admin(wire, "GET", "/hosts", bk_username="nobody"))["data"] == []
        # a GSE query answers for another business's host as for an unknown one
        gse = await limited.v3("get_agent_status", {"hosts": [{"ip": A, "bk_cloud_id": 0}]},
                               prefix="/api/c/compapi/v2/gse")
        assert gse["data"][f"0:{A}"]["bk_agent_alive"] == 0, gse
        seen = await wire.v3("get_agent_status", {"hosts": [{"ip": A, "bk_cloud_id": 0}]},
                             prefix="/api/c/compapi/v2/gse")
        assert seen["data"][f"0:{A}"]["bk_agent_alive"] == 1
    finally:
        await limited.close()


async def test_only_administration_apps_reach_administration_routes(running: Running) -> None:
    wire = running.wire
    made = await admin(wire, "POST", "/apps", {"app_code": "wide"})
    assert made["data"]["is_admin"] is False and made["data"]["allowed_users"] == "any"
    wide = Wire(running.url, "wide", made["data"]["app_secret"], "admin")
    try:
        # an ordinary app acting for the administrator still runs bk-job calls
        assert (await wide.v3("get_job_instance_list", listing(2), method="GET"))["result"]
        for method, path, body in (
            ("GET", "/apps", None),
            ("POST", "/apps", {"app_code": "sneaky", "is_admin": True}),
            ("POST", "/users", {"username": "mallory", "is_admin": True}),
            ("POST", "/users/admin/grants", {"scope_type": "biz", "scope_id": "2"}),
            ("POST", "/businesses", {"bk_biz_id": 9, "name": "nine"}),
            ("POST", "/enroll-tokens", {}),
            ("DELETE", "/agents/whatever", None),
            ("GET", "/audit", None),
            ("GET", "/apps/wide/quota", None),
            ("PUT", "/apps/wide/quota", {"max_running_jobs": 100}),
            ("GET", "/host-whitelist", None),
        ):
            answer = await admin(wide, method, path, body)
            assert answer["code"] == 9900403, (method, path, answer)
            assert "'wide' is not an administration app" in answer["message"], answer
        rule = await wide.v3("create_dangerous_rule", {
            "expression": "rm -rf", "script_language_list": [1], "action": 1})
        assert rule["code"] == 9900403 and "administration app" in rule["message"]
        users = {u["username"] for u in (await admin(wire, "GET", "/users"))["data"]}
        assert "mallory" not in users
        apps = {a["app_code"]: a for a in (await admin(wire, "GET", "/apps"))["data"]}
        assert "sneaky" not in apps
        assert apps["jobfleet"]["is_admin"] is True and apps["wide"]["is_admin"] is False
    finally:
        await wide.close()
    # an administration app made through the CLI reaches them
    await second_business(wire)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobfleet", "--server", running.url, "--bootstrap",
        str(running.data_dir / "server" / "bootstrap.json"), "admin", "app", "create", "ops",
        "--biz", "2,3", "--admin", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err
    secret = out.decode().split("app_secret: ")[1].strip()
    ops = Wire(running.url, "ops", secret, "admin")
    try:
        apps = {a["app_code"]: a for a in (await admin(ops, "GET", "/apps"))["data"]}
        assert (apps["ops"]["is_admin"], apps["ops"]["allowed_biz"]) == (True, [2, 3])
        # the administrator through an app that is not limited to users
        whoami = await admin(ops, "GET", "/whoami")
        assert whoami["data"]["app"]["allowed_users"] == "any"
        # an administration app is still held to its businesses
        denied = await ops.v3("get_job_instance_list", listing(5), method="GET")
        assert denied["code"] in (1243049, 9900403)
    finally:
        await ops.close()
    bad = await admin(wire, "POST", "/apps", {"app_code": "bad", "allowed_biz": ["x"]})
    assert bad["code"] == 1241010, bad
    for field, value in (("allowed_users", [""]), ("allowed_users", []),
                         ("allowed_users", {"a": 1}), ("allowed_biz", [0]),
                         ("allowed_biz", [2**70]), ("allowed_biz", "2,x")):
        bad = await admin(wire, "POST", "/apps", {"app_code": "bad", field: value})
        assert bad["code"] == 1241010, (field, value, bad)
    assert "bad" not in {a["app_code"] for a in (await admin(wire, "GET", "/apps"))["data"]}


async def test_app_secrets_are_refused_in_query_strings(running: Running) -> None:
    wire = running.wire
    secret = running.boot["bk_app_secret"]
    creds = {"bk_app_code": running.boot["bk_app_code"], "bk_app_secret": secret,
             "bk_username": "admin"}
    for path, headers in (
        (f"{V3}/get_job_instance_list", wire.headers()),
        ("/api/c/compapi/v2/jobv3/get_job_instance_list", {}),
        ("/api/c/compapi/v2/jobv3/get_job_instance_list", wire.headers()),
        (f"{ADMIN}/whoami", wire.headers()),
        (f"{ADMIN}/files/nothing", wire.headers()),
    ):
        resp = await wire.http.get(path, params={**listing(2), **creds}, headers=headers)
        assert resp.status_code == 401, (path, resp.text)
        assert resp.json()["code"] == 1240005
        assert "not accepted in the query string" in resp.json()["message"]
    # the header, and on the ESB path the JSON body, still work
    assert (await wire.v3("get_job_instance_list", listing(2), method="GET"))["result"]
    body = await wire.http.post("/api/c/compapi/v2/jobv3/get_job_instance_list",
                                json={**listing(2), **creds})
    assert body.json()["result"] is True


async def test_file_step_logs_never_show_another_business_host(running: Running,
                                                               tmp_path: Any) -> None:
    wire = running.wire
    await second_business(wire)
    await running.start_agents([A])
    await running.start_agents([B], biz=3)
    hosts = {h.ip: h for h in await running.server.inventory.list()}
    other = hosts[B]
    assert other.bk_biz_id == 3
    pushed = await wire.v3("push_config_file", {
        "bk_biz_id": 2, "account_alias": "root", "file_target_path": f"{tmp_path}/etc",
        "file_list": [{"file_name": "a.ini", "content": b64("x=1\n")}],
        "target_server": {"ip_list": [{"ip": A, "bk_cloud_id": 0}]}})
    assert pushed["result"], pushed
    job_id, step_id = pushed["data"]["job_instance_id"], pushed["data"]["step_instance_id"]
    await wire.wait(job_id)
    ids = {"bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id}
    for probe in ({"bk_host_id": other.bk_host_id}, {"ip": B, "bk_cloud_id": 0}):
        # as bk-job: a host that has no log in the step gets an empty one, and the answer
        # names it only as the request did
        answer = await wire.v3("get_job_instance_ip_log", {**ids, **probe}, method="GET")
        assert answer["result"] is True, answer
        assert answer["data"]["file_logs"] == [], answer
        if "ip" in probe:
            assert answer["data"]["bk_host_id"] is None, answer
        else:
            assert B not in json.dumps(answer)
    mine = await wire.v3("get_job_instance_ip_log", {**ids, "bk_host_id": hosts[A].bk_host_id},
                         method="GET")
    assert mine["result"] and mine["data"]["ip"] == A, mine
    batch = await wire.v3("batch_get_job_instance_ip_log", {
        **ids, "host_id_list": [other.bk_host_id, hosts[A].bk_host_id],
        "ip_list": [{"ip": B, "bk_cloud_id": 0}]})
    assert batch["result"], batch
    assert [h["ip"] for h in batch["data"]["file_task_logs"]] == [A]
    assert B not in json.dumps(batch)
    # script steps, step status filters and job status: only the step's hosts
    job = await wire.run_script("echo hi", [A])
    await wire.wait(job["job_instance_id"])
    ids = {"bk_biz_id": 2, "job_instance_id": job["job_instance_id"],
           "step_instance_id": job["step_instance_id"]}
    for name, extra in (
        ("get_job_instance_ip_log", {"bk_host_id": other.bk_host_id}),
        ("batch_get_job_instance_ip_log", {"host_id_list": [other.bk_host_id]}),
        ("get_step_instance_status", {"search_ip": B}),
        ("get_job_instance_status", {"return_ip_result": "true"}),
    ):
        answer = await wire.v3(name, {**ids, **extra}, method="GET")
        assert B not in json.dumps(answer), (name, answer)
    # asked by address: the address asked for comes back, nothing the server knows of it
    answer = await wire.v3("get_job_instance_ip_log", {**ids, "ip": B, "bk_cloud_id": 0},
                           method="GET")
    assert answer["data"]["bk_host_id"] is None and answer["data"]["log_content"] is None


async def test_posting_a_user_again_is_refused_unless_a_role_is_given(running: Running) -> None:
    wire = running.wire
    made = await admin(wire, "POST", "/users", {"username": "root2", "is_admin": True})
    assert made["data"] == {"username": "root2", "is_admin": True}
    # posted again without a role, it changes nothing: refused as a second app of one code
    # is, with the way to what was likely meant, and still an administrator
    again = await admin(wire, "POST", "/users", {"username": "root2"})
    assert (again["result"], again["code"]) == (False, 1249409), again
    assert again["message"].startswith("User 'root2' already exists: set its password with "
                                       "`jobfleet admin user passwd root2`"), again
    assert "--admin or --no-admin" in again["message"], again
    listed = {u["username"]: u["is_admin"] for u in (await admin(wire, "GET", "/users"))["data"]}
    assert listed["root2"] is True
    fresh = await admin(wire, "POST", "/users", {"username": "newbie"})
    assert fresh["data"] == {"username": "newbie", "is_admin": False}
    demoted = await admin(wire, "POST", "/users", {"username": "root2", "is_admin": False})
    assert demoted["data"] == {"username": "root2", "is_admin": False}
    listed = {u["username"]: u["is_admin"] for u in (await admin(wire, "GET", "/users"))["data"]}
    assert (listed["root2"], listed["newbie"]) == (False, False)


async def test_a_job_is_shown_in_its_own_business_only(running: Running) -> None:
    """Every way a job's status or logs are refused, with the code and message each had:
    the scope is judged before the job, whatever the job is."""
    wire = running.wire
    await second_business(wire)
    await running.start_agents([A])
    job = await wire.run_script("echo hi", [A])
    job_id, step_id = job["job_instance_id"], job["step_instance_id"]
    await wire.wait(job_id)
    assert (await admin(wire, "POST", "/users", {"username": "carol"}))["result"]
    await admin(wire, "POST", "/users/carol/grants", {"scope_type": "biz", "scope_id": "3"})
    made = await admin(wire, "POST", "/apps", {"app_code": "only3", "allowed_users": ["admin"],
                                               "allowed_biz": [3]})
    assert made["result"], made
    only3 = Wire(running.url, "only3", made["data"]["app_secret"], "admin")
    gone = f"Job instance {job_id} does not exist (or its history was purged)"
    cases: list[tuple[Wire, dict[str, Any], dict[str, str], tuple[int, str]]] = [
        (wire, {"bk_biz_id": 3}, {}, (1244006, gone)),
        (wire, {"bk_scope_type": "biz", "bk_scope_id": "3"}, {}, (1244006, gone)),
        (wire, {"bk_biz_id": 999}, {}, (1243049, "Business 999 does not exist")),
        (wire, {"bk_biz_id": 2}, {"bk_username": "carol"},
         (9900403, "User 'carol' has no permission to view_history in biz 2")),
        # the scope before the id: a malformed one is not what a stranger hears of
        (wire, {"bk_biz_id": 2, "job_instance_id": "x"}, {"bk_username": "carol"},
         (9900403, "User 'carol' has no permission to view_history in biz 2")),
        (only3, {"bk_biz_id": 2}, {},
         (9900403, "App 'only3' may not touch biz 2")),
        (wire, {"bk_biz_id": 2, "job_instance_id": job_id + 1000}, {},
         (1244006, f"Job instance {job_id + 1000} does not exist (or its history was purged)")),
    ]
    try:
        for route, extra in (("get_job_instance_status", {}),
                             ("get_job_instance_ip_log", {"step_instance_id": step_id,
                                                          "ip": A, "bk_cloud_id": 0})):
            mine = await wire.v3(route, {"bk_biz_id": 2, "job_instance_id": job_id, **extra},
                                 method="GET")
            assert mine["result"], (route, mine)
            for caller, scope, who, expected in cases:
                params = {"job_instance_id": job_id, **extra, **scope}
                answer = await caller.get(f"{V3}/{route}", params,
                                          headers=caller.headers(**who))
                assert (answer["code"], answer["message"]) == expected, (route, scope, who)
                assert answer["result"] is False and not answer.get("data"), answer
    finally:
        await only3.close()


async def test_a_status_poll_reads_the_store_on_one_connection(running: Running) -> None:
    """A client polls a running job every few tens of ms: the scope check costs it no
    connection of its own."""
    wire = running.wire
    await running.start_agents([A])
    job = await wire.run_script("echo hi", [A])
    await wire.wait(job["job_instance_id"])
    checkouts: list[int] = []
    engine = running.server.db.engine.sync_engine

    def checkout(*_: Any) -> None:
        checkouts.append(1)

    event.listen(engine, "checkout", checkout)
    try:
        fewest = None
        # the fewest of several polls: a background task of the server may take a
        # connection during any one of them, never fewer
        for _ in range(5):
            checkouts.clear()
            poll = await wire.v3("get_job_instance_status",
                                 {"bk_biz_id": 2, "job_instance_id": job["job_instance_id"]},
                                 method="GET")
            assert poll["result"] and poll["data"]["finished"], poll
            fewest = len(checkouts) if fewest is None else min(fewest, len(checkouts))
    finally:
        event.remove(engine, "checkout", checkout)
    assert fewest == 1


async def test_a_new_username_follows_bk_users_rule(running: Running) -> None:
    """Users BlueKing signs in are named by bk-user's rule: a new name outside it is
    refused (1241010, naming the rule); a user stored before the rule keeps working."""
    wire, server = running.wire, running.server
    for name in ("bob smith", "a", "-bob", "bob.", "x" * 33, "bob@corp", "ev\nil", "r\u202eoot"):
        for body in ({"username": name}, {"username": name, "is_admin": True}):
            made = await admin(wire, "POST", "/users", body)
            assert made["code"] == 1241010, (name, made)
            assert made["message"] == (
                f"Invalid parameter [username]: {name!r}: a username is 2 to 32 letters, "
                "digits, '_', '.' and '-', starting and ending with a letter or digit"), made
            assert "\n" not in made["message"] and "\u202e" not in made["message"]
    granted = await admin(wire, "POST", "/users/bob%20smith/grants",
                          {"scope_type": "biz", "scope_id": "2"})
    assert granted["code"] == 1241010, granted
    granted = await admin(wire, "POST", "/users/" + "y" * 300 + "/grants",
                          {"scope_type": "biz", "scope_id": "2"})
    assert granted["code"] == 1241010, granted
    assert granted["message"].startswith("Invalid parameter [username]: 300 characters: "), granted
    for name in ("bo", "Bob.Smith-2", "x" * 32, "7_up"):
        assert (await admin(wire, "POST", "/users", {"username": name}))["result"], name
    assert "bob smith" not in {u["username"] for u in await server.identity.list_users()}

    # a user stored before the rule: its role, grants, password and sign-in are as before
    await server.identity.create_user("old user")
    await server.identity.grant("old hand", "biz", "2")
    assert (await admin(wire, "POST", "/users",
                        {"username": "old user", "is_admin": False}))["result"]
    for old in ("old user", "old hand"):
        assert (await admin(wire, "POST", "/users/" + old.replace(" ", "%20") + "/grants",
                            {"scope_type": "biz", "scope_id": "2"}))["result"], old
    assert (await admin(wire, "POST", "/users/old%20user/password",
                        {"password": "old-pass-123"}))["result"]
    async with httpx.AsyncClient(base_url=running.url, trust_env=False) as http:
        signed = await http.post("/login", data={"username": "old user",
                                                 "password": "old-pass-123"})
        assert signed.status_code == 303 and "error" not in signed.headers["location"]


async def test_a_control_character_in_a_name_reaches_no_record(running: Running) -> None:
    """An app acts for any name, so bk_username is refused when it holds a control
    character; a name typed at the login form is recorded with it written out."""
    wire, server = running.wire, running.server
    for name in ("ev\nil", "ev\ril", "r\u202eoot", "a\u2028b", "tab\there"):
        answer = await wire.v3("get_job_instance_list", listing(2), method="GET")
        assert answer["result"], answer
        refused = await wire.http.get(V3 + "/get_job_instance_list", params=listing(2),
                                      headers=wire.headers(bk_username=name))
        body = refused.json()
        assert (refused.status_code, body["code"]) == (401, 1240005), body
        assert body["message"] == "bk_username holds a control character"
    async with httpx.AsyncClient(base_url=running.url, trust_env=False) as http:
        await http.post("/login", data={"username": "admin\nlevel=INFO forged",
                                        "password": "wrong"})
    async with server.db.connect() as conn:
        names = set((await conn.execute(select(audit_log.c.username))).scalars())
    assert "admin\\nlevel=INFO forged" in names
    assert not [n for n in names if n and any(c in n for c in "\n\r\t\u202e\u2028")]
