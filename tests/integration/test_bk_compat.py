"""The bk-clients.md compatibility checklist, item by item (1-18, 23, 25, 28, 29)."""

from __future__ import annotations

import asyncio
import json
import time

from tests.integration.harness import Running, b64, eventually

from jobfleet.api.app import api_routes

IPS = ["127.0.0.2", "127.0.0.3"]
PREFIXES = ["/api/c/compapi/v2/jobv3", "/api/bk-job/prod/api/v3/system", "/api/bk-job/prod/api/v3"]


def script_body(ips: list[str], **extra: object) -> dict[str, object]:
    return {"bk_biz_id": 2, "script_content": b64("echo ok"), "script_language": 1,
            "account_alias": "root",
            "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in ips]}, **extra}


# each form on one server: a server and an agent started per form cost more than its
# three requests
async def test_1_every_path_form(running: Running) -> None:
    await running.start_agents(IPS[:1])
    for prefix in PREFIXES:
        for slash in ("", "/"):
            form = f"{prefix}/fast_execute_script{slash}"
            sub = await running.wire.post(form, script_body(IPS[:1]))
            assert sub["result"] is True and sub["code"] == 0, (form, sub)
            job_id = sub["data"]["job_instance_id"]
            status = await running.wire.get(f"{prefix}/get_job_instance_status{slash}",
                                            {"bk_biz_id": 2, "job_instance_id": job_id})
            assert status["result"] is True, (form, status)
            # queries also answer POST
            status = await running.wire.post(f"{prefix}/get_job_instance_status{slash}",
                                             {"bk_biz_id": 2, "job_instance_id": job_id})
            assert status["result"] is True, (form, status)
            assert status["data"]["job_instance"]["job_instance_id"] == job_id, (form, status)


def served_names(prefix: str) -> dict[str, set[str]]:
    """Every API name the server serves under ``prefix``, with its methods."""
    names: dict[str, set[str]] = {}
    for route in api_routes():
        path = str(getattr(route, "path", ""))
        if path.startswith(prefix + "/") and not path.endswith("/"):
            names.setdefault(path.rsplit("/", 1)[1], set()).update(getattr(route, "methods", ()))
    return names


async def test_1_every_endpoint_answers_under_every_prefix(running: Running) -> None:
    """Each jobv3 name under the three path families, and each GSE name under its own,
    with and without the trailing slash: routed to the API (an envelope), never "no API"."""
    forms: list[tuple[str, str]] = []
    jobv3 = served_names(PREFIXES[0])
    assert {"fast_execute_script", "get_job_instance_status", "batch_get_job_instance_ip_log",
            "get_public_script_list", "execute_job_plan", "get_job_plan_list"} <= set(jobv3)
    # a query's GET, an action's POST: what clients send (both reach the same handler)
    forms += [("GET" if "GET" in methods else "POST", f"{prefix}/{name}")
              for name, methods in jobv3.items() for prefix in PREFIXES]
    for prefix in ("/api/c/compapi/v2/gse", "/api/c/compapi/gse",
                   "/api/bk-gse/prod/api/v2/cluster", "/api/bk-gse/prod/api/v2/proc"):
        names = served_names(prefix)
        assert names, prefix
        forms += [("GET" if "GET" in methods else "POST", f"{prefix}/{name}")
                  for name, methods in names.items()]
    assert {"/api/c/compapi/v2/gse/get_agent_status", "/api/c/compapi/gse/get_agent_info",
            "/api/bk-gse/prod/api/v2/cluster/list_agent_state"} <= {p for _, p in forms}

    async def routed(method: str, path: str) -> None:
        resp = await running.wire.http.request(
            method, path, headers=running.wire.headers(),
            **({"json": {}} if method == "POST" else {}))
        answer = resp.json()
        assert resp.status_code not in (404, 405), (method, path, answer)
        # as bk-job's EsbResp (NON_NULL): a failure carries no "data" key
        assert {"result", "code", "message"} <= set(answer), (path, answer)

    calls = [(method, path + slash) for method, path in forms for slash in ("", "/")]
    for i in range(0, len(calls), 16):
        await asyncio.gather(*(routed(*call) for call in calls[i:i + 16]))


# a base URL that ends in "/" joined to a path that starts with one, as bk-monitor builds
# BK_COMPONENT_API_URL + "/api/bk-job/prod/" and bk-nodeman GSE_APIGATEWAY_ROOT_V2 +
# "api/v2/...": the gateways in front of bk-job and GSE merge the slashes
DOUBLED = ["//api/c/compapi/v2/jobv3/get_job_instance_status/",
           "/api/bk-job/prod//api/v3/system/get_job_instance_status",
           "/api/bk-job/prod/api/v3//get_job_instance_status/",
           "/api/c/compapi/v2//jobv3//get_job_instance_status"]


async def test_1_doubled_slashes_reach_the_api(running: Running) -> None:
    await running.start_agents(IPS[:1])
    sub = await running.wire.run_script("echo ok", IPS[:1])
    query = {"bk_biz_id": 2, "job_instance_id": sub["job_instance_id"]}
    # an absolute URL: httpx sends its path as it is
    for path in DOUBLED:
        resp = await running.wire.http.get(running.url + path, params=query,
                                           headers=running.wire.headers())
        assert resp.status_code == 200, (path, resp.text)
        assert resp.json()["data"]["job_instance"]["job_instance_id"] == query["job_instance_id"]
    for path, body in (("//api/c/compapi/v2/gse/get_agent_status/",
                        {"hosts": [{"ip": IPS[0], "bk_cloud_id": 0}]}),
                       ("/api/bk-gse/prod//api/v2/cluster/list_agent_state/",
                        {"agent_id_list": [f"0:{IPS[0]}"]})):
        resp = await running.wire.http.post(running.url + path, json=body,
                                            headers=running.wire.headers())
        assert resp.status_code == 200 and resp.json()["result"] is True, (path, resp.text)
    # only runs of slashes merge: a path that is not an API stays unknown
    resp = await running.wire.http.get(running.url + "//api/c/compapi/v2/jobv3/nothing_here",
                                       headers=running.wire.headers())
    assert resp.status_code == 404 and resp.json()["code"] == 1240003


async def test_esb_body_credentials_and_operator(running: Running) -> None:
    await running.start_agents(IPS[:1])
    creds = {"bk_app_code": running.boot["bk_app_code"],
             "bk_app_secret": running.boot["bk_app_secret"], "bk_username": "admin"}
    resp = await running.wire.http.post("/api/c/compapi/v2/jobv3/fast_execute_script/",
                                        json={**script_body(IPS[:1]), **creds})
    data = resp.json()
    assert data["result"] is True
    query = {"bk_biz_id": 2, "job_instance_id": data["data"]["job_instance_id"]}
    # a secret in a query string ends up in access logs and proxies: refused
    resp = await running.wire.http.get("/api/c/compapi/v2/jobv3/get_job_instance_status/",
                                       params={**query, **creds})
    assert resp.status_code == 401 and resp.json()["code"] == 1240005
    assert "query string" in resp.json()["message"]
    resp = await running.wire.http.post("/api/c/compapi/v2/jobv3/get_job_instance_status/",
                                        json={**query, **creds})
    assert resp.json()["result"] is True


SCOPE_FORMS: list[dict[str, object]] = [
    {"bk_biz_id": 2}, {"bk_biz_id": "2"}, {"bk_scope_type": "biz", "bk_scope_id": "2"},
    {"bk_scope_type": "biz", "bk_scope_id": "2", "bk_biz_id": 2},
    # a client that holds the business id as a number sends it as one
    {"bk_scope_type": "biz", "bk_scope_id": 2},
]


# each form on one server, as in test_1_every_path_form
async def test_3_scope_forms(running: Running) -> None:
    await running.start_agents(IPS[:1])
    for scope in SCOPE_FORMS:
        body = {**script_body(IPS[:1]), **scope}
        if "bk_biz_id" not in scope:
            body.pop("bk_biz_id")
        answer = await running.wire.v3("fast_execute_script", body)
        assert answer["result"], (scope, answer)
        status = await running.wire.v3("get_job_instance_status", {
            **scope, "job_instance_id": answer["data"]["job_instance_id"]}, method="GET")
        job = status["data"]["job_instance"]
        assert (job["bk_scope_type"], job["bk_scope_id"], job["bk_biz_id"]) == (
            "biz", "2", 2), (scope, job)


async def test_3_tenant_set_scope_is_accepted(running: Running) -> None:
    await running.start_agents(IPS[:1])
    body = script_body(IPS[:1], bk_scope_type="tenant_set", bk_scope_id="0")
    body.pop("bk_biz_id")
    answer = await running.wire.v3("fast_execute_script", body)
    assert answer["result"], answer
    data = await running.wire.v3("get_job_instance_status", {
        "bk_scope_type": "tenant_set", "bk_scope_id": "0",
        "job_instance_id": answer["data"]["job_instance_id"]}, method="GET")
    assert data["result"]


async def test_4_and_5_extra_fields_and_headers_are_accepted(running: Running) -> None:
    await running.start_agents(IPS[:1])
    extra = {"bk_username": "admin", "operator": "admin", "uin": "x", "appenv": "prod",
             "auth_info": "{}", "bk_token": "t", "blueking_language": "en",
             "_origin_user": "admin", "bklog_request_id": "r1", "account": "root",
             "bk_tenant_id": "default"}
    headers = {**running.wire.headers(), "X-Bk-Tenant-Id": "", "blueking-language": "en",
               "X-Request-Id": "abc", "X-DATA-REQUEST-ID": "def"}
    answer = await running.wire.post("/api/bk-job/prod/api/v3/fast_execute_script/",
                                     {**script_body(IPS[:1]), **extra}, headers=headers)
    assert answer["result"], answer
    job_id = answer["data"]["job_instance_id"]
    listing = await running.wire.v3("get_job_instance_list", {
        "bk_biz_id": 2, "create_time_start": int(time.time() * 1000) - 60000,
        "create_time_end": int(time.time() * 1000) + 60000}, method="GET")
    item = next(i for i in listing["data"]["data"] if i["job_instance_id"] == job_id)
    assert item["operator"] == "admin" and item["type"] == 1 and item["launch_mode"] == 2
    assert item["job_plan_id"] == -1


async def test_5_operator_from_a_bk_username_param(running: Running) -> None:
    """An app-only X-Bkapi-Authorization: the user comes from ``bk_username`` in the body,
    or in the query string of a POST (bk-log's DataAPI), with an empty tenant header."""
    await running.start_agents(IPS[:1])
    app_only = {"X-Bkapi-Authorization": json.dumps({
        "bk_app_code": running.boot["bk_app_code"],
        "bk_app_secret": running.boot["bk_app_secret"]}), "X-Bk-Tenant-Id": ""}
    await running.server.identity.ensure_user("bklog-op")
    await running.server.identity.grant("bklog-op", "biz", "2")
    http = running.wire.http
    path = "/api/c/compapi/v2/jobv3/fast_execute_script/"
    jobs = {}
    for where in ("body", "query"):
        resp = await http.post(path, headers=app_only,
                               params={"bk_username": "bklog-op"} if where == "query" else {},
                               json={**script_body(IPS[:1]), "task_name": where,
                                     **({"bk_username": "bklog-op"} if where == "body" else {})})
        answer = resp.json()
        assert answer["result"] is True, (where, answer)
        jobs[where] = answer["data"]["job_instance_id"]
    resp = await http.get("/api/c/compapi/v2/jobv3/get_job_instance_status/", headers=app_only,
                          params={"bk_biz_id": 2, "job_instance_id": jobs["query"],
                                  "bk_username": "bklog-op"})
    assert resp.json()["result"] is True, resp.json()
    listing = await running.wire.v3("get_job_instance_list", {
        "bk_biz_id": 2, "create_time_start": int(time.time() * 1000) - 60000,
        "create_time_end": int(time.time() * 1000) + 60000}, method="GET")
    operators = {i["job_instance_id"]: i["operator"] for i in listing["data"]["data"]}
    assert {operators[job] for job in jobs.values()} == {"bklog-op"}
    # no user anywhere: a clear refusal, not an anonymous job
    resp = await http.post(path, headers=app_only, json=script_body(IPS[:1]))
    answer = resp.json()
    assert answer["result"] is False and "bk_username" in answer["message"]


async def test_post_body_is_json_whatever_its_content_type(running: Running) -> None:
    """``requests.post(url, data=json.dumps(body))`` sends no Content-Type (or a client
    says text/plain): the body is still the request's JSON. A GET's body is not read,
    as bk-job binds a GET's query string only."""
    await running.start_agents(IPS[:1])
    raw = json.dumps(script_body(IPS[:1])).encode()
    path = "/api/c/compapi/v2/jobv3/fast_execute_script/"
    for content_type in (None, "text/plain", "application/json; charset=utf-8",
                         "application/x-www-form-urlencoded"):
        headers = running.wire.headers()
        if content_type:
            headers["Content-Type"] = content_type
        resp = await running.wire.http.post(path, content=raw, headers=headers)
        assert resp.status_code == 200 and resp.json()["result"] is True, (content_type,
                                                                            resp.text)
    job_id = resp.json()["data"]["job_instance_id"]
    resp = await running.wire.http.request(
        "GET", "/api/c/compapi/v2/jobv3/get_job_instance_status/",
        content=json.dumps({"bk_biz_id": 2, "job_instance_id": job_id}),
        headers={**running.wire.headers(), "Content-Type": "application/json"})
    answer = resp.json()
    assert resp.status_code == 200 and answer["result"] is False
    assert answer["code"] == 1241004 and "bk_scope" in answer["message"]


async def test_6_return_ip_result_forms(running: Running) -> None:
    await running.start_agents(IPS[:1])
    sub = await running.wire.run_script("echo x", IPS[:1])
    query = {"bk_biz_id": 2, "job_instance_id": sub["job_instance_id"]}
    path = "/api/bk-job/prod/api/v3/system/get_job_instance_status/"
    # Python requests renders a bool in a query string as True/False
    for value, expect in (("True", True), ("true", True), ("1", True), ("False", False),
                          ("false", False), ("0", False)):
        data = await running.wire.get(path, {**query, "return_ip_result": value})
        step = data["data"]["step_instance_list"][0]
        assert ("step_ip_result_list" in step) is expect, value
    for flag in (True, False):
        data = await running.wire.post(path, {**query, "return_ip_result": flag})
        assert ("step_ip_result_list" in data["data"]["step_instance_list"][0]) is flag
    # without it: no host results (bk-monitor's schedule reads the job's status only)
    data = await running.wire.get(path, query)
    assert "step_ip_result_list" not in data["data"]["step_instance_list"][0]


async def test_8_python_script_runs_on_python3(running: Running) -> None:
    await running.start_agents(IPS[:1])
    script = ("# -*- coding: utf-8 -*-\nfrom __future__ import print_function\nimport sys\n"
              "import json\n"
              "print(json.dumps({'status': True, 'py': sys.version_info[0]}))\n")
    sub = await running.wire.run_script(script, IPS[:1], script_language=4, timeout=600,
                                        task_name="collector check")
    data = await running.wire.wait(sub["job_instance_id"])
    assert data["job_instance"]["name"] == "collector check"
    detail = await running.wire.v3("get_step_instance_detail", {
        "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
        "step_instance_id": sub["step_instance_id"]}, method="GET")
    assert detail["data"]["script_info"]["script_timeout"] == 600
    logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"], IPS[:1])
    assert json.loads(logs[IPS[0]])["status"] is True


async def test_9_duplicate_targets_collapse(running: Running) -> None:
    await running.start_agents(IPS[:1])
    hosts = await running.server.inventory.list()
    host_id = hosts[0].bk_host_id
    body = script_body([], target_server={
        "ip_list": [{"ip": IPS[0], "bk_cloud_id": "0", "bk_host_id": host_id, "extra": 1},
                    {"ip": IPS[0], "bk_cloud_id": 0}],
        "host_id_list": [host_id, host_id]})
    answer = await running.wire.v3("fast_execute_script", body)
    data = await running.wire.wait(answer["data"]["job_instance_id"])
    assert len(data["step_instance_list"][0]["step_ip_result_list"]) == 1


async def test_12_host_id_targets_still_report_ip_and_cloud(running: Running) -> None:
    await running.start_agents(IPS)
    ids = [h.bk_host_id for h in await running.server.inventory.list()]
    answer = await running.wire.v3("fast_execute_script",
                                   script_body([], target_server={"host_id_list": ids}))
    data = await running.wire.wait(answer["data"]["job_instance_id"])
    for item in data["step_instance_list"][0]["step_ip_result_list"]:
        assert item["ip"] in IPS and item["bk_cloud_id"] == 0
        assert {"bk_host_id", "status", "exit_code", "error_code", "tag", "start_time",
                "end_time", "total_time"} <= set(item)


async def test_16_offline_and_missing_agents(running: Running) -> None:
    await running.start_agents(IPS)
    await running.stop_agent(IPS[1])
    await running.server.inventory.add(2, "127.0.0.50")

    async def offline() -> bool:
        return not any(h.alive for h in await running.server.inventory.list()
                       if h.ip == IPS[1])
    await eventually(offline)
    sub = await running.wire.run_script("echo hi", [*IPS, "127.0.0.50"])
    data = await running.wire.wait(sub["job_instance_id"])
    by_ip = {r["ip"]: r["status"] for r in data["step_instance_list"][0]["step_ip_result_list"]}
    assert by_ip == {IPS[0]: 9, IPS[1]: 310, "127.0.0.50": 18}
    assert data["job_instance"]["status"] == 4


async def test_17_batch_log_union_and_one_item_per_host(running: Running) -> None:
    await running.start_agents(IPS)
    sub = await running.wire.run_script("echo $JOBFLEET_HOST_IP", IPS)
    await running.wire.wait(sub["job_instance_id"])
    ids = {h.ip: h.bk_host_id for h in await running.server.inventory.list()}
    # the first as bk-monitor sends it: a cloud id as text, the CMDB host's other keys
    for lists in ({"ip_list": [{"ip": IPS[0], "bk_cloud_id": "0", "bk_host_name": "one"}],
                   "host_id_list": [ids[IPS[1]]]},
                  {"ip_list": [], "host_id_list": [ids[IPS[0]], ids[IPS[1]]]},
                  {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in IPS], "host_id_list": []},
                  {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}], "host_id_list": [ids[IPS[0]]]}):
        answer = await running.wire.post(
            "/api/c/compapi/v2/jobv3/batch_get_job_instance_ip_log/",
            {"bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
             "step_instance_id": sub["step_instance_id"], **lists})
        data = answer["data"]
        assert data["log_type"] == 1
        wanted = {ip for ip in IPS if ip in json.dumps(lists) or ids[ip] in
                  lists["host_id_list"]}
        assert {i["ip"] for i in data["script_task_logs"]} == wanted
        for item in data["script_task_logs"]:
            assert item["bk_host_id"] == ids[item["ip"]] == item["host_id"]
            assert item["log_content"] == item["ip"] + "\n"


