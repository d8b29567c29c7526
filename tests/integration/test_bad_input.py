"""Every bad request gets the envelope with the right code, and the server keeps serving."""

from __future__ import annotations

import json
from typing import Any

import httpx
from tests.integration.harness import Running, b64

SCRIPT = b64("echo hi")


def body(**override: Any) -> dict[str, Any]:
    base = {"bk_biz_id": 2, "script_content": SCRIPT, "script_language": 1,
            "account_alias": "root",
            "target_server": {"ip_list": [{"ip": "127.0.0.2", "bk_cloud_id": 0}]}}
    base.update(override)
    return {k: v for k, v in base.items() if v is not None}


CASES = [
    ("invalid base64", body(script_content="%%% not base64"), 1241005),
    ("unknown language", body(script_language=9), 1241005),
    ("no script", body(script_content=None), 1241004),
    ("empty target", body(target_server={"ip_list": [], "host_id_list": []}), 1244001),
    ("missing target", body(target_server=None), 1241004),
    ("unknown ip", body(target_server={"ip_list": [{"ip": "127.9.9.9", "bk_cloud_id": 0}]}),
     1243052),
    ("unknown host id", body(target_server={"host_id_list": [987654]}), 1243053),
    ("not an ip", body(target_server={"ip_list": [{"ip": "nope", "bk_cloud_id": 0}]}), 1241010),
    ("unknown account", body(account_alias="no-such-account"), 1244003),
    ("no account", body(account_alias=None), 1241004),
    ("timeout too small", body(timeout=0), 1240003),
    ("timeout too large", body(timeout=259201), 1240003),
    ("oversized params", body(script_param=b64("x" * 65536)), 1241010),
    ("oversized sensitive params",
     body(script_param=b64("x" * 48129), is_param_sensitive=1), 1241010),
    ("unknown business", body(bk_biz_id=77), 1243049),
    ("no scope", body(bk_biz_id=None), 1241004),
    ("bad callback", body(callback_url="ftp://127.0.0.1/x"), 1240003),
    ("callback with an unclosed bracket", body(callback_url="http://[::1/x"), 1240003),
    ("callback port out of range", body(callback_url="http://127.0.0.1:99999/x"), 1240003),
    ("callback port 0", body(callback_url="http://127.0.0.1:0/x"), 1240003),
    ("callback with a space", body(callback_url="http://127.0.0.1/a b"), 1240003),
    ("unbalanced quotes", body(script_param=b64("'open")), 1241010),
]


async def test_fast_execute_script_rejects(running: Running) -> None:
    """Every case on one server: a refused request keeps nothing for the next case to
    see, and a server start per case cost more than all the requests together. Each
    case that goes wrong is named, not only the first."""
    await running.server.inventory.add(2, "127.0.0.2")
    wrong = []
    for case, payload, code in CASES:
        answer = await running.wire.v3("fast_execute_script", payload)
        if not (answer["result"] is False and answer["code"] == code and answer["message"]
                and ("data" not in answer or answer["data"] is None)):
            wrong.append(f"{case}: expected code {code}, got {answer}")
    assert wrong == [], "\n".join(wrong)


