"""Each BlueKing system's own call sequence, through the published client (bkapi-component-open).

The request shapes are the ones bk-log, bk-monitor, bk-sops and bk-nodeman send
(shared/reference/bk-clients.md §2-§5); the checks read what those clients read, with
the types they read it as."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
import shlex
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import requests
from bkapi_component.open.client import Client
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from tests.integration.harness import Running, eventually, listening, run_server
from tests.integration.test_callbacks_and_secrets import ALLOW_LOOPBACK, Receiver
from tests.integration.test_file_sources import SECRET as ARTIFACT_SECRET
from tests.integration.test_file_sources import artifact_server
from tests.integration.test_scripts import call, new_script

from jobfleet.server import Server
from jobfleet.store.tables import outbox

IPS = ["127.0.0.2", "127.0.0.3"]
__all__ = ["artifact_server"]  # bk-repo's stand-in, a fixture of the file-source tests
BKLOG_EXTRA = {"bk_username": "admin", "operator": "admin", "uin": "admin", "appenv": "prod",
               "auth_info": json.dumps({"bk_username": "admin"}), "bk_token": "t",
               "blueking_language": "en", "bk_app_code": "bk_log_search"}
# bk-log's DataAPI puts its request id in the query string of every call, POSTs too
BKLOG_QUERY = {"bklog_request_id": "r1"}
BKLOG_HEADERS = {"X-Bk-Tenant-Id": "", "blueking-language": "en", "X-Request-Id": "r1",
                 "X-DATA-REQUEST-ID": "d1"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def client_for(url: str, boot: dict[str, Any], user: str = "admin") -> Client:
    client = Client(endpoint=url, bk_api_ver="v2")
    client.update_bkapi_authorization(bk_app_code=boot["bk_app_code"],
                                      bk_app_secret=boot["bk_app_secret"], bk_username=user)
    return client


def poll(fetch: Any, done: Any, times: int = 300, interval: float = 0.1) -> dict[str, Any]:
    for _ in range(times):
        answer = fetch()
        assert answer["result"] is True, answer
        if done(answer["data"]):
            return dict(answer["data"])
        time.sleep(interval)
    raise AssertionError("never finished")


async def host_ids(server: Server) -> dict[str, int]:
    return {h.ip: h.bk_host_id for h in await server.inventory.list()}


# bk-log's check_bkunifylogbeat/check.py reduced to what reaches the wire: its options
# and its one JSON line, in Python that runs under 2 and 3 alike
CHECK_PY = r'''# -*- coding: utf-8 -*-
from __future__ import print_function
import getopt
import json
import sys

opts, _ = getopt.getopt(sys.argv[1:], "p:s:i:",
                        ["gse_path=", "subscription_id=", "ipc_socket_file="])
seen = dict(opts)
items = [{"module": "bkunifylogbeat", "item": "config",
          "status": seen.get("--subscription_id") == "42",
          "message": "bkunifylogbeat_sub_%s" % seen.get("--subscription_id")},
         {"module": "gse_agent", "item": "socket",
          "status": seen.get("--ipc_socket_file") == "/var/run/ipc.state.report",
          "message": seen.get("--gse_path", "")}]
print(json.dumps({"status": all(i["status"] for i in items), "data": items}))
'''


def collector_check(url: str, boot: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """bk-log's AgentChecker (§2.3): submit, poll with return_ip_result, read logs."""
    client = client_for(url, boot)
    param = "--subscription_id=42 --ipc_socket_file=/var/run/ipc.state.report " \
            "--gse_path=/usr/local/gse/"
    sub = client.jobv3.fast_execute_script(
        {"bk_biz_id": 2, **BKLOG_EXTRA, "account_alias": "root",
         "script_content": b64(CHECK_PY), "script_language": 4,
         "task_name": "collector check", "target_server": target, "timeout": 7200,
         "script_param": b64(param)}, headers=BKLOG_HEADERS, params=BKLOG_QUERY)
    assert sub["result"] is True, sub
    job_id = sub["data"].get("job_instance_id", 0)
    step_id = sub["data"].get("step_instance_id", 0)
    assert isinstance(job_id, int) and isinstance(step_id, int) and job_id and step_id
    status = poll(lambda: client.jobv3.get_job_instance_status(
        {"bk_biz_id": 2, "job_instance_id": job_id, "bk_username": "admin",
         "return_ip_result": True, "bklog_request_id": "r1"}, headers=BKLOG_HEADERS),
        lambda data: data["finished"])
    step = next(s for s in status["step_instance_list"] if s["step_instance_id"] == step_id)
    results = step["step_ip_result_list"]
    logs = client.jobv3.batch_get_job_instance_ip_log(
        {"bk_biz_id": 2, **BKLOG_EXTRA, "job_instance_id": job_id, "step_instance_id": step_id,
         "ip_list": [{"bk_cloud_id": r["bk_cloud_id"], "ip": r["ip"]} for r in results]},
        headers=BKLOG_HEADERS, params=BKLOG_QUERY)
    assert logs["result"] is True, logs
    by_key = {f"{i['bk_cloud_id']}:{i['ip']}": i["log_content"]
              for i in logs["data"]["script_task_logs"]}
    checks: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        key = f"{r['bk_cloud_id']}:{r['ip']}"
        assert r["status"] == 9, r
        # every non-empty line must be JSON, as the checker json.loads each
        checks[key] = [json.loads(line) for line in by_key[key].split("\n") if line]
    return {"results": results, "checks": checks, "count": len(logs["data"]["script_task_logs"])}