async def test_23_polling_is_cheap(running: Running) -> None:
    ips = [f"127.0.1.{i}" for i in range(1, 21)]
    await running.start_agents(ips)
    sub = await running.wire.run_script("echo polled", ips)
    await running.wire.wait(sub["job_instance_id"])
    started = time.perf_counter()
    await asyncio.gather(*(running.wire.status(sub["job_instance_id"]) for _ in range(100)))
    # a loose bound against pathologies only; figures live in bench/
    assert time.perf_counter() - started < 20


async def test_25_single_host_log_by_ip_or_host_id(running: Running) -> None:
    await running.start_agents(IPS[:1])
    sub = await running.wire.run_script("echo single", IPS[:1])
    await running.wire.wait(sub["job_instance_id"])
    base = {"bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
            "step_instance_id": sub["step_instance_id"]}
    by_ip = await running.wire.v3("get_job_instance_ip_log",
                                  {**base, "bk_cloud_id": 0, "ip": IPS[0]}, method="GET")
    assert by_ip["data"]["log_content"] == "single\n" and by_ip["data"]["log_type"] == 1
    host_id = by_ip["data"]["bk_host_id"]
    # sent without a timeout: bk-job's default of 7200 s
    detail = await running.wire.v3("get_step_instance_detail", base, method="GET")
    assert detail["data"]["script_info"]["script_timeout"] == 7200
    by_id = await running.wire.v3("get_job_instance_ip_log", {**base, "bk_host_id": host_id},
                                  method="GET")
    assert by_id["data"]["log_content"] == "single\n"