async def test_oversized_script_is_refused_without_decoding(running: Running) -> None:
    huge = "A" * (16_777_215 // 3 * 4 + 400)
    answer = await running.wire.v3("fast_execute_script", body(script_content=huge))
    assert answer["code"] == 1241010


async def test_hosts_of_another_business_are_refused(running: Running) -> None:
    await running.server.identity.create_business(3, "other")
    await running.server.inventory.add(3, "127.0.0.9")
    answer = await running.wire.v3("fast_execute_script", body(
        target_server={"ip_list": [{"ip": "127.0.0.9", "bk_cloud_id": 0}]}))
    assert answer["code"] == 1244002


async def test_malformed_json_and_non_object_bodies(running: Running) -> None:
    for raw in (b"{not json", b"[1, 2]", b"\"text\""):
        resp = await running.wire.http.post("/api/bk-job/prod/api/v3/fast_execute_script",
                                            content=raw, headers=running.wire.headers())
        assert resp.status_code == 200
        assert resp.json()["code"] == 1240003


async def test_auth_failures(running: Running) -> None:
    http = running.wire.http
    path = "/api/bk-job/prod/api/v3/get_job_instance_list"
    missing = await http.get(path, params={"bk_biz_id": 2})
    assert missing.status_code == 401 and missing.json()["code"] == 1247004
    wrong = await http.get(path, params={"bk_biz_id": 2},
                           headers=running.wire.headers(bk_app_secret="wrong"))
    assert wrong.status_code == 401 and wrong.json()["code"] == 1240005
    assert wrong.json()["result"] is False
    garbage = await http.get(path, params={"bk_biz_id": 2},
                             headers={"X-Bkapi-Authorization": "{oops"})
    assert garbage.status_code == 401 and garbage.json()["code"] == 1240005
    app_only = json.dumps({"bk_app_code": running.boot["bk_app_code"],
                           "bk_app_secret": running.boot["bk_app_secret"]})
    no_user = await http.get(path, params={"bk_biz_id": 2},
                             headers={"X-Bkapi-Authorization": app_only})
    assert no_user.json()["code"] == 1247002
    # the gateway path never takes credentials from the body
    body_only = await http.post("/api/bk-job/prod/api/v3/fast_execute_script",
                                json={**body(), **running.wire.auth})
    assert body_only.json()["code"] == 1247004


async def test_user_outside_business_gets_9900403(running: Running) -> None:
    await running.server.identity.ensure_user("alice")
    await running.server.identity.create_business(3, "alice's")
    await running.server.identity.grant("alice", "biz", "3")
    headers = running.wire.headers(bk_username="alice")
    answer = await running.wire.post("/api/bk-job/prod/api/v3/fast_execute_script", body(),
                                     headers=headers)
    assert answer["code"] == 9900403 and answer["result"] is False
    assert answer["permission"]["actions"]
    listing = await running.wire.get("/api/bk-job/prod/api/v3/get_job_instance_list",
                                     {"bk_biz_id": 3, "create_time_start": 1,
                                      "create_time_end": 2}, headers=headers)
    assert listing["result"] is True


async def test_unknown_ids_and_log_limits(running: Running) -> None:
    await running.start_agents(["127.0.0.2"])
    missing = await running.wire.v3("get_job_instance_status",
                                    {"bk_biz_id": 2, "job_instance_id": 424242}, method="GET")
    assert missing["code"] == 1244006
    sub = await running.wire.run_script("echo x", ["127.0.0.2"])
    wrong_step = await running.wire.v3("get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"], "step_instance_id": 999,
        "bk_host_id": 1}, method="GET")
    # bk-job's log queries answer an unknown step as an unknown job instance
    assert wrong_step["code"] == 1244006
    wrong_batch_step = await running.wire.v3("batch_get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"], "step_instance_id": 999,
        "host_id_list": [1]})
    assert wrong_batch_step["code"] == 1244006
    ids = {"bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
           "step_instance_id": sub["step_instance_id"]}
    # a host the step did not run on has an empty log, not an error
    stranger = await running.wire.v3("get_job_instance_ip_log", {
        **ids, "ip": "127.0.0.9", "bk_cloud_id": 0}, method="GET")
    assert stranger["result"] is True, stranger
    assert stranger["data"]["log_type"] == 1 and stranger["data"]["log_content"] is None
    assert (stranger["data"]["ip"], stranger["data"]["bk_cloud_id"]) == ("127.0.0.9", 0)
    no_host = await running.wire.v3("get_job_instance_ip_log", ids, method="GET")
    assert no_host["code"] == 1241007, no_host
    no_hosts = await running.wire.v3("batch_get_job_instance_ip_log", ids)
    assert no_hosts["code"] == 1241007, no_hosts
    for route in ("get_job_instance_status", "get_job_instance_global_var_value"):
        for bad in ({}, {"job_instance_id": 0}):
            answer = await running.wire.v3(route, {"bk_biz_id": 2, **bad}, method="GET")
            assert answer["code"] == 1241007, (route, bad, answer)
    for bad in ({}, {"job_instance_id": 0}, {"job_instance_id": sub["job_instance_id"]}):
        answer = await running.wire.v3("operate_job_instance", {"bk_biz_id": 2, **bad})
        assert answer["code"] == 1241002, (bad, answer)
    for bad in ({}, {"step_instance_id": 0}, {"step_instance_id": 1, "operation_code": None}):
        answer = await running.wire.v3("operate_step_instance", {
            "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"], "operation_code": 2,
            **bad})
        assert answer["code"] == 1241002, (bad, answer)
    too_many = await running.wire.v3("batch_get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
        "step_instance_id": sub["step_instance_id"], "host_id_list": list(range(1, 502))})
    assert too_many["code"] == 1241007
    bad_op = await running.wire.v3("operate_job_instance", {
        "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"], "operation_code": 7})
    assert bad_op["code"] == 1241002
    # after all of that the server still serves, and the job is intact
    data = await running.wire.wait(sub["job_instance_id"])
    assert data["job_instance"]["status"] == 3


async def test_wrong_method_and_unknown_api(running: Running) -> None:
    resp = await running.wire.http.get("/api/bk-job/prod/api/v3/fast_execute_script",
                                       headers=running.wire.headers())
    assert resp.status_code == 405 and resp.json()["result"] is False
    resp = await running.wire.http.post("/api/bk-job/prod/api/v3/no_such_api", json={},
                                        headers=running.wire.headers())
    assert resp.status_code == 404 and resp.json()["result"] is False


async def test_history_query_range_rules(running: Running) -> None:
    for params, code in (({}, 1241007), ({"create_time_start": 10, "create_time_end": 5}, 1241007),
                         ({"create_time_start": 0, "create_time_end": 5}, 1241007),
                         ({"create_time_start": 1, "create_time_end": 1 + 31 * 86400 * 1000},
                          1241002), ({"create_time_start": 1, "create_time_end": 2,
                                      "length": 1001}, 1241010)):
        answer = await running.wire.v3("get_job_instance_list", {"bk_biz_id": 2, **params},
                                       method="GET")
        assert answer["code"] == code, (params, answer)