# both target forms on one server and its agents, which cost more to start than a check
async def test_bk_log_collector_check(running: Running) -> None:
    await running.start_agents(IPS)
    ids = await host_ids(running.server)
    targets: dict[str, dict[str, Any]] = {
        "ip_list": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in IPS]},
        "host_id_list": {"host_id_list": [ids[ip] for ip in IPS]}}
    for form, target in targets.items():
        out = await asyncio.to_thread(collector_check, running.url, running.boot, target)
        assert out["count"] == len(IPS), (form, out)
        for r in out["results"]:
            assert type(r["bk_cloud_id"]) is int and type(r["bk_host_id"]) is int, (form, r)
            assert type(r["exit_code"]) is int and type(r["status"]) is int, (form, r)
            assert r["bk_host_id"] == ids[r["ip"]], (form, r)
        for key, lines in out["checks"].items():
            assert len(lines) == 1, (form, key, lines)
            assert lines[0]["status"] is True, (form, lines)
            assert [i["item"] for i in lines[0]["data"]] == ["config", "socket"], (form, lines)
            assert lines[0]["data"][1]["message"] == "/usr/local/gse/", (form, lines)


BKLOG_MARK = re.compile(r"<BKLOG>(.*?):(.*?)</BKLOG>")
BIZ = {"bk_biz_id": 2}