async def test_v2_status_and_log(running: Running) -> None:
    await running.start_agents(IPS[:1])
    sub = await running.wire.run_script("echo legacy", IPS[:1])
    await running.wire.wait(sub["job_instance_id"])
    status = await running.wire.post("/api/c/compapi/v2/job/get_job_instance_status/",
                                     {"bk_biz_id": 2, "job_instance_id": sub["job_instance_id"]})
    assert status["data"]["is_finished"] is True
    assert status["data"]["blocks"][0]["step_instances"][0]["step_ip_status"][0]["status"] == 9
    log = await running.wire.post("/api/c/compapi/v2/job/get_job_instance_log/",
                                  {"bk_biz_id": 2, "job_instance_id": sub["job_instance_id"]})
    ip_logs = log["data"][0]["step_results"][0]["ip_logs"]
    assert ip_logs[0]["log_content"] == "legacy\n" and ip_logs[0]["ip"] == IPS[0]


async def test_28_gse_agent_status_and_info(running: Running) -> None:
    await running.start_agents(IPS[:1])
    await running.server.inventory.add(2, "127.0.0.60")
    # a cloud id as text and the CMDB host's other keys, as bk-monitor's hosts carry them
    body = {"bk_supplier_account": "0", "hosts": [
        {"ip": IPS[0], "bk_cloud_id": "0", "bk_host_id": 1, "bk_host_name": "one"},
        {"ip": "127.0.0.60", "bk_cloud_id": 0}]}
    status = await running.wire.post("/api/c/compapi/v2/gse/get_agent_status/", body)
    assert status["data"][f"0:{IPS[0]}"] == {"ip": IPS[0], "bk_cloud_id": 0, "bk_agent_alive": 1}
    assert status["data"]["0:127.0.0.60"]["bk_agent_alive"] == 0
    info = await running.wire.post("/api/c/compapi/v2/gse/get_agent_info/", body)
    item = info["data"][f"0:{IPS[0]}"]
    assert {"ip", "bk_cloud_id", "version", "parent_ip", "parent_port"} <= set(item)


async def test_29_gse2_list_agent_state(running: Running) -> None:
    await running.start_agents(IPS[:1])
    host = (await running.server.inventory.list())[0]
    answer = await running.wire.post("/api/bk-gse/prod/api/v2/cluster/list_agent_state",
                                     {"agent_id_list": [f"0:{IPS[0]}", host.agent_id]})
    states = answer["data"]
    assert [s["status_code"] for s in states] == [2, 2]
    assert {"bk_agent_id", "bk_cloud_id", "version", "run_mode", "status_code"} <= set(states[0])
    unknown = await running.wire.post("/api/bk-gse/prod/api/v2/cluster/list_agent_state",
                                      {"agent_id_list": ["0:127.1.1.1"]})
    assert unknown["code"] == 1011003 and unknown["result"] is False