async def test_server_survives_garbage(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as http:
        for path in ("/api/c/compapi/v2/jobv3/fast_execute_script/",
                     "/api/bk-gse/prod/api/v2/cluster/list_agent_state"):
            resp = await http.post(path, content=b"\x00\xff" * 100)
            assert resp.json()["result"] is False
        assert (await http.get("/healthz")).status_code == 200


async def test_history_filters_of_the_wrong_type_are_refused(running: Running) -> None:
    """``operator`` and ``name`` are text: anything else is 1241005, never an internal error."""
    window = {"bk_biz_id": 2, "create_time_start": 1, "create_time_end": 2}
    for field in ("operator", "name"):
        for value in ({"a": 1}, [1, 2], 1.5):
            answer = await running.wire.v3("get_job_instance_list", {**window, field: value})
            assert (answer["result"], answer["code"]) == (False, 1241005), (field, value, answer)
            assert field in answer["message"], answer
    # a number is the text of its digits, as in the query string
    for field in ("operator", "name"):
        answer = await running.wire.v3("get_job_instance_list", {**window, field: 5})
        assert answer["result"] is True and answer["data"]["total"] == 0, answer


async def test_a_scope_id_is_read_in_normal_form(running: Running) -> None:
    """``bk_scope_id`` "02" is business 2: a job started so is found under business 2
    (and a user of business 2 may start it); ids int() would read but bk-job would not
    (other scripts' digits, "2_0", true, 2.5) are refused."""
    await running.start_agents(["127.0.0.2"])
    started = await running.wire.v3("fast_execute_script", {
        **body(bk_biz_id=None), "bk_scope_type": "biz", "bk_scope_id": "02"})
    assert started["result"], started
    job_id = started["data"]["job_instance_id"]
    data = await running.wire.wait(job_id)
    assert (data["job_instance"]["bk_scope_id"], data["job_instance"]["status"]) == ("2", 3)
    listing = await running.wire.v3("get_job_instance_list", {
        "bk_biz_id": 2, "create_time_start": 1, "create_time_end": 2, "job_instance_id": job_id},
        method="GET")
    assert [j["job_instance_id"] for j in listing["data"]["data"]] == [job_id], listing
    await running.server.identity.ensure_user("bob")
    await running.server.identity.grant("bob", "biz", "2")
    as_bob = await running.wire.post("/api/bk-job/prod/api/v3/get_job_instance_status", {
        "bk_scope_type": "biz", "bk_scope_id": " +02 ", "job_instance_id": job_id},
        headers=running.wire.headers(bk_username="bob"))
    assert as_bob["result"], as_bob
    for scope in ({"bk_scope_type": "biz", "bk_scope_id": "\u0662"},
                  {"bk_scope_type": "biz", "bk_scope_id": "2_0"},
                  {"bk_biz_id": True}, {"bk_biz_id": 2.5}, {"bk_biz_id": "\u0662"}):
        answer = await running.wire.v3("get_job_instance_status",
                                       {**scope, "job_instance_id": job_id})
        assert (answer["result"], answer["code"]) == (False, 1241005), (scope, answer)


async def test_a_nul_in_the_credentials_header_is_a_wrong_credential(running: Running) -> None:
    """The header's JSON can spell a NUL, which PostgreSQL cannot compare: 401 on both
    backends, never an internal error."""
    path = "/api/bk-job/prod/api/v3/get_job_instance_list"
    for field in ("bk_app_code", "bk_username"):
        resp = await running.wire.http.get(
            path, params={"bk_biz_id": 2, "create_time_start": 1, "create_time_end": 2},
            headers=running.wire.headers(**{field: "ad\x00min"}))
        assert resp.status_code == 401 and resp.json()["code"] == 1240005, (field, resp.text)
        assert field in resp.json()["message"], resp.text


async def test_a_callback_url_longer_than_its_column_is_refused(running: Running) -> None:
    """PostgreSQL keeps callback_url in 1,024 characters: a longer one was an internal
    error there; on both backends it is refused like any bad callback_url."""
    await running.server.inventory.add(2, "127.0.0.2")
    longest = "http://127.0.0.1:9/" + "a" * (1024 - 19)
    for url, code in ((longest + "a", 1240003), (longest, 0)):
        answer = await running.wire.v3("fast_execute_script", body(callback_url=url,
                                                                   start_task=False))
        assert answer["code"] == code, answer
        pushed = await running.wire.v3("push_config_file", {
            "bk_biz_id": 2, "file_target_path": "/tmp/x", "account_alias": "root",
            "target_server": {"ip_list": [{"ip": "127.0.0.2", "bk_cloud_id": 0}]},
            "file_list": [{"file_name": "a", "content": b64("x")}], "callback_url": url,
            "start_task": False})
        assert pushed["code"] == code, pushed
    assert "callback_url" in (await running.wire.v3(
        "fast_execute_script", body(callback_url=longest + "a")))["message"]