def extraction(url: str, boot: dict[str, Any], ids: dict[str, int], work: str,
               scope: dict[str, Any]) -> dict[str, Any]:
    """bk-log's log extraction (§2.4): pack on the sources, distribute to a transit host
    with [FILESRCIP], then upload from there; each phase polled as the pipeline polls."""
    client = client_for(url, boot)
    sources = {"ip_list": [{"ip": IPS[1], "bk_cloud_id": 0}], "host_id_list": [ids[IPS[0]]]}

    def run(script: str, target: dict[str, Any], params: list[str]) -> dict[str, Any]:
        sub = client.jobv3.fast_execute_script(
            {"bk_biz_id": 2, **BKLOG_EXTRA, "account_alias": "root",
             "script_content": b64(script), "script_language": 1, "task_name": "[BKLOG] x",
             "target_server": target, "timeout": 600,
             "script_param": b64(" ".join(shlex.quote(p) for p in params))},
            headers=BKLOG_HEADERS)
        assert sub["result"] is True, sub
        return dict(sub["data"])

    def status(job_id: int, scope: dict[str, Any] = BIZ) -> dict[str, Any]:
        return poll(lambda: client.jobv3.get_job_instance_status(
            {**scope, "job_instance_id": job_id, "bk_username": "admin",
             "return_ip_result": True}), lambda data: data["finished"])

    # 1. pack: a script that says where it put the package, one host failing for disk
    pack_sh = ('mkdir -p "$1" && echo "packed & ready" > "$1/pack.tar.gz"\n'
               'echo "<BKLOG>path:$1/pack.tar.gz</BKLOG>"\n'
               'echo "<BKLOG>host:$JOBFLEET_HOST_IP</BKLOG>"\n'
               '[ "$JOBFLEET_HOST_IP" = "$2" ] && exit 3; exit 0\n')
    packed = run(pack_sh, sources, [f"{work}/packed dir", IPS[1]])
    pack = status(packed["job_instance_id"])["step_instance_list"][0]
    codes = {r["ip"]: r["exit_code"] for r in pack["step_ip_result_list"]}
    assert any(code == 0 for code in codes.values()), codes
    answer = client.jobv3.batch_get_job_instance_ip_log(
        {"bk_biz_id": 2, **BKLOG_EXTRA, "job_instance_id": packed["job_instance_id"],
         "step_instance_id": pack["step_instance_id"],
         "host_id_list": [r["bk_host_id"] for r in pack["step_ip_result_list"]],
         "ip_list": []}, headers=BKLOG_HEADERS)
    assert answer["result"] is True, answer
    marks: dict[Any, dict[str, str]] = {}
    for item in answer["data"]["script_task_logs"]:
        key = item["bk_host_id"] or item["ip"]  # tasks/extract.py requires the key
        marks[key] = dict(BKLOG_MARK.findall(html.unescape(item["log_content"])))
    # 2. distribute to the transit host, as file_distribution sends it (raw=True)
    transit = f"{work}/transit/task1/[FILESRCIP]"
    dist = client.jobv3.fast_transfer_file(
        {"bk_username": "admin", "account": "root", "account_alias": "root",
         "task_name": "[BKLOG] File Distribution By admin",
         "file_source_list": [{"account": {"alias": "root"},
                               "server": {"host_id_list": [ids[ip] for ip in IPS]},
                               "file_list": [f"{work}/packed dir/pack.tar.gz"]}],
         "file_target_path": transit,
         "target_server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}, **scope})
    assert dist["result"] is True, dist.get("message")
    # in multi-tenant mode, the distribution's status is asked in the same scope
    moved = status(dist["data"]["job_instance_id"], scope)
    # 3. upload: every subdirectory of the transit dir is one source host
    cos_sh = 'cd "$1" && for d in *; do echo "<BKLOG>dir:$d</BKLOG>"; cat "$d/pack.tar.gz"; done'
    uploaded = run(cos_sh, {"host_id_list": [ids[IPS[0]]]}, [f"{work}/transit/task1"])
    cos = status(uploaded["job_instance_id"])
    cos_log = client.jobv3.get_job_instance_ip_log(
        {"bk_biz_id": 2, "job_instance_id": uploaded["job_instance_id"],
         "step_instance_id": uploaded["step_instance_id"], "bk_host_id": ids[IPS[0]]})
    return {"codes": codes, "marks": marks, "moved": moved, "cos": cos,
            "cos_log": cos_log["data"], "dist": dist["data"]}


EXTRACTION_SCOPES: list[dict[str, Any]] = [
    BIZ, {"bk_scope_type": "biz", "bk_scope_id": "2"},
    # multi-tenant mode: the whole tenant set, whose id bk-log holds as a number
    {"bk_scope_type": "tenant_set", "bk_scope_id": 1}]


# each scope's flow in a directory of its own on one server: a server and agents
# started per scope cost more than a flow
async def test_bk_log_extraction(running: Running, tmp_path: Path) -> None:
    await running.start_agents(IPS)
    ids = await host_ids(running.server)
    for n, scope in enumerate(EXTRACTION_SCOPES):
        work = tmp_path / f"scope{n}"
        work.mkdir()
        out = await asyncio.to_thread(extraction, running.url, running.boot, ids, str(work),
                                      scope)
        assert out["codes"] == {IPS[0]: 0, IPS[1]: 3}, (scope, out["codes"])
        packed = f"{work}/packed dir/pack.tar.gz"
        assert out["marks"] == {ids[ip]: {"path": packed, "host": ip} for ip in IPS}, (
            scope, out["marks"])
        assert set(out["dist"]) >= {"job_instance_id", "step_instance_id",
                                    "job_instance_name"}, (scope, out["dist"])
        assert out["moved"]["job_instance"]["status"] == 3, (scope, out["moved"])
        assert all(r["exit_code"] == 0
                   for r in out["cos"]["step_instance_list"][0]["step_ip_result_list"]), (
            scope, out["cos"])
        assert out["cos_log"]["log_content"] == "".join(
            f"<BKLOG>dir:0_{ip}</BKLOG>\npacked & ready\n" for ip in sorted(IPS)), (
            scope, out["cos_log"])


PERMISSION_CODES = (9900403, 35999999)


def as_assignees(url: str, boot: dict[str, Any], assignees: list[str], action: str,
                 body: dict[str, Any]) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """bk-monitor's APIResource: each assignee in turn, the next only on permission denied."""
    refused = []
    for user in assignees:
        client = client_for(url, boot, user)
        answer = getattr(client.jobv3, action)({**body, "bk_username": user,
                                                 "_origin_user": assignees[0]})
        if answer.get("code") in PERMISSION_CODES:
            refused.append(answer)
            continue
        if answer.get("result") is False and answer.get("code") != 0:
            raise AssertionError(answer)
        return user, dict(answer["data"]), refused
    raise AssertionError(refused)


def uptime_test_run(url: str, boot: dict[str, Any], hosts: list[dict[str, Any]],
                    assignees: list[str]) -> dict[str, Any]:
    """bk-monitor's uptime-check test run (§3.3): both target lists, then the log poll."""
    target = {"ip_list": [h for h in hosts if h.get("ip")],
              "host_id_list": [h["bk_host_id"] for h in hosts if h.get("bk_host_id")]}
    user, sub, refused = as_assignees(url, boot, assignees, "fast_execute_script", {
        "bk_scope_type": "biz", "bk_scope_id": "2", "script_content": b64("echo up; exit $1"),
        "script_param": b64("0"), "target_server": target, "script_language": 1,
        "account_alias": "root"})
    client = client_for(url, boot, user)
    for _ in range(600):
        answer = client.jobv3.get_job_instance_status(
            {"bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
             "return_ip_result": True, "bk_username": user})
        data = answer["data"]
        if data["finished"] and data["step_instance_list"]:
            break
        time.sleep(0.5)
    results = data["step_instance_list"][0]["step_ip_result_list"]
    needed = [{k: r[k] for k in ("bk_host_id", "ip", "bk_cloud_id", "status", "exit_code")}
              for r in results]
    logs = client.jobv3.batch_get_job_instance_ip_log(
        {"bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
         "step_instance_id": data["step_instance_list"][0]["step_instance_id"],
         "host_id_list": [r["bk_host_id"] for r in results],
         "ip_list": [{"ip": r["ip"], "bk_cloud_id": r["bk_cloud_id"]} for r in results]})
    by_host = {i.get("host_id") or i["bk_host_id"]: i["log_content"]
               for i in logs["data"]["script_task_logs"]}
    # a KeyError here is bk-monitor's KeyError
    out = {r["bk_host_id"]: (r["status"], by_host[r["bk_host_id"]]) for r in needed}
    return {"user": user, "refused": refused, "out": out}


async def test_bk_monitor_uptime_test_run_tries_assignees(running: Running) -> None:
    await running.start_agents(IPS)
    ids = await host_ids(running.server)
    await running.server.identity.ensure_user("outsider")
    await running.server.identity.create_business(3, "another")
    await running.server.identity.grant("outsider", "biz", "3")
    # the full CMDB host dicts bk-monitor holds, one of them listed by IP only
    hosts = [{"ip": IPS[0], "bk_cloud_id": 0, "bk_host_id": ids[IPS[0]], "bk_biz_id": 2,
              "bk_host_innerip": IPS[0], "bk_host_name": "one", "os_type": "1",
              "bk_cloud_name": "Default Area", "bk_supplier_account": "0"},
             {"ip": IPS[1], "bk_cloud_id": 0, "display_name": "two"}]
    out = await asyncio.to_thread(uptime_test_run, running.url, running.boot, hosts,
                                  ["outsider", "admin"])
    assert out["user"] == "admin"
    [refused] = out["refused"]
    assert refused["result"] is False and refused["code"] == 9900403 and refused["message"]
    assert out["out"] == {ids[ip]: (9, "up\n") for ip in IPS}


@pytest.fixture
async def allowed(tmp_path: Path, database_url: str) -> AsyncIterator[Running]:
    """A server whose callbacks may reach the loopback receiver."""
    async with run_server(tmp_path, database_url, server=ALLOW_LOOPBACK) as run:
        yield run


def sops_node(url: str, boot: dict[str, Any], callback: str) -> dict[str, Any]:
    """A bk-sops JobService node (§5): submit with a callback, then read what it reads."""
    client = client_for(url, boot)
    script = 'echo "<SOPS_VAR>disk:$1</SOPS_VAR>"; echo "tagged"'
    sub = client.jobv3.fast_execute_script(
        {"bk_scope_type": "biz", "bk_scope_id": "2", "bk_biz_id": 2,
         "script_content": b64(script), "script_param": b64("'80 %'"), "script_language": 1,
         "account_alias": "root", "timeout": 600, "task_name": "sops node",
         "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in IPS]},
         "callback_url": callback})
    assert sub["result"] is True, sub
    return dict(sub["data"])


def sops_reads(url: str, boot: dict[str, Any], job_id: int) -> dict[str, Any]:
    client = client_for(url, boot)
    status = client.jobv3.get_job_instance_status(
        {"bk_scope_type": "biz", "bk_scope_id": "2", "bk_biz_id": 2,
         "job_instance_id": job_id, "return_ip_result": True})["data"]
    step = status["step_instance_list"][0]
    results = {r["ip"]: (r["status"], r["tag"]) for r in step["step_ip_result_list"]}
    logs = {}
    for ip in IPS:
        answer = client.jobv3.get_job_instance_ip_log(
            {"bk_scope_type": "biz", "bk_scope_id": "2", "bk_biz_id": 2,
             "job_instance_id": job_id, "step_instance_id": step["step_instance_id"],
             "bk_cloud_id": 0, "ip": ip})
        logs[ip] = answer["data"]["log_content"]
    return {"results": results, "logs": logs, "job_status": status["job_instance"]["status"]}


def sops_other_nodes(url: str, boot: dict[str, Any], callback: str, plan_id: int,
                     work: str) -> dict[str, int]:
    """bk-sops's file distribution and job plan nodes: each passes its own callback."""
    client = client_for(url, boot)
    scope = {"bk_scope_type": "biz", "bk_scope_id": "2", "bk_biz_id": 2}
    moved = client.jobv3.fast_transfer_file(
        {**scope, "account_alias": "root", "file_target_path": f"{work}/to",
         "file_source_list": [{"file_list": [f"{work}/a.txt"], "account": {"alias": "root"},
                               "server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}}],
         "target_server": {"ip_list": [{"ip": IPS[1], "bk_cloud_id": 0}]},
         "callback_url": callback + "?token=t2"})
    assert moved["result"] is True, moved
    planned = client.jobv3.execute_job_plan(
        {**scope, "job_plan_id": plan_id, "callback_url": callback + "?token=t3"})
    assert planned["result"] is True, planned
    return {"token=t2": moved["data"]["job_instance_id"],
            "token=t3": planned["data"]["job_instance_id"]}


async def test_bk_sops_node_advances_on_the_callback(allowed: Running, tmp_path: Path) -> None:
    await allowed.start_agents(IPS)
    (tmp_path / "a.txt").write_text("a\n")
    own = "/api/jobfleet/v1"
    tpl = await allowed.wire.post(f"{own}/templates?bk_biz_id=2", {
        "name": "sops plan", "step_list": [{"name": "one", "type": 1, "script_info": {
            "script_content": "echo planned", "script_language": 1, "account": "root",
            "server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}}}]})
    assert tpl["result"], tpl
    plan = await allowed.wire.post(f"{own}/templates/{tpl['data']['id']}/plans?bk_biz_id=2",
                                   {"name": "sops plan"})
    assert plan["result"], plan
    async with listening(Receiver(failures=0)) as receiver:
        sub = await asyncio.to_thread(sops_node, allowed.url, allowed.boot,
                                      receiver.url + "?token=t1")
        others = await asyncio.to_thread(sops_other_nodes, allowed.url, allowed.boot,
                                         receiver.url, plan["data"]["id"], str(tmp_path))
        for _ in range(300):
            if len(receiver.accepted) >= 3:
                break
            await asyncio.sleep(0.1)
    by_token = dict(zip(receiver.queries, receiver.accepted, strict=True))
    # the transfer's and the plan's nodes advance on theirs too
    for token, job_id in others.items():
        assert by_token[token]["job_instance_id"] == job_id and by_token[token]["status"] == 3
        assert [s["status"] for s in by_token[token]["step_instance_list"]] == [3]
    body = by_token["token=t1"]
    # the node parses the body itself and reads these two, as numbers
    assert body["job_instance_id"] == sub["job_instance_id"] and body["status"] == 3
    assert [s["status"] for s in body["step_instance_list"]] == [3]
    out = await asyncio.to_thread(sops_reads, allowed.url, allowed.boot, sub["job_instance_id"])
    assert out["job_status"] == 3
    assert out["results"] == {ip: (9, "") for ip in IPS}
    assert out["logs"] == {ip: "<SOPS_VAR>disk:80 %</SOPS_VAR>\ntagged\n" for ip in IPS}


def nodeman_install(url: str, boot: dict[str, Any], ids: dict[str, int],
                    target_dir: str) -> dict[str, Any]:
    """bk-nodeman's job steps (§5): push a config file, run a script, key the hosts by
    ``<cloud>-<ip>`` and read ``status`` and ``error_code``."""
    client = client_for(url, boot)
    # the published client has no push_config_file: bk-nodeman posts it itself
    auth = {"bk_app_code": boot["bk_app_code"], "bk_app_secret": boot["bk_app_secret"],
            "bk_username": "admin"}
    pushed = requests.post(
        f"{url}/api/c/compapi/v2/jobv3/push_config_file/", timeout=60,
        headers={"X-Bkapi-Authorization": json.dumps(auth)},
        json={"bk_biz_id": 2, "task_name": "NODE_MAN_push", "account_alias": "root",
              "file_target_path": target_dir,
              "file_list": [{"file_name": "agent.conf", "content": b64("port=58625\n")}],
              "target_server": {"host_id_list": [ids[ip] for ip in IPS]}}).json()
    assert pushed["result"] is True, pushed
    out: dict[str, Any] = {}

    def finished(job_id: int) -> tuple[int, dict[str, tuple[int, int]]]:
        data = poll(lambda: client.jobv3.get_job_instance_status(
            {"bk_biz_id": 2, "job_instance_id": job_id, "return_ip_result": True}),
            lambda data: data["job_instance"]["status"] not in (1, 2))
        hosts = {f"{r['bk_cloud_id']}-{r['ip']}": (r["status"], r["error_code"])
                 for r in data["step_instance_list"][0]["step_ip_result_list"]}
        return data["job_instance"]["status"], hosts

    out["push"] = finished(pushed["data"]["job_instance_id"])
    ran = client.jobv3.fast_execute_script(
        {"bk_biz_id": 2, "script_language": 1, "account_alias": "root", "timeout": 300,
         "script_content": b64(f"cat {target_dir}/agent.conf"),
         "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in IPS]}})
    assert ran["result"] is True, ran
    out["run"] = finished(ran["data"]["job_instance_id"])
    log = client.jobv3.get_job_instance_ip_log(
        {"bk_biz_id": 2, "job_instance_id": ran["data"]["job_instance_id"],
         "step_instance_id": ran["data"]["step_instance_id"], "bk_host_id": ids[IPS[1]]})
    out["log"] = log["data"]["log_content"]
    return out


async def test_bk_nodeman_push_and_run(running: Running, tmp_path: Path) -> None:
    await running.start_agents(IPS)
    ids = await host_ids(running.server)
    out = await asyncio.to_thread(nodeman_install, running.url, running.boot, ids,
                                  str(tmp_path / "etc"))
    for name in ("push", "run"):
        assert out[name] == (3, {f"0-{ip}": (9, 0) for ip in IPS}), (name, out[name])
    assert out["log"] == "port=58625\n"


async def test_bk_monitor_job_links_lead_somewhere(running: Running) -> None:
    """The job action's links (§3.2): the run, the plan, and "new template" of a business."""
    await running.start_agents(IPS[:1])
    await running.server.identity.create_business(3, "three")
    sub = await running.wire.run_script("echo linked", IPS[:1])
    async with httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as http:
        create = "/biz/3/task_manage/create"
        # before logging in: to the login page, and back here afterwards
        first = await http.get(create)
        assert first.status_code == 303
        assert first.headers["location"] == "/login?" + urlencode({"next": create})
        login = await http.post("/login", data={
            "username": "admin", "password": running.boot["admin_password"], "next": create})
        assert (login.status_code, login.headers["location"]) == (303, create)
        made = await http.get(create)
        assert (made.status_code, made.headers["location"]) == (303, "/templates?biz=3")
        listing = await http.get(made.headers["location"])
        assert listing.status_code == 200
        assert re.search(r'<option value="3" selected', listing.text), listing.text[:2000]
        for odd in ("/biz/x/task_manage/create", "/biz/%D9%A2/task_manage/create"):
            answer = await http.get(odd)
            assert (answer.status_code, answer.headers["location"]) == (303, "/templates")
        job = await http.get(f"/api_execute/{sub['job_instance_id']}")
        assert job.status_code == 200 and "missing" not in job.text.lower()


class FormOnlyReceiver(Receiver):
    """A receiver that reads only form posts, as some older callback views do: bk-job
    sends such a receiver the same body again, declared a form post, at once."""

    def __init__(self) -> None:
        super().__init__()
        self.types: list[str] = []

    async def hook(self, request: Request) -> Response:
        self.types.append(request.headers.get("content-type", ""))
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return Response("unsupported media type", status_code=415)
        self.accepted.append(json.loads(await request.body()))
        return Response("ok")


async def test_a_callback_turned_away_as_json_is_sent_again_as_a_form(allowed: Running) -> None:
    await allowed.start_agents(IPS[:1])
    async with listening(FormOnlyReceiver()) as receiver:
        sub = await allowed.wire.run_script("echo hi", IPS[:1], callback_url=receiver.url)
        for _ in range(100):
            if receiver.accepted:
                break
            await asyncio.sleep(0.1)
    # at once, in the same attempt: not after the backoff, nor only as JSON
    assert receiver.types == ["application/json", "application/x-www-form-urlencoded"]
    [body] = receiver.accepted
    assert body["job_instance_id"] == sub["job_instance_id"] and body["status"] == 3

    async def recorded() -> Any:
        # the outcome is written after the receiver has answered
        async with allowed.server.db.connect() as conn:
            row = (await conn.execute(select(outbox))).one()
        return row if row.state != "pending" else None

    row = await eventually(recorded)
    assert (row.state, row.attempts) == ("done", 1)


def sops_push_files(url: str, boot: dict[str, Any], ids: dict[str, int],
                    work: str) -> dict[str, Any]:
    """bk-sops's batch file distribution (fast_push_file v3): several transfers sent side
    by side, each polled until ``job_instance.status`` passes 3."""
    client = client_for(url, boot)
    source = [{"file_list": [f"{work}/a.txt", f"{work}/b.txt"],
               "server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]},
               "account": {"alias": "root"}, "file_type": 1}]
    bodies = [{"bk_scope_type": "biz", "bk_scope_id": "2", "bk_biz_id": 2,
               "file_source_list": source, "account_alias": "root",
               "target_server": {"host_id_list": [ids[ip] for ip in IPS]},
               "file_target_path": f"{work}/to{n}", "upload_speed_limit": 10,
               "download_speed_limit": 10, "timeout": 300,
               "rolling_config": {"expression": "50%", "mode": 1}} for n in range(3)]
    started = [client.jobv3.fast_transfer_file(body) for body in bodies]
    assert all(s["result"] for s in started), started
    finals = []
    for answer in started:
        data = poll(lambda answer=answer: client.jobv3.get_job_instance_status(
            {"bk_scope_type": "biz", "bk_scope_id": "2", "bk_biz_id": 2,
             "job_instance_id": answer["data"]["job_instance_id"]}),
            lambda data: data["job_instance"]["status"] >= 3)
        finals.append(data["job_instance"]["status"])
    missing = client.jobv3.fast_transfer_file(
        {**bodies[0], "file_source_list": [{"file_list": ["/a.txt"], "file_type": 3,
                                            "file_source_code": "no-such-source"}]})
    return {"names": [s["data"]["job_instance_name"] for s in started], "finals": finals,
            "missing": missing}


async def test_bk_sops_batch_file_distribution(running: Running, tmp_path: Path) -> None:
    await running.start_agents(IPS)
    ids = await host_ids(running.server)
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "b.txt").write_text("b\n")
    out = await asyncio.to_thread(sops_push_files, running.url, running.boot, ids,
                                  str(tmp_path))
    assert out["finals"] == [3, 3, 3] and all(out["names"])
    for n in range(3):
        assert (tmp_path / f"to{n}" / "a.txt").read_text() == "a\n"
        assert (tmp_path / f"to{n}" / "b.txt").read_text() == "b\n"
    missing = out["missing"]
    # bk-job's code for a file source code it does not know
    assert (missing["result"], missing["code"]) == (False, 1260012), missing
    assert "no-such-source" in missing["message"]


def sops_stored_script(url: str, boot: dict[str, Any], name: str) -> dict[str, Any]:
    """bk-sops's "business script" source (fast_execute_script v1.1): the script list
    paged in 500s after a first call of one to learn the total, the name matched
    exactly among what the fuzzy filter gives, then run by its ``id``."""
    client = client_for(url, boot)
    scope = {"bk_scope_type": "biz", "bk_scope_id": "2", "bk_biz_id": 2}
    first = client.jobv3.get_script_list({**scope, "name": name, "start": 0, "length": 1})
    assert first["result"] is True, first
    found: list[dict[str, Any]] = []
    for start in range(0, first["data"]["total"], 500):
        page = client.jobv3.get_script_list({**scope, "name": name, "start": start,
                                             "length": 500})
        found.extend(page["data"]["data"])
    chosen = next(s for s in found if s["name"] == name)
    sub = client.jobv3.fast_execute_script(
        {**scope, "timeout": "600", "account_alias": "root", "script_id": chosen["id"],
         "script_param": b64("None"),  # str() of an empty input, as the plugin sends it
         "target_server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}})
    assert sub["result"] is True, sub
    poll(lambda: client.jobv3.get_job_instance_status(
        {**scope, "job_instance_id": sub["data"]["job_instance_id"]}),
        lambda data: data["job_instance"]["status"] >= 3)
    log = client.jobv3.get_job_instance_ip_log(
        {**scope, "job_instance_id": sub["data"]["job_instance_id"],
         "step_instance_id": sub["data"]["step_instance_id"], "bk_cloud_id": 0,
         "ip": IPS[0]})
    return {"names": sorted(s["name"] for s in found), "total": first["data"]["total"],
            "log": log["data"]["log_content"]}


async def test_bk_sops_runs_a_business_script_found_by_name(running: Running) -> None:
    await running.start_agents(IPS[:1])
    for name in ("clean", "clean logs", "cleanup"):
        made = await new_script(running.wire, name, f'echo "{name}: $1"')
        await call(running.wire, "publish_script_version", {
            "bk_biz_id": 2, "script_id": made["script_id"], "script_version_id": made["id"]})
    out = await asyncio.to_thread(sops_stored_script, running.url, running.boot, "clean")
    assert (out["total"], out["names"]) == (3, ["clean", "clean logs", "cleanup"])
    assert out["log"] == "clean: None\n"


def health_probe(url: str, boot: dict[str, Any]) -> dict[str, Any]:
    """bk-log's third-party check from a web process: no user in the request it makes."""
    client = client_for(url, boot, user="")
    return dict(client.jobv3.get_public_script_list({"bk_biz_id": 2},
                                                    headers={"X-Bk-Tenant-Id": ""}))


async def test_bk_log_health_probe_without_a_user(running: Running) -> None:
    answer = await asyncio.to_thread(health_probe, running.url, running.boot)
    assert answer["result"] is True and answer["code"] == 0
    assert {"start", "length", "total", "data"} <= set(answer["data"])


def nodeman_artifacts(url: str, boot: dict[str, Any], ids: dict[str, int], base_url: str,
                      target: str) -> dict[str, Any]:
    """bk-nodeman's package distribution from bk-repo (apps/core/files): a credential and
    a file source registered through its own JobApi (posts to the ESB path, which the
    published client lacks), then a transfer naming the source by id."""
    auth = {"bk_app_code": boot["bk_app_code"], "bk_app_secret": boot["bk_app_secret"],
            "bk_username": "admin"}

    def post(name: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = requests.post(f"{url}/api/c/compapi/v2/jobv3/{name}/", json=body, timeout=60,
                               headers={"X-Bkapi-Authorization": json.dumps(auth)}).json()
        assert answer["result"] is True, (name, answer)
        return dict(answer["data"])

    credential = post("create_credential", {
        "bk_biz_id": 2, "type": "USERNAME_PASSWORD", "name": "NODEMAN_BLUEKING_ARTIFACTORY",
        "description": "节点管理[2]蓝鲸制品库凭证", "credential_username": "ci",
        "credential_password": ARTIFACT_SECRET})
    source = post("create_file_source", {
        "type": "BLUEKING_ARTIFACTORY", "bk_biz_id": 2, "credential_id": credential["id"],
        "code": "NODEMAN_BLUEKING_ARTIFACTORY", "alias": "节点管理[2]蓝鲸制品库文件源",
        "access_params": {"base_url": base_url}})
    client = client_for(url, boot)
    started = client.jobv3.fast_transfer_file(
        {"bk_biz_id": 2, "account_alias": "root", "file_target_path": target,
         "file_source_list": [{"file_list": ["proj/generic-local/v1/tool.sh"],
                               "file_source_id": source["id"], "file_type": 3}],
         "target_server": {"host_id_list": [ids[ip] for ip in IPS]}, "timeout": 600})
    assert started["result"] is True, started
    data = poll(lambda: client.jobv3.get_job_instance_status(
        {"bk_biz_id": 2, "job_instance_id": started["data"]["job_instance_id"],
         "return_ip_result": True}), lambda data: data["job_instance"]["status"] not in (1, 2))
    hosts = {f"{r['bk_cloud_id']}-{r['ip']}": r["status"]
             for r in data["step_instance_list"][0]["step_ip_result_list"]}
    return {"ids": (type(credential["id"]), type(source["id"])),
            "status": data["job_instance"]["status"], "hosts": hosts}


async def test_bk_nodeman_distributes_from_bk_repo(tmp_path: Path, database_url: str,
                                                   artifact_server: str) -> None:
    # the artifact server lives on loopback, where file sources reach only when allowed
    async with run_server(tmp_path, database_url, server=ALLOW_LOOPBACK) as run:
        await run.start_agents(IPS)
        ids = await host_ids(run.server)
        out = await asyncio.to_thread(nodeman_artifacts, run.url, run.boot, ids,
                                      artifact_server, str(tmp_path / "pkgs"))
    # as bk-job: a credential's id is text, a file source's a number (nodeman stores both)
    assert out["ids"] == (str, int), out
    assert out["status"] == 3 and out["hosts"] == {f"0-{ip}": 9 for ip in IPS}, out
    assert (tmp_path / "pkgs" / "tool.sh").read_bytes() == b"echo tool\n"
