"""Business and public scripts with versions through the bk-job v3 routes, and running them."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import select
from tests.integration.harness import Running, Wire, b64

from jobfleet.store.tables import audit_log

BIZ = {"bk_scope_type": "biz", "bk_scope_id": "2"}
IP = "127.0.0.71"


async def call(wire: Wire, name: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    answer = await wire.v3(name, body, **kw)
    assert answer["result"], answer
    return dict(answer["data"]) if "data" in answer else {}


async def new_script(wire: Wire, name: str, content: str, *, public: bool = False,
                     version: str = "1.0", language: int = 1) -> dict[str, Any]:
    api = "create_public_script" if public else "create_script"
    scope = {} if public else BIZ
    return await call(wire, api, {**scope, "name": name, "script_language": language,
                                  "content": b64(content), "version": version,
                                  "description": f"{name} does things", "version_desc": "first"})


async def as_user(running: Running, user: str, name: str, body: dict[str, Any],
                  method: str = "POST") -> dict[str, Any]:
    wire = running.wire
    path = f"/api/bk-job/prod/api/v3/{name}"
    headers = wire.headers(bk_username=user)
    if method == "GET":
        return await wire.get(path, body, headers=headers)
    return await wire.post(path, body, headers=headers)


async def test_business_script_lifecycle(running: Running) -> None:
    wire = running.wire
    v1 = await new_script(wire, "Deploy-App", "echo one")
    script_id = v1["script_id"]
    assert isinstance(script_id, str) and len(script_id) == 32
    assert isinstance(v1["id"], int) and v1["script_version_id"] == v1["id"]
    assert (v1["name"], v1["version"], v1["content"], v1["status"]) == (
        "Deploy-App", "1.0", "echo one", 0)
    assert (v1["script_language"], v1["bk_scope_type"], v1["bk_scope_id"]) == (1, "biz", "2")
    assert v1["creator"] == "admin" and v1["create_time"] > 1_600_000_000_000
    assert (v1["description"], v1["version_desc"], v1["public_script"]) == (
        "Deploy-App does things", "first", False)

    base = {**BIZ, "script_id": script_id}
    v2 = await call(wire, "create_script_version", {**base, "content": b64("echo two"),
                                                    "version": "2.0", "version_desc": "second"})
    assert (v2["status"], v2["content"], v2["script_id"]) == (0, "echo two", script_id)
    dup = await wire.v3("create_script_version", {**base, "content": b64("x"), "version": "2.0"})
    assert dup["code"] == 1241010 and "2.0" in dup["message"]

    listing = await call(wire, "get_script_list", BIZ, method="GET")
    assert listing["total"] == 1 and listing["data"][0]["online_script_version_id"] is None

    # publish v1, then v2: v1 goes offline
    published = await call(wire, "publish_script_version", {**base, "script_version_id": v1["id"]})
    assert published == {"script_id": script_id, "id": v1["id"], "script_version_id": v1["id"],
                         "status": 1}
    listing = await call(wire, "get_script_list", BIZ, method="GET")
    assert listing["data"][0]["online_script_version_id"] == v1["id"]
    again = await wire.v3("publish_script_version", {**base, "script_version_id": v1["id"]})
    assert again["code"] == 1241003
    await call(wire, "publish_script_version", {**base, "script_version_id": v2["id"]})
    detail = await call(wire, "get_script_version_detail", {**BIZ, "id": v1["id"]}, method="GET")
    assert detail["status"] == 2 and detail["content"] == "echo one"
    listing = await call(wire, "get_script_list", BIZ, method="GET")
    assert listing["data"][0]["online_script_version_id"] == v2["id"]

    # only drafts change
    online_edit = await wire.v3("update_script_version", {**base, "script_version_id": v2["id"],
                                                          "content": b64("echo changed")})
    assert online_edit["code"] == 1241003 and "draft" in online_edit["message"]
    v3 = await call(wire, "create_script_version", {**base, "content": b64("echo three"),
                                                    "version": "3.0-rc#1"})
    edited = await call(wire, "update_script_version", {
        **base, "script_version_id": v3["id"], "content": b64("echo 3"), "version_desc": "fixed"})
    assert (edited["content"], edited["version_desc"], edited["status"]) == ("echo 3", "fixed", 0)

    # disable is final; disabled versions take no more operations but can be deleted
    disabled = await call(wire, "disable_script_version", {**base, "script_version_id": v1["id"]})
    assert disabled["status"] == 3
    for api, extra in [("publish_script_version", {}), ("disable_script_version", {}),
                       ("update_script_version", {"content": b64("echo")})]:
        refused = await wire.v3(api, {**base, "script_version_id": v1["id"], **extra})
        assert refused["code"] == 1244014, (api, refused)
    online_delete = await wire.v3("delete_script_version", {**base, "script_version_id": v2["id"]})
    assert online_delete["code"] == 1241003

    # version list: newest first, paging, content only on request
    page = await call(wire, "get_script_version_list", {**base, "length": 2}, method="GET")
    assert (page["total"], page["start"], page["length"]) == (3, 0, 2)
    assert [v["id"] for v in page["data"]] == [v3["id"], v2["id"]]
    assert all(v["content"] is None for v in page["data"])
    page = await call(wire, "get_script_version_list",
                      {**base, "start": 2, "length": 2, "return_script_content": "True"},
                      method="GET")
    assert [(v["id"], v["status"], v["content"]) for v in page["data"]] == [
        (v1["id"], 3, "echo one")]
    by_version = await call(wire, "get_script_version_detail",
                            {**base, "version": "3.0-rc#1"}, method="GET")
    assert by_version["id"] == v3["id"] and by_version["bk_scope_id"] == "2"

    await call(wire, "delete_script_version", {**base, "script_version_id": v1["id"]})
    gone = await wire.v3("get_script_version_detail", {**BIZ, "id": v1["id"]}, method="GET")
    assert gone["code"] == 1243047

    # script list: fuzzy name (any case), language filter, paging
    await new_script(wire, "cleanup", "print(1)", language=4)
    await new_script(wire, "deploy-db", "echo db")
    found = await call(wire, "get_script_list", {**BIZ, "name": "DEPLOY"}, method="GET")
    assert sorted(s["name"] for s in found["data"]) == ["Deploy-App", "deploy-db"]
    python = await call(wire, "get_script_list", {**BIZ, "script_language": 4}, method="GET")
    assert [s["name"] for s in python["data"]] == ["cleanup"]
    every = await call(wire, "get_script_list", {**BIZ, "script_language": 0, "length": 2,
                                                 "start": 1}, method="GET")
    assert every["total"] == 3 and len(every["data"]) == 2
    literal = await call(wire, "get_script_list", {**BIZ, "name": "%"}, method="GET")
    assert literal["total"] == 0

    # basic info: rename, description, unique names
    renamed = await call(wire, "update_script_basic", {**base, "name": "deploy-app-v2",
                                                       "description": "new words"})
    assert (renamed["id"], renamed["name"], renamed["description"]) == (
        script_id, "deploy-app-v2", "new words")
    assert renamed["online_script_version_id"] == v2["id"] and renamed["bk_scope_id"] == "2"
    taken = await wire.v3("update_script_basic", {**base, "name": "cleanup"})
    assert taken["code"] == 1241010
    twin = await wire.v3("create_script", {**BIZ, "name": "cleanup", "script_language": 1,
                                           "content": b64("echo"), "version": "1"})
    assert twin["code"] == 1241010

    # delete_script takes every version with it
    deleted = await wire.v3("delete_script", base)
    assert deleted["result"] and "data" not in deleted
    for api, body in [("get_script_version_list", base),
                      ("publish_script_version", {**base, "script_version_id": v2["id"]})]:
        missing = await wire.v3(api, body)
        assert missing["code"] == 1243001, (api, missing)
    missing_version = await wire.v3("get_script_version_detail", {**BIZ, "id": v2["id"]})
    assert missing_version["code"] == 1243047

    async with running.server.db.connect() as conn:
        actions = list((await conn.execute(select(audit_log.c.action).where(
            audit_log.c.resource_type == "script"))).scalars())
    for action in ("create_script", "create_script_version", "update_script_version",
                   "publish_script_version", "disable_script_version", "delete_script_version",
                   "update_script_basic", "delete_script"):
        assert action in actions, action


async def test_public_scripts_admin_only_writes(running: Running) -> None:
    wire = running.wire
    identity = running.server.identity
    await identity.ensure_user("alice")
    await identity.grant("alice", "biz", "2")
    body = {"name": "os-check", "script_language": 1, "content": b64("uname"), "version": "1"}
    denied = await as_user(running, "alice", "create_public_script", body)
    assert denied["code"] == 9900403 and denied["permission"]["actions"][0]["id"]
    v1 = await new_script(wire, "os-check", "uname -s", public=True)
    assert v1["public_script"] is True and "bk_scope_id" not in v1
    sid = v1["script_id"]
    v2 = await call(wire, "create_public_script_version",
                    {"script_id": sid, "content": b64("uname -a"), "version": "2"})
    for api, extra in [("update_public_script_basic", {"name": "x"}),
                       ("create_public_script_version", {"content": b64("x"), "version": "9"}),
                       ("update_public_script_version", {"script_version_id": v2["id"],
                                                         "content": b64("x")}),
                       ("publish_public_script_version", {"script_version_id": v1["id"]}),
                       ("disable_public_script_version", {"script_version_id": v1["id"]}),
                       ("delete_public_script_version", {"script_version_id": v2["id"]}),
                       ("delete_public_script", {})]:
        refused = await as_user(running, "alice", api, {"script_id": sid, **extra})
        assert refused["code"] == 9900403, (api, refused)

    await call(wire, "publish_public_script_version", {"script_id": sid,
                                                       "script_version_id": v1["id"]})
    published = await call(wire, "publish_public_script_version",
                           {"script_id": sid, "script_version_id": v2["id"]})
    assert published["status"] == 1

    # anyone reads public scripts, with or without a scope
    listing = await as_user(running, "alice", "get_public_script_list", {}, method="GET")
    assert listing["result"] and listing["data"]["total"] == 1
    item = listing["data"]["data"][0]
    assert (item["id"], item["online_script_version_id"], item["public_script"]) == (
        sid, v2["id"], True)
    versions = await as_user(running, "alice", "get_public_script_version_list",
                             {"script_id": sid, "return_script_content": "true"}, method="GET")
    assert [(v["id"], v["status"], v["content"]) for v in versions["data"]["data"]] == [
        (v2["id"], 1, "uname -a"), (v1["id"], 2, "uname -s")]
    detail = await as_user(running, "alice", "get_public_script_version_detail",
                           {"script_id": sid, "version": "1.0"}, method="GET")
    assert detail["data"]["id"] == v1["id"] and detail["data"]["status"] == 2

    # the two kinds do not mix
    biz_list = await call(wire, "get_script_list", BIZ, method="GET")
    assert biz_list["total"] == 0
    biz_view = await wire.v3("get_script_version_list", {**BIZ, "script_id": sid})
    assert biz_view["code"] == 1243001
    biz_script = await new_script(wire, "os-check", "echo biz")  # names are per owner
    public_view = await wire.v3("get_public_script_version_list",
                                {"script_id": biz_script["script_id"]})
    assert public_view["code"] == 1243001
    public_twin = await wire.v3("create_public_script", body)
    assert public_twin["code"] == 1241010

    renamed = await call(wire, "update_public_script_basic", {"script_id": sid,
                                                              "description": ""})
    assert renamed["description"] == "" and renamed["name"] == "os-check"
    disabled = await call(wire, "disable_public_script_version",
                          {"script_id": sid, "script_version_id": v2["id"]})
    assert disabled["status"] == 3
    await call(wire, "delete_public_script", {"script_id": sid})
    empty = await call(wire, "get_public_script_list", {}, method="GET")
    assert empty["total"] == 0
    async with running.server.db.connect() as conn:
        actions = set((await conn.execute(select(audit_log.c.action).where(
            audit_log.c.resource_type == "public_script"))).scalars())
    assert {"create_public_script", "publish_public_script_version",
            "disable_public_script_version", "delete_public_script",
            "update_public_script_basic", "create_public_script_version"} <= actions


async def test_bklog_probe_on_both_path_forms(running: Running) -> None:
    boot = running.boot
    creds = {"bk_app_code": boot["bk_app_code"], "bk_app_secret": boot["bk_app_secret"]}
    http: httpx.AsyncClient = running.wire.http
    # API gateway, system form: the app alone, as a system-type gateway call may come
    resp = await http.get("/api/bk-job/prod/api/v3/system/get_public_script_list",
                          params={"bk_biz_id": -1, "bklog_request_id": "x"},
                          headers={"X-Bkapi-Authorization": running.wire.headers()[
                              "X-Bkapi-Authorization"], "X-Bk-Tenant-Id": ""})
    assert resp.status_code == 200
    assert resp.json()["result"] is True and resp.json()["data"]["total"] == 0
    app_only = await http.get("/api/bk-job/prod/api/v3/system/get_public_script_list",
                              headers={"X-Bkapi-Authorization": json.dumps(creds)})
    assert app_only.status_code == 200 and app_only.json()["data"]["data"] == []
    # ESB form: a secret in the query string is refused (access logs, proxies keep it);
    # in the JSON body, as ESB clients post it, it is taken
    resp = await http.get("/api/c/compapi/v2/jobv3/get_public_script_list/",
                          params={**creds, "bk_username": "admin"})
    assert resp.status_code == 401 and resp.json()["code"] == 1240005
    assert "query string" in resp.json()["message"]
    resp = await http.post("/api/c/compapi/v2/jobv3/get_public_script_list/",
                           json={**creds, "bk_username": "admin"})
    assert resp.status_code == 200 and resp.json()["data"] == {
        "start": 0, "length": 20, "total": 0, "data": []}
    resp = await http.post("/api/c/compapi/v2/jobv3/get_public_script_list/",
                           json={**creds, "bk_username": "nobody-known"})
    assert resp.status_code == 200 and resp.json()["result"] is True
    # wrong credentials are still refused
    resp = await http.get("/api/c/compapi/v2/jobv3/get_public_script_list/",
                          params={**creds, "bk_app_secret": "wrong"})
    assert resp.json()["result"] is False


async def test_business_isolation(running: Running) -> None:
    wire = running.wire
    identity = running.server.identity
    await identity.create_business(3, "other")
    theirs = await call(wire, "create_script", {"bk_biz_id": 3, "name": "secret-tool",
                                                "script_language": 1, "content": b64("echo 3"),
                                                "version": "1"})
    sid = theirs["script_id"]
    await call(wire, "publish_script_version", {"bk_biz_id": 3, "script_id": sid,
                                                "script_version_id": theirs["id"]})
    mine = await call(wire, "get_script_list", BIZ, method="GET")
    assert mine["total"] == 0
    for api, body in [
        ("get_script_version_list", {"script_id": sid}),
        ("update_script_basic", {"script_id": sid, "name": "mine"}),
        ("create_script_version", {"script_id": sid, "content": b64("x"), "version": "2"}),
        ("disable_script_version", {"script_id": sid, "script_version_id": theirs["id"]}),
        ("delete_script", {"script_id": sid}),
    ]:
        hidden = await wire.v3(api, {**BIZ, **body})
        assert hidden["code"] == 1243001, (api, hidden)
    by_id = await wire.v3("get_script_version_detail", {**BIZ, "id": theirs["id"]})
    assert by_id["code"] == 1243047
    # a version of their script is one that does not exist
    for ref, code in (({"script_id": sid}, 1243001),
                      ({"script_version_id": theirs["id"]}, 1243047)):
        run = await wire.v3("fast_execute_script", {
            **BIZ, **ref, "account_alias": "root",
            "target_server": {"ip_list": [{"ip": IP, "bk_cloud_id": 0}]}})
        assert run["code"] == code, (ref, run)
    # a user of business 2 cannot reach business 3's list at all
    await identity.ensure_user("bob")
    await identity.grant("bob", "biz", "2")
    refused = await as_user(running, "bob", "get_script_list", {"bk_biz_id": 3}, method="GET")
    assert refused["code"] == 9900403
    allowed = await as_user(running, "bob", "get_script_list", {"bk_biz_id": 2}, method="GET")
    assert allowed["result"] is True


async def test_fast_execute_stored_scripts(running: Running) -> None:
    wire = running.wire
    await running.start_agents([IP])
    target = {"account_alias": "root", "target_server": {"ip_list": [{"ip": IP,
                                                                      "bk_cloud_id": 0}]}}

    async def run(ref: dict[str, Any]) -> dict[str, Any]:
        return await wire.v3("fast_execute_script", {**BIZ, **target, **ref})

    async def output(ref: dict[str, Any]) -> str:
        answer = await run(ref)
        assert answer["result"], answer
        data = answer["data"]
        status = await wire.wait(data["job_instance_id"])
        assert status["job_instance"]["status"] == 3, status
        return (await wire.logs(data["job_instance_id"], data["step_instance_id"], [IP]))[IP]

    v1 = await new_script(wire, "greet", 'echo "v1 says $1"')
    sid = v1["script_id"]
    base = {**BIZ, "script_id": sid}
    v2 = await call(wire, "create_script_version", {
        **base, "content": b64('echo "v2 says $#"'), "version": "2"})
    # nothing online yet: script_id alone cannot run
    draft_only = await run({"script_id": sid})
    assert draft_only["code"] == 1244018
    await call(wire, "publish_script_version", {**base, "script_version_id": v1["id"]})
    # the online version runs, in the script's language (the request's is ignored)
    text = await output({"script_id": sid, "script_language": 4, "script_param": b64("hello"),
                         "script_content": b64("echo ignored")})
    assert "v1 says hello" in text and "ignored" not in text
    # a named version wins over script_id and may be a draft
    text = await output({"script_version_id": v2["id"], "script_id": "0" * 32})
    assert "v2 says 0" in text
    await call(wire, "publish_script_version", {**base, "script_version_id": v2["id"]})
    await call(wire, "disable_script_version", {**base, "script_version_id": v1["id"]})
    disabled = await run({"script_version_id": v1["id"]})
    assert disabled["code"] == 1244014 and "disabled" in disabled["message"]
    await call(wire, "disable_script_version", {**base, "script_version_id": v2["id"]})
    no_online = await run({"script_id": sid})
    assert no_online["code"] == 1244018

    # public scripts run from any business
    pub = await new_script(wire, "pub-hello", "echo public hello", public=True)
    await call(wire, "publish_public_script_version", {"script_id": pub["script_id"],
                                                       "script_version_id": pub["id"]})
    assert "public hello" in await output({"script_id": pub["script_id"]})

    await call(wire, "delete_script", base)
    deleted = await run({"script_id": sid})
    assert deleted["code"] == 1243001
    unknown_version = await run({"script_version_id": 10**12})
    assert unknown_version["code"] == 1243047
    nothing = await run({})
    assert nothing["code"] == 1241004


async def test_bad_input(running: Running) -> None:
    wire = running.wire
    good = {**BIZ, "name": "ok", "script_language": 1, "content": b64("echo"), "version": "1.0"}
    cases: list[tuple[dict[str, Any], int]] = [
        ({"content": "not base64!!"}, 1241005),
        ({"script_language": 9}, 1241005),
        ({"script_language": 7}, 1241005),
        ({"content": b64("   \n")}, 1241004),
        ({"content": b64("echo \x00")}, 1241010),
        ({"version": "1 0"}, 1241010),
        ({"version": "v" * 61}, 1241010),
        ({"name": "a/b"}, 1241010),
        ({"name": "n" * 61}, 1241010),
        ({"name": "   "}, 1241004),
    ]
    for change, code in cases:
        answer = await wire.v3("create_script", {**good, **change})
        assert answer["code"] == code, (change, answer)
    for field in ("name", "script_language", "content", "version"):
        answer = await wire.v3("create_script", {k: v for k, v in good.items() if k != field})
        assert answer["code"] == 1241004 and field in answer["message"], (field, answer)
    no_scope = await wire.v3("create_script", {k: v for k, v in good.items() if k not in BIZ})
    assert no_scope["code"] == 1241004
    made = await call(wire, "create_script", good)
    base = {**BIZ, "script_id": made["script_id"]}
    for api, body, code in [
        ("get_script_list", {"length": 0}, 1241010),
        ("get_script_list", {"length": 1001}, 1241010),
        ("get_script_list", {"start": -1}, 1241010),
        ("get_script_list", {"script_language": 7}, 1241005),
        ("get_script_version_list", {}, 1241005),
        ("get_script_version_list", {"script_id": "no such id"}, 1243001),
        ("get_script_version_detail", {}, 1241005),
        ("get_script_version_detail", {"id": 0}, 1241005),
        ("get_script_version_detail", {"script_id": made["script_id"]}, 1241005),
        ("get_script_version_detail", {"id": -1, "version": "1"}, 1241005),
        ("get_script_version_detail", {"id": "x"}, 1241010),
        ("get_script_version_detail", {"id": 10**12}, 1243047),
        ("get_script_version_detail", {"script_id": made["script_id"], "version": "9"}, 1243047),
        ("update_script_basic", {"script_id": made["script_id"]}, 1241004),
        ("create_script_version", {**base, "version": "2"}, 1241004),
        ("create_script_version", {**base, "content": b64("x")}, 1241004),
        ("update_script_version", {**base, "content": b64("x")}, 1241004),
        ("update_script_version", {**base, "script_version_id": made["id"]}, 1241004),
        ("update_script_version", {**base, "script_version_id": 10**12, "content": b64("x")},
         1243047),
        ("publish_script_version", {**base, "script_version_id": 10**30}, 1241010),
        ("publish_script_version", {"script_id": "\x00", "script_version_id": 1}, 1241010),
        ("delete_script_version", {**base}, 1241004),
    ]:
        answer = await wire.v3(api, {**BIZ, **body})
        assert answer["code"] == code, (api, body, answer)
    # GET with a broken value in the query string, and a JSON body that is not an object
    resp = await wire.http.get("/api/bk-job/prod/api/v3/get_script_version_list",
                               params={**BIZ, "script_id": made["script_id"], "start": "abc"},
                               headers=wire.headers())
    assert resp.status_code == 200 and resp.json()["code"] == 1241010
    resp = await wire.http.post("/api/bk-job/prod/api/v3/create_script", content=b"[1]",
                                headers={**wire.headers(), "Content-Type": "application/json"})
    assert resp.json()["code"] == 1240003
