"""Every route that takes an object id keeps a user in their businesses: alice, who holds
business 2 only, names each object of business 3 with business 2 as the scope (refused as
an object that does not exist) and with business 3 as the scope (refused for want of
permission). The routes come from the app's own table, so a route added without a case
or a reason here fails the sweep."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tests.integration.harness import Running, Wire, b64, eventually, run_server
from tests.integration.test_scope_isolation import two_businesses

from jobfleet.store.database import now_ms

V3 = "/api/bk-job/prod/api/v3/"
JOBV2 = "/api/c/compapi/v2/job/"
GSE1 = "/api/c/compapi/v2/gse/"
GSE2 = "/api/bk-gse/prod/api/v2/"
ESB = "/api/c/compapi/v2/jobv3/"
OWN = "/api/jobfleet/v1"
A = "127.0.0.2"
PERMISSION = 9900403
APP_FORBIDDEN = 1247403
INTERNAL = 1240002
# what "no such object" is answered with, per kind of object
NOT_EXIST = {1243001, 1243004, 1243009, 1243026, 1243047, 1243048, 1244003, 1244006, 1244007,
             1244012, 1245001, 1260001, 1260012, 1260017, 1249404, 1211003,
             1243052, 1243053}
# and, for what a request targets or sends, bk-job's answers for a topology node or an
# upload the business does not have (1241010) and a host it does not hold (1244002)
OUTSIDE = NOT_EXIST | {1241010, 1244002}
MARK = "theirsecret"  # in every name of business 3's objects: an answer quoting it leaks

Ids = dict[str, Any]


@dataclass(frozen=True)
class Case:
    """How to name business 3's object: ``path(ids)`` and ``params(ids)``, the scope
    added by ``call``; ``scope_in_path``: the business is the path's ``{biz}``."""

    method: str
    path: Callable[[Ids], str]
    params: Callable[[Ids], dict[str, Any]]
    scope_in_path: bool = False
    # the route reads no scope from the request: both ways it must answer as for an
    # object that does not exist, or refuse
    scopeless: bool = False


def v3(name: str, params: Callable[[Ids], dict[str, Any]]) -> tuple[str, Case]:
    return name, Case("POST", lambda _i, n=name: V3 + n, params)


# the names of the ids below, as the routes name them
ROUTE_NAMES = {**{f"{{{k}}}": "{id}" for k in (
    "template", "plan", "cron", "group", "set", "module", "heal", "notify")},
    "{job}": "{job_instance_id}", "{delivery}": "{delivery_id}", "{biz}": "{bk_biz_id}",
    "{file}": "{file_id}"}


def own(method: str, template: str, params: Callable[[Ids], dict[str, Any]] | None = None,
        *, scope_in_path: bool = False, scopeless: bool = False) -> tuple[str, Case]:
    route = template.replace("/etc/hostname", "/{path}")
    for mine, its in ROUTE_NAMES.items():
        route = route.replace(mine, its)
    return f"{method} {OWN}{route}", Case(
        method, lambda i, t=template: OWN + t.format(**i), params or (lambda _i: {}),
        scope_in_path, scopeless)


TARGET = {"ip_list": [{"ip": A, "bk_cloud_id": 0}]}
MINE = "127.0.0.3"
MY_TARGET = {"ip_list": [{"ip": MINE, "bk_cloud_id": 0}]}

CASES: dict[str, Case] = dict([
    # jobs and their steps
    v3("get_job_instance_status", lambda i: {"job_instance_id": i["job"]}),
    v3("get_job_instance_ip_log", lambda i: {
        "job_instance_id": i["job"], "step_instance_id": i["step"], "ip": A, "bk_cloud_id": 0}),
    v3("batch_get_job_instance_ip_log", lambda i: {
        "job_instance_id": i["job"], "step_instance_id": i["step"], "ip_list": TARGET["ip_list"]}),
    v3("get_job_instance_global_var_value", lambda i: {"job_instance_id": i["job"]}),
    v3("get_step_instance_detail", lambda i: {
        "job_instance_id": i["job"], "step_instance_id": i["step"]}),
    v3("get_step_instance_status", lambda i: {
        "job_instance_id": i["job"], "step_instance_id": i["file_step"]}),
    v3("operate_job_instance", lambda i: {"job_instance_id": i["job"], "operation_code": 1}),
    v3("operate_step_instance", lambda i: {
        "job_instance_id": i["job"], "step_instance_id": i["step"], "operation_code": 2}),
    # plans, crons
    ("v2 get_job_instance_status", Case(
        "GET", lambda _i: JOBV2 + "get_job_instance_status",
        lambda i: {"job_instance_id": i["job"]})),
    ("v2 get_job_instance_log", Case(
        "GET", lambda _i: JOBV2 + "get_job_instance_log",
        lambda i: {"job_instance_id": i["job"]})),
    v3("get_job_plan_detail", lambda i: {"job_plan_id": i["plan"]}),
    v3("execute_job_plan", lambda i: {"job_plan_id": i["plan"]}),
    v3("get_cron_detail", lambda i: {"id": i["cron"]}),
    v3("update_cron_status", lambda i: {"id": i["cron"], "status": 1}),
    v3("delete_cron", lambda i: {"id": i["cron"]}),
    v3("save_cron", lambda i: {"id": i["cron"], "job_plan_id": i["plan"],
                               "name": "mine", "expression": "0 0 1 1 *"}),
    # scripts
    v3("get_script_version_list", lambda i: {"script_id": i["script"]}),
    v3("get_script_version_detail", lambda i: {"id": i["version"]}),
    v3("create_script_version", lambda i: {"script_id": i["script"], "version": "2",
                                           "content": b64("echo mine")}),
    v3("update_script_basic", lambda i: {"script_id": i["script"], "name": "mine"}),
    v3("update_script_version", lambda i: {"script_id": i["script"],
                                           "script_version_id": i["version"],
                                           "content": b64("echo mine")}),
    v3("delete_script", lambda i: {"script_id": i["script"]}),
    v3("delete_script_version", lambda i: {"script_id": i["script"],
                                           "script_version_id": i["version"]}),
    v3("publish_script_version", lambda i: {"script_id": i["script"],
                                            "script_version_id": i["version"]}),
    v3("disable_script_version", lambda i: {"script_id": i["script"],
                                            "script_version_id": i["version"]}),
    v3("fast_execute_script", lambda i: {"script_version_id": i["version"],
                                         "account_alias": "root", "target_server": TARGET}),
    # accounts, credentials, file sources
    v3("update_account", lambda i: {"id": i["account"], "alias": "mine"}),
    v3("delete_account", lambda i: {"id": i["account"]}),
    v3("get_credential_detail", lambda i: {"id": i["credential"]}),
    v3("update_credential", lambda i: {"id": i["credential"], "name": "mine",
                                       "type": "PASSWORD", "credential_password": "x"}),
    v3("get_file_source_detail", lambda i: {"code": i["source_code"]}),
    v3("update_file_source", lambda i: {"id": i["source"], "code": i["source_code"],
                                        "alias": "mine", "type": "HTTP",
                                        "access_params": {"base_url": "http://127.0.0.1:9"},
                                        "credential_id": i["credential"]}),
    v3("fast_transfer_file", lambda i: {
        "account_alias": "root", "file_target_path": "/tmp/x", "start_task": False,
        "target_server": TARGET, "file_source_list": [
            {"file_type": 3, "file_list": ["a"], "file_source_id": i["source"]}]}),
    # the project's own API
    own("GET", "/templates/{template}"),
    own("PUT", "/templates/{template}", lambda _i: {"name": "mine", "step_list": [
        {"name": "s", "type": 1, "script_info": {"script_content": "echo mine",
                                                 "script_language": 1, "account": "root",
                                                 "server": TARGET}}]}),
    own("DELETE", "/templates/{template}"),
    own("GET", "/templates/{template}/export"),
    own("GET", "/templates/{template}/plans"),
    own("POST", "/templates/{template}/plans", lambda _i: {"name": "mine"}),
    own("GET", "/plans/{plan}"),
    own("PUT", "/plans/{plan}", lambda _i: {"name": "mine"}),
    own("DELETE", "/plans/{plan}"),
    own("POST", "/plans/{plan}/sync"),
    own("GET", "/crons/{cron}/firings"),
    own("GET", "/jobs/{job}/events", scopeless=True),
    own("GET", "/fetch/{job}"),
    own("GET", "/fetch/{job}/{host_dir}/etc/hostname", scopeless=True),
    own("GET", "/batch_get_job_instance_ip_log", lambda i: {
        "job_instance_id": i["job"], "step_instance_id": i["step"], "ip_list": TARGET["ip_list"]}),
    own("POST", "/batch_get_job_instance_ip_log", lambda i: {
        "job_instance_id": i["job"], "step_instance_id": i["step"], "ip_list": TARGET["ip_list"]}),
    own("GET", "/dynamic-groups/{group}"),
    own("PUT", "/dynamic-groups/{group}", lambda _i: {
        "name": "mine", "filter": [{"field": "ip", "op": "in", "value": [A]}]}),
    own("DELETE", "/dynamic-groups/{group}"),
    own("GET", "/dynamic-groups/{group}/hosts"),
    own("PUT", "/topology/sets/{set}", lambda _i: {"name": "mine"}),
    own("DELETE", "/topology/sets/{set}"),
    own("PUT", "/topology/modules/{module}", lambda _i: {"name": "mine"}),
    own("DELETE", "/topology/modules/{module}"),
    own("POST", "/topology/modules", lambda i: {"set_id": i["set"], "name": "mine"}),
    own("GET", "/files/{file}", scopeless=True),
])

# alice's own object (business 2) beside business 3's: each must be refused as one that
# does not exist, the routes checking that the one belongs to the other
MIXED: dict[str, Case] = dict([
    *[(f"{name} (my job, their step)", Case("POST", lambda _i, n=name: V3 + n, params))
      for name, params in (
          ("get_step_instance_status", lambda i: {
              "job_instance_id": i["my_job"], "step_instance_id": i["step"]}),
          ("get_step_instance_detail", lambda i: {
              "job_instance_id": i["my_job"], "step_instance_id": i["file_step"]}),
          ("get_job_instance_ip_log", lambda i: {
              "job_instance_id": i["my_job"], "step_instance_id": i["step"], "ip": A,
              "bk_cloud_id": 0}),
          ("batch_get_job_instance_ip_log", lambda i: {
              "job_instance_id": i["my_job"], "step_instance_id": i["step"],
              "ip_list": TARGET["ip_list"]}),
          ("operate_step_instance", lambda i: {
              "job_instance_id": i["my_job"], "step_instance_id": i["step"],
              "operation_code": 2}))],
    (f"POST {OWN}/batch_get_job_instance_ip_log (my job, their step)", Case(
        "POST", lambda _i: OWN + "/batch_get_job_instance_ip_log", lambda i: {
            "job_instance_id": i["my_job"], "step_instance_id": i["step"],
            "ip_list": TARGET["ip_list"]})),
    *[(f"{name} (my script, their version)", Case("POST", lambda _i, n=name: V3 + n, params))
      for name, params in (
          ("update_script_version", lambda i: {
              "script_id": i["my_script"], "script_version_id": i["version"],
              "content": b64("echo mine")}),
          ("delete_script_version", lambda i: {
              "script_id": i["my_script"], "script_version_id": i["version"]}),
          ("publish_script_version", lambda i: {
              "script_id": i["my_script"], "script_version_id": i["version"]}),
          ("disable_script_version", lambda i: {
              "script_id": i["my_script"], "script_version_id": i["version"]}))],
    ("save_cron (a new cron of their plan)", Case("POST", lambda _i: V3 + "save_cron",
                                                  lambda i: {
        "job_plan_id": i["plan"], "name": "mine", "expression": "0 0 1 1 *"})),
    ("fast_execute_script (their script)", Case("POST", lambda _i: V3 + "fast_execute_script",
                                                lambda i: {
        "script_id": i["script"], "account_alias": "root", "target_server": MY_TARGET})),
    ("create_file_source (their credential)", Case(
        "POST", lambda _i: V3 + "create_file_source", lambda i: {
            "code": "minesrc", "alias": "mine", "type": "HTTP",
            "access_params": {"base_url": "http://127.0.0.1:9"},
            "credential_id": i["credential"]})),
    ("fast_transfer_file (their source's code)", Case(
        "POST", lambda _i: V3 + "fast_transfer_file", lambda i: {
            "account_alias": "root", "file_target_path": "/tmp/x", "start_task": False,
            "target_server": MY_TARGET, "file_source_list": [
                {"file_type": 3, "file_list": ["a"], "file_source_code": i["source_code"]}]})),
    *[(f"fast_execute_script (their {what})", Case(
        "POST", lambda _i: V3 + "fast_execute_script", lambda i, t=target, a=alias: {
            "script_content": b64("echo mine"), "script_language": 1,
            "account_alias": a(i) if a else "root", "target_server": t(i)}))
      for what, target, alias in (
          ("dynamic group", lambda i: {"dynamic_group_list": [{"id": i["group"]}]}, None),
          ("topology set", lambda i: {"topo_node_list": [{"id": i["set"], "node_type": "set"}]},
           None),
          ("topology module", lambda i: {"topo_node_list": [
              {"id": i["module"], "node_type": "module"}]}, None),
          ("host id", lambda i: {"host_id_list": [i["host"]]}, None),
          ("host by address", lambda _i: TARGET, None),
          ("account", lambda _i: MY_TARGET, lambda _i: "their-deploy"))],
    ("fast_execute_script (their account id)", Case(
        "POST", lambda _i: V3 + "fast_execute_script", lambda i: {
            "script_content": b64("echo mine"), "script_language": 1,
            "account_id": i["account"], "target_server": MY_TARGET})),
    ("fast_transfer_file (their uploaded file)", Case(
        "POST", lambda _i: V3 + "fast_transfer_file", lambda i: {
            "account_alias": "root", "file_target_path": "/tmp/x", "start_task": False,
            "target_server": MY_TARGET,
            "file_source_list": [{"file_type": 2, "file_list": [i["file_path"]]}]})),
    ("fast_execute_sql (their account id)", Case(
        "POST", lambda _i: V3 + "fast_execute_sql", lambda i: {
            "script_content": b64("select 1"), "db_account_id": i["account"],
            "target_server": MY_TARGET})),
    ("push_config_file (their account id)", Case(
        "POST", lambda _i: V3 + "push_config_file", lambda i: {
            "account_id": i["account"], "file_target_path": "/tmp/x",
            "file_list": [{"file_name": "a", "content": b64("x")}],
            "target_server": MY_TARGET})),
    ("fast_transfer_file (their account id as the source's)", Case(
        "POST", lambda _i: V3 + "fast_transfer_file", lambda i: {
            "account_alias": "root", "file_target_path": "/tmp/x", "start_task": False,
            "target_server": MY_TARGET, "file_source_list": [{
                "file_list": ["/etc/hostname"], "account": {"id": i["account"]},
                "server": MY_TARGET}]})),
    ("fast_transfer_file (their account id as the target's)", Case(
        "POST", lambda _i: V3 + "fast_transfer_file", lambda i: {
            "account_id": i["account"], "file_target_path": "/tmp/x", "start_task": False,
            "target_server": MY_TARGET, "file_source_list": [{
                "file_list": ["/etc/hostname"], "account": {"alias": "root"},
                "server": MY_TARGET}]})),
    (f"POST {OWN}/targets/count (their dynamic group)", Case(
        "POST", lambda _i: OWN + "/targets/count", lambda i: {
            "target_server": {"dynamic_group_list": [{"id": i["group"]}]}})),
    (f"POST {OWN}/topology/hosts/move (their host)", Case(
        "POST", lambda _i: OWN + "/topology/hosts/move",
        lambda i: {"bk_host_ids": [i["host"]], "module_ids": []})),
    (f"POST {OWN}/topology/hosts/move (their host, their module)", Case(
        "POST", lambda _i: OWN + "/topology/hosts/move",
        lambda i: {"bk_host_ids": [i["host"]], "module_ids": [i["module"]],
                   "is_increment": True})),
    (f"POST {OWN}/topology/hosts/move (my host, their module)", Case(
        "POST", lambda _i: OWN + "/topology/hosts/move",
        lambda i: {"bk_host_ids": [i["my_host"]], "module_ids": [i["module"]],
                   "is_increment": True})),
    ("save_cron (my cron, their plan)", Case("POST", lambda _i: V3 + "save_cron", lambda i: {
        "id": i["my_cron"], "job_plan_id": i["plan"]})),
    ("update_file_source (my source, their credential)", Case(
        "POST", lambda _i: V3 + "update_file_source", lambda i: {
            "id": i["my_source"], "code": "minesrc2", "alias": "mine", "type": "HTTP",
            "access_params": {"base_url": "http://127.0.0.1:9"},
            "credential_id": i["credential"]})),
    (f"PUT {OWN}/templates/{{id}} (my template, their account)", Case(
        "PUT", lambda i: f"{OWN}/templates/{i['my_template']}", lambda _i: {
            "name": "mine", "step_list": [{"name": "s", "type": 1, "script_info": {
                "script_content": "echo mine", "script_language": 1,
                "account": "their-deploy", "server": MY_TARGET}}]})),
    (f"PUT {OWN}/businesses/2/heal-rules/{{id}} (mine, their plan)", Case(
        "PUT", lambda i: f"{OWN}/businesses/2/heal-rules/{i['my_heal']}",
        lambda i: {"job_plan_id": i["plan"]})),
    (f"GET {OWN}/businesses/2/notify-configs/{{id}}/tests/{{delivery_id}} (mine, theirs)",
     Case("GET", lambda i: f"{OWN}/businesses/2/notify-configs/{i['my_notify']}/tests/"
          f"{i['delivery']}", lambda _i: {})),
    ("heal rule of their plan", Case(
        "POST", lambda _i: OWN + "/businesses/2/heal-rules", lambda i: {
            "name": "mine", "job_plan_id": i["plan"], "secret": "s" * 16,
            "match": {"alertname": ["HighDisk"]}, "host_variable": "target",
            "host_label": "instance", "max_hosts": 1, "cooldown": 0, "host_cooldown": 0})),
])

# calls of alice's own that may succeed, but must find nothing of business 3's
PROBES: dict[str, Case] = {
    "dynamic group preview matching their host": Case(
        "POST", lambda _i: OWN + "/dynamic-groups/preview", lambda _i: {
            "filter": [{"field": "ip", "op": "prefix", "value": "127.0.0"}]}),
    "get_job_instance_ip_log (my job, their host id)": Case(
        "GET", lambda _i: V3 + "get_job_instance_ip_log", lambda i: {
            "job_instance_id": i["my_job"], "step_instance_id": i["my_step"],
            "bk_host_id": i["host"]}),
    "batch_get_job_instance_ip_log (my job, their host id)": Case(
        "POST", lambda _i: V3 + "batch_get_job_instance_ip_log", lambda i: {
            "job_instance_id": i["my_job"], "step_instance_id": i["my_step"],
            "host_id_list": [i["host"]]}),
    "get_job_instance_status (my job, hosts)": Case(
        "GET", lambda _i: V3 + "get_job_instance_status", lambda i: {
            "job_instance_id": i["my_job"], "return_ip_result": "true"}),
}

# routes whose business is in the path: alice names business 2 with business 3's object id
# (case a) or business 3 itself (case b)
IN_PATH: dict[str, Case] = dict([
    own("GET", "/businesses/{biz}/heal-rules/{heal}", scope_in_path=True),
    own("PUT", "/businesses/{biz}/heal-rules/{heal}", lambda _i: {"name": "mine"},
        scope_in_path=True),
    own("DELETE", "/businesses/{biz}/heal-rules/{heal}", scope_in_path=True),
    own("GET", "/businesses/{biz}/notify-configs/{notify}", scope_in_path=True),
    own("PUT", "/businesses/{biz}/notify-configs/{notify}", lambda _i: {"name": "mine"},
        scope_in_path=True),
    own("DELETE", "/businesses/{biz}/notify-configs/{notify}", scope_in_path=True),
    own("POST", "/businesses/{biz}/notify-configs/{notify}/tests", scope_in_path=True),
    own("GET", "/businesses/{biz}/notify-configs/{notify}/tests/{delivery}",
        scope_in_path=True),
])

NO_OBJECT = "names no object of a business: its scope check alone decides, as for any route"
ADMIN = "administration: an administrator only (tests/integration/test_access.py)"
PUBLIC = "public scripts belong to no business"
AGENT = "the agents' own channel: an agent's credentials, not a user's"
GSE = "GSE: hosts by agent id, process tasks by their person (test_scope_isolation.py)"
REASONS: dict[str, str] = {
    **{name: NO_OBJECT for name in (
        "check_script", "create_account", "create_credential", "create_file_source",
        "create_script", "fast_execute_sql", "generate_local_file_upload_url",
        "get_account_list", "get_cron_list", "get_job_instance_list", "get_job_plan_list",
        "get_job_template_list", "get_script_list", "push_config_file")},
    **{name: PUBLIC for name in (
        "create_public_script", "create_public_script_version", "delete_public_script",
        "delete_public_script_version", "disable_public_script_version",
        "get_public_script_list", "get_public_script_version_detail",
        "get_public_script_version_list", "publish_public_script_version",
        "update_public_script_basic", "update_public_script_version")},
    **{name: "dangerous rules are global, set by administrators" for name in (
        "create_dangerous_rule", "delete_dangerous_rule", "disable_dangerous_rule",
        "enable_dangerous_rule", "get_dangerous_rule_list", "update_dangerous_rule")},
    **{f"{m} {OWN}{p}": ADMIN for m, p in (
        ("GET", "/apps"), ("POST", "/apps"), ("DELETE", "/apps/{app_code}"),
        ("DELETE", "/apps/{app_code}/quota"), ("GET", "/apps/{app_code}/quota"),
        ("PUT", "/apps/{app_code}/quota"), ("GET", "/audit"), ("GET", "/business-sets"),
        ("POST", "/business-sets"), ("POST", "/businesses"),
        ("DELETE", "/businesses/{bk_biz_id}/quota"), ("GET", "/businesses/{bk_biz_id}/quota"),
        ("PUT", "/businesses/{bk_biz_id}/quota"), ("POST", "/enroll-tokens"),
        ("GET", "/host-whitelist"), ("POST", "/host-whitelist"),
        ("DELETE", "/host-whitelist/{id}"), ("GET", "/users"), ("POST", "/users"),
        ("POST", "/users/{username}/grants"),
        ("DELETE", "/users/{username}/grants/{scope_type}/{scope_id}"),
        ("POST", "/users/{username}/password"), ("DELETE", "/users/{username}/tokens"),
        ("GET", "/users/{username}/tokens"), ("DELETE", "/users/{username}/tokens/{id}"),
        ("DELETE", "/agents/{agent_id}"), ("POST", "/hosts"))},
    **{f"{m} {OWN}{p}": AGENT for m, p in (
        ("GET", "/agent-bootstrap"), ("POST", "/agents/blobs/bundle"),
        ("PUT", "/agents/blobs/bundle"), ("GET", "/agents/blobs/{blob_id}"),
        ("PUT", "/agents/blobs/{blob_id}"), ("POST", "/agents/enroll"))},
    **{f"{m} {OWN}{p}": NO_OBJECT for m, p in (
        ("GET", "/audit/entries"), ("GET", "/businesses"), ("GET", "/dynamic-groups"),
        ("POST", "/dynamic-groups"), ("POST", "/dynamic-groups/preview"),
        ("POST", "/dangerous-rules/check"), ("POST", "/fetch"), ("POST", "/files"),
        ("GET", "/hosts"), ("POST", "/targets/count"), ("GET", "/templates"),
        ("POST", "/templates"), ("POST", "/templates/import"), ("GET", "/tokens"),
        ("POST", "/tokens"), ("DELETE", "/tokens/{id}"), ("GET", "/topology"),
        ("POST", "/topology/sets"), ("GET", "/whoami"),
        ("GET", "/businesses/{bk_biz_id}/heal-decisions"),
        ("GET", "/businesses/{bk_biz_id}/heal-rules"),
        ("POST", "/businesses/{bk_biz_id}/heal-rules"),
        ("GET", "/businesses/{bk_biz_id}/notify-configs"),
        ("POST", "/businesses/{bk_biz_id}/notify-configs"))},
    f"POST {OWN}/files/upload/{{blob_id}}": "an upload's own one-time id, made for its caller",
    f"PUT {OWN}/files/upload/{{blob_id}}": "an upload's own one-time id, made for its caller",
    f"POST {OWN}/heal/hooks/{{rule_id}}": "an alert hook: its rule's secret, not a user",
    f"POST {OWN}/topology/hosts/move": "hosts by id in the named business's topology",
}


# GSE: hosts are not a business's objects by id, but an agent of business 3 must be to
# alice as one that is not there: each call names it, and what it may not answer
AGENT_ID = f"0:{A}"
HOSTS = {"hosts": [{"ip": A, "bk_cloud_id": 0}], "bk_supplier_id": 0}
PROC = {"meta": {"namespace": "ns", "name": "app"}, "op_type": 2,
        "spec": {"identity": {"setup_path": "/opt/app", "pid_path": "/opt/app/pid"}}}
GSE_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "gse get_agent_status": ("POST", HOSTS),
    "gse get_agent_info": ("POST", HOSTS),
    "gse get_proc_status": ("POST", {**HOSTS, "meta": PROC["meta"]}),
    "gse get_proc_status_v2": ("POST", {"agent_id_list": [AGENT_ID], "meta": PROC["meta"]}),
    "gse operate_proc": ("POST", {**HOSTS, **PROC}),
    "gse operate_proc_v2": ("POST", {"agent_id_list": [AGENT_ID], **PROC}),
    "gse operate_proc_multi": ("POST", {"proc_operate_req": [
        {**PROC, "agent_id_list": [AGENT_ID]}]}),
    "gse proc_run_command": ("POST", {**HOSTS, **PROC}),
    "cluster list_agent_state": ("POST", {"agent_id_list": [AGENT_ID]}),
    "cluster list_agent_info": ("POST", {"agent_id_list": [AGENT_ID]}),
    "cluster dispatch_message": ("POST", {"message_id": "m", "agent_id_list": [AGENT_ID],
                                          "slot_id": 1, "content": MARK}),
    "proc operate_proc_multi": ("POST", {"proc_operate_req": [
        {**PROC, "agent_id_list": [AGENT_ID]}]}),
    "proc get_proc_status_v2": ("POST", {"agent_id_list": [AGENT_ID], "meta": PROC["meta"]}),
}
GSE_REASONS = {
    **{f"gse {n}": "a process task's result: only its own person's (test_scope_isolation.py)"
       for n in ("get_proc_operate_result", "get_proc_operate_result_v2",
                 "proc_get_task_result_by_id")},
    "proc get_proc_operate_result_v2": "a process task's result: only its own person's",
    "gse proc_create_session": "a session holds nothing",
}


def gse_path(name: str) -> str:
    kind, op = name.split(" ")
    return GSE1 + op if kind == "gse" else f"{GSE2}{kind}/{op}"


def operations(running: Running) -> set[str]:
    """Every operation: bk-job v3 and GSE by name, the rest as ``METHOD path``."""
    names: set[str] = set()
    for path, methods in running.server.app.openapi()["paths"].items():
        if path.startswith(ESB):
            names.add(path[len(ESB):])
        elif path.startswith(JOBV2):
            names.add("v2 " + path[len(JOBV2):])
        elif path.startswith(GSE1):
            names.add("gse " + path[len(GSE1):])
        elif path.startswith(GSE2):
            names.add(" ".join(path[len(GSE2):].split("/")))
        elif path.startswith(OWN + "/"):
            names.update(f"{m.upper()} {path}" for m in methods)
    # the console's data routes are not in the schema: the route table has them
    for route in running.server.app.routes:
        path = getattr(route, "path", "")
        if path.startswith("/console/"):
            names.update(f"{m} {path}" for m in getattr(route, "methods", None) or ())
    return names


def leaked(answer: dict[str, Any], codes: set[int], asked: dict[str, Any]) -> str | None:
    if answer.get("result") or answer.get("code") not in codes:
        return f"answered {answer.get('code')} {str(answer)[:300]}"
    # what only business 3 knows: its names, its host's address, its account's alias (an
    # answer may repeat what the request said itself)
    for secret in (MARK, A, "their-deploy"):
        if secret in str(answer) and secret not in str(asked):
            return f"told business 3's {secret!r}: {str(answer)[:300]}"
    return None


async def call(running: Running, case: Case, ids: Ids, scope: int,
               headers: dict[str, str]) -> dict[str, Any]:
    params = case.params(ids)
    http = running.wire.http
    if case.scope_in_path:
        path = case.path({**ids, "biz": scope})
        query: dict[str, Any] = {}
    else:
        path = case.path(ids)
        query = {"bk_biz_id": scope}
    if case.method in ("GET", "DELETE"):
        resp = await http.request(case.method, path, params={**query, **params},
                                  headers=headers)
    elif path.startswith(V3):
        resp = await http.post(path, json={"bk_biz_id": scope, **params}, headers=headers)
    else:
        resp = await http.request(case.method, path, params=query,
                                  json={**query, **params}, headers=headers)
    if resp.status_code >= 500:
        return {"result": False, "code": INTERNAL, "message": resp.text}
    try:
        return dict(resp.json())
    except ValueError:
        return {"result": False, "code": resp.status_code, "message": resp.text[:200]}


async def ok(wire: Wire, method: str, path: str, body: dict[str, Any],
             headers: dict[str, str]) -> dict[str, Any]:
    resp = await wire.http.request(method, path, json=body, headers=headers)
    answer = resp.json()
    assert answer["result"], (path, answer)
    return dict(answer["data"])


async def theirs(running: Running) -> Ids:
    """One of every object kind in business 3, made by the administrator."""
    wire = running.wire
    admin = wire.headers()
    ids: Ids = {"biz": 3}

    made = await ok(wire, "POST", V3 + "create_script", {
        "bk_biz_id": 3, "name": f"{MARK} script", "script_language": 1,
        "content": b64("echo theirs"), "version": "1"}, admin)
    ids["script"], ids["version"] = made["script_id"], made["id"]
    tpl = await ok(wire, "POST", f"{OWN}/templates?bk_biz_id=3", {
        "name": f"{MARK} template",
        "global_var_list": [{"name": "v", "type": 1, "value": MARK, "changeable": 1}],
        "step_list": [{"name": "s", "type": 1, "script_info": {
            "script_content": "echo $v", "script_language": 1, "account": "root",
            "server": TARGET}}]}, admin)
    ids["template"] = tpl["id"]
    plan = await ok(wire, "POST", f"{OWN}/templates/{tpl['id']}/plans?bk_biz_id=3",
                    {"name": f"{MARK} plan"}, admin)
    ids["plan"] = plan["id"]
    cron = await ok(wire, "POST", V3 + "save_cron", {
        "bk_biz_id": 3, "job_plan_id": plan["id"], "name": f"{MARK} cron",
        "expression": "0 0 1 1 *"}, admin)
    ids["cron"] = cron["id"]
    account = await ok(wire, "POST", V3 + "create_account", {
        "bk_biz_id": 3, "account": "deploy", "alias": "their-deploy", "type": 1,
        "category": 1}, admin)
    ids["account"] = account["id"]
    cred = await ok(wire, "POST", V3 + "create_credential", {
        "bk_biz_id": 3, "name": f"{MARK} cred", "type": "PASSWORD",
        "credential_password": MARK}, admin)
    ids["credential"] = cred["id"]
    source = await ok(wire, "POST", V3 + "create_file_source", {
        "bk_biz_id": 3, "code": "theirsrc", "alias": f"{MARK} source", "type": "HTTP",
        "access_params": {"base_url": "http://127.0.0.1:9"}, "credential_id": cred["id"]}, admin)
    ids["source"], ids["source_code"] = source["id"], "theirsrc"
    group = await ok(wire, "POST", f"{OWN}/dynamic-groups", {
        "bk_biz_id": 3, "name": f"{MARK} group",
        "filter": [{"field": "ip", "op": "in", "value": [A]}]}, admin)
    ids["group"] = group["id"]
    tset = await ok(wire, "POST", f"{OWN}/topology/sets",
                    {"bk_biz_id": 3, "name": f"{MARK} set"}, admin)
    ids["set"] = tset["id"]
    module = await ok(wire, "POST", f"{OWN}/topology/modules",
                      {"bk_biz_id": 3, "set_id": tset["id"], "name": f"{MARK} module"}, admin)
    ids["module"] = module["id"]
    heal = await ok(wire, "POST", f"{OWN}/businesses/3/heal-rules", {
        "name": f"{MARK} heal", "job_plan_id": plan["id"], "secret": "s" * 16,
        "match": {"alertname": ["HighDisk"]}, "host_variable": "target",
        "host_label": "instance", "max_hosts": 1, "cooldown": 0, "host_cooldown": 0}, admin)
    ids["heal"] = heal["id"]
    # a finished job of business 3: a script step and a file step
    ran = await ok(wire, "POST", V3 + "fast_execute_script", {
        "bk_biz_id": 3, "script_content": b64(f"echo {MARK}"), "script_language": 1,
        "account_alias": "root", "target_server": TARGET}, admin)
    ids["job"], ids["step"] = ran["job_instance_id"], ran["step_instance_id"]
    sent = await ok(wire, "POST", V3 + "fast_transfer_file", {
        "bk_biz_id": 3, "account_alias": "root", "file_target_path": str(running.data_dir),
        "target_server": TARGET, "file_source_list": [{
            "file_list": ["/etc/hostname"], "account": {"alias": "root"},
            "server": TARGET}]}, admin)
    ids["file_job"], ids["file_step"] = sent["job_instance_id"], sent["step_instance_id"]
    for job in (ids["job"], ids["file_job"]):
        async def done(job: int = job) -> bool:
            status = await wire.v3("get_job_instance_status",
                                   {"bk_biz_id": 3, "job_instance_id": job}, method="GET")
            return bool(status["data"]["finished"])
        await eventually(done)
    ids["host_dir"] = f"0_{A}"
    hosts = await wire.get(f"{OWN}/hosts", {"bk_biz_id": 3})
    [ids["host"]] = [h["bk_host_id"] for h in hosts["data"] if h["ip"] == A]
    notify = await ok(wire, "POST", f"{OWN}/businesses/3/notify-configs", {
        "channel": "webhook", "target": "http://127.0.0.1:9/theirs",
        "secret": "hook-key-0123456789", "statuses": [4]}, admin)
    ids["notify"] = notify["id"]
    tested = await ok(wire, "POST", f"{OWN}/businesses/3/notify-configs/{notify['id']}/tests",
                      {}, admin)
    ids["delivery"] = tested["delivery_id"]
    blob = (await wire.http.post(f"{OWN}/files", params={"name": f"{MARK}.bin", "bk_biz_id": 3},
                                 content=MARK.encode(), headers=wire.headers())).json()
    assert blob["result"], blob
    ids["file"], ids["file_path"] = blob["data"]["file_id"], blob["data"]["path"]
    return ids


async def refused_everywhere(running: Running, known: dict[str, Case], ids: Ids,
                             headers: dict[str, str], who: str) -> list[str]:
    leaks: list[str] = []
    fails_either_way = NOT_EXIST | {PERMISSION, APP_FORBIDDEN}
    for name, case in known.items():
        ways = ((2, fails_either_way, "a"), (3, fails_either_way, "b")) if case.scopeless \
            else ((2, NOT_EXIST, "a"), (3, {PERMISSION, APP_FORBIDDEN}, "b"))
        for scope, codes, label in ways:
            answer = await call(running, case, ids, scope, headers)
            why = leaked(answer, codes, case.params(ids))
            if why:
                leaks.append(f"{who}: {name} ({label}, scope {scope}): {why}")
    return leaks


async def gse_says_nothing_of_theirs(running: Running, headers: dict[str, str],
                                     who: str) -> list[str]:
    leaks: list[str] = []
    for name, (method, body) in GSE_CALLS.items():
        resp = await running.wire.http.request(method, gse_path(name), json=body,
                                               headers=headers)
        text = resp.text
        packed = text.replace(" ", "")
        answer = resp.json()
        if resp.status_code >= 500 or answer.get("code") == INTERNAL:
            leaks.append(f"{who}: {name}: {text[:300]}")
        elif answer.get("result") and (
                '"bk_agent_alive":1' in packed or '"bk_agent_alive":true' in packed
                or "status_code" in text or "version" in text):
            leaks.append(f"{who}: {name}: answered about business 3's agent: {text[:300]}")
        elif answer.get("result") and "task_id" in answer["data"]:
            # the task's result says the agent is not there: nothing was sent to it
            result = await running.wire.get(GSE1 + "get_proc_operate_result_v2",
                                            {"task_id": answer["data"]["task_id"]},
                                            headers=headers)
            if any(r.get("error_code") == 0 for r in result.get("data", {}).values()):
                leaks.append(f"{who}: {name}: operated business 3's agent: {result}")
    return leaks


async def my_objects(running: Running, alice: dict[str, str]) -> Ids:
    """Alice's own objects in business 2, to mix with business 3's."""
    wire = running.wire

    tpl = await ok(wire, "POST", f"{OWN}/templates?bk_biz_id=2", {
        "name": "mine", "step_list": [{"name": "s", "type": 1, "script_info": {
            "script_content": "echo mine", "script_language": 1, "account": "root",
            "server": MY_TARGET}}]}, alice)
    plan = await ok(wire, "POST", f"{OWN}/templates/{tpl['id']}/plans?bk_biz_id=2",
                    {"name": "mine"}, alice)
    cron = await ok(wire, "POST", V3 + "save_cron", {
        "bk_biz_id": 2, "job_plan_id": plan["id"], "name": "mine",
        "expression": "0 0 1 1 *"}, alice)
    cred = await ok(wire, "POST", V3 + "create_credential", {
        "bk_biz_id": 2, "name": "mine", "type": "PASSWORD", "credential_password": "x"}, alice)
    source = await ok(wire, "POST", V3 + "create_file_source", {
        "bk_biz_id": 2, "code": "minesrc2", "alias": "mine", "type": "HTTP",
        "access_params": {"base_url": "http://127.0.0.1:9"}, "credential_id": cred["id"]}, alice)
    heal = await ok(wire, "POST", f"{OWN}/businesses/2/heal-rules", {
        "name": "mine", "job_plan_id": plan["id"], "secret": "s" * 16,
        "match": {"alertname": ["HighDisk"]}, "host_variable": "target",
        "host_label": "instance", "max_hosts": 1, "cooldown": 0, "host_cooldown": 0}, alice)
    notify = await ok(wire, "POST", f"{OWN}/businesses/2/notify-configs", {
        "channel": "webhook", "target": "http://127.0.0.1:9/theirs",
        "secret": "hook-key-0123456789", "statuses": [4]}, alice)
    hosts = await wire.get(f"{OWN}/hosts", {"bk_biz_id": 2}, headers=alice)
    [host] = [h["bk_host_id"] for h in hosts["data"] if h["ip"] == MINE]
    return {"my_template": tpl["id"], "my_plan": plan["id"], "my_cron": cron["id"],
            "my_source": source["id"], "my_heal": heal["id"], "my_host": host,
            "my_notify": notify["id"]}


async def test_every_object_of_another_business_is_refused(
        tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path, database_url, nodelay=True,
                          server={"callback_allow": ["127.0.0.0/8"]}) as running:
        await sweep(running)


async def sweep(running: Running) -> None:
    alice = await two_businesses(running, "alice", "2")
    await running.start_agents([A], biz=3)
    await running.start_agents([MINE], biz=2)
    ids = await theirs(running)
    mine = await running.wire.post(V3 + "fast_execute_script", {
        "bk_biz_id": 2, "script_content": b64("echo mine"), "script_language": 1,
        "account_alias": "root", "target_server": MY_TARGET}, headers=alice)
    assert mine["result"], mine
    ids["my_job"] = mine["data"]["job_instance_id"]
    ids["my_step"] = mine["data"]["step_instance_id"]
    made = await running.wire.post(V3 + "create_script", {
        "bk_biz_id": 2, "name": "mine", "script_language": 1, "content": b64("echo mine"),
        "version": "1"}, headers=alice)
    assert made["result"], made
    ids["my_script"] = made["data"]["script_id"]
    ids.update(await my_objects(running, alice))

    known = {**CASES, **IN_PATH}
    console = {"GET " + r.replace("{job}", "{job_id}").replace("{step}", "{step_id}")
               .replace("/0/", "/{index}/").replace("{host}", "{host_id}") for r in CONSOLE}
    unregistered = sorted(
        operations(running) - set(known) - set(REASONS) - set(GSE_CALLS) - set(GSE_REASONS)
        - console)
    assert not unregistered, f"routes with no case and no reason: {unregistered}"

    # the administrator through an app limited to business 2: the app's limit holds as
    # the user's grants do
    secret = await running.server.identity.create_app("two-only", biz=[2])
    limited = {"X-Bkapi-Authorization": json.dumps(
        {"bk_app_code": "two-only", "bk_app_secret": secret, "bk_username": "admin"})}
    callers = (("alice", alice), ("admin through two-only", limited))
    leaks: list[str] = []
    for who, headers in callers:
        leaks += await refused_everywhere(running, known, ids, headers, who)
        leaks += await gse_says_nothing_of_theirs(running, headers, who)
        await lists_show_nothing_of_theirs(running, headers, leaks)
    for name, case in MIXED.items():
        answer = await call(running, case, ids, 2, alice)
        why = leaked(answer, OUTSIDE, case.params(ids))
        if why:
            leaks.append(f"{name}: {why}")
    for name, case in PROBES.items():
        answer = await call(running, case, ids, 2, alice)
        if answer.get("code") == INTERNAL or MARK in str(answer) or A in str(answer):
            leaks.append(f"{name}: {str(answer)[:300]}")
    await console_shows_nothing_of_theirs(running, ids, leaks)
    await nothing_of_theirs_changed(running, ids, leaks)
    assert not leaks, "\n".join(leaks)


def recent() -> dict[str, int]:
    """An hour either side of now, taken when called: a window fixed at import goes
    stale in a long test run, before the jobs it is to find are made."""
    now = now_ms()
    return {"create_time_start": now - 3_600_000, "create_time_end": now + 3_600_000}


# the console's routes that answer data, not a page: a job's step by ids
CONSOLE = ("/console/jobs/{job}/steps/{step}/output-groups",
           "/console/jobs/{job}/steps/{step}/output-groups/0/ips",
           "/console/jobs/{job}/steps/{step}/ips",
           "/console/jobs/{job}/steps/{step}/hosts/{host}/log")


async def console_shows_nothing_of_theirs(running: Running, ids: Ids,
                                          leaks: list[str]) -> None:
    made = await running.wire.post(f"{OWN}/users/alice/password", {"password": "alice-pass-1"})
    assert made["result"], made
    async with httpx.AsyncClient(base_url=running.url, trust_env=False) as http:
        signed = await http.post("/login", data={"username": "alice",
                                                 "password": "alice-pass-1"})
        assert signed.status_code == 303 and "error" not in signed.headers["location"], signed
        for job in ("job", "my_job"):
            for route in CONSOLE:
                path = route.format(job=ids[job], step=ids["step"], host=ids["host"])
                resp = await http.get(path)
                if resp.status_code != 404 or MARK in resp.text or A in resp.text:
                    leaks.append(f"console {path}: {resp.status_code} {resp.text[:200]}")


def lists() -> list[tuple[str, dict[str, Any]]]:
    return [
        (V3 + "get_job_instance_list", recent()),
        (V3 + "get_script_list", {}), (V3 + "get_job_plan_list", {}),
        (V3 + "get_job_template_list", {}), (V3 + "get_cron_list", {}),
        (V3 + "get_account_list", {}), (V3 + "get_script_version_list", {}),
        (OWN + "/templates", {}), (OWN + "/dynamic-groups", {}), (OWN + "/topology", {}),
        (OWN + "/hosts", {}), (OWN + "/businesses/2/heal-rules", {}),
        (OWN + "/businesses/2/heal-decisions", {}), (OWN + "/businesses/2/notify-configs", {}),
        (OWN + "/audit/entries", {}), (OWN + "/businesses", {}),
    ]


async def lists_show_nothing_of_theirs(running: Running, headers: dict[str, str],
                                       leaks: list[str]) -> None:
    for path, params in lists():
        resp = await running.wire.http.get(path, params={"bk_biz_id": 2, **params},
                                           headers=headers)
        answer = resp.json()
        if MARK in resp.text or A in resp.text:
            leaks.append(f"list {path}: shows business 3's rows: {resp.text[:300]}")
        elif resp.status_code >= 500 or answer.get("code") == INTERNAL:
            leaks.append(f"list {path}: {resp.text[:300]}")


async def nothing_of_theirs_changed(running: Running, ids: Ids, leaks: list[str]) -> None:
    """Read back as the administrator: every object of business 3 as it was made."""
    wire = running.wire

    async def read(path: str, params: dict[str, Any]) -> Any:
        answer = await wire.get(path, {"bk_biz_id": 3, **params})
        assert answer["result"], (path, answer)
        return answer["data"]

    checks = [
        ((await read(V3 + "get_script_version_detail", {"id": ids["version"]}))["content"],
         "echo theirs"),
        ((await read(V3 + "get_job_plan_detail", {"job_plan_id": ids["plan"]}))["name"],
         f"{MARK} plan"),
        ((await read(V3 + "get_cron_detail", {"id": ids["cron"]}))["name"], f"{MARK} cron"),
        ((await read(f"{OWN}/templates/{ids['template']}", {}))["name"], f"{MARK} template"),
        ((await read(V3 + "get_credential_detail", {"id": ids["credential"]}))["name"],
         f"{MARK} cred"),
        ((await read(V3 + "get_file_source_detail", {"code": ids["source_code"]}))["alias"],
         f"{MARK} source"),
        ((await read(f"{OWN}/dynamic-groups/{ids['group']}", {}))["name"], f"{MARK} group"),
        ((await read(f"{OWN}/businesses/3/heal-rules/{ids['heal']}", {}))["name"],
         f"{MARK} heal"),
        ((await read(f"{OWN}/businesses/3/notify-configs/{ids['notify']}", {}))["target"],
         "http://127.0.0.1:9/theirs"),
        ([a["alias"] for a in (await read(V3 + "get_account_list", {}))["data"]
          if a["id"] == ids["account"]], ["their-deploy"]),
        ((await read(V3 + "get_job_instance_list", recent()))["total"], 2),
    ]
    for seen, made in checks:
        if seen != made:
            leaks.append(f"business 3's object changed: {seen!r}, made as {made!r}")
    scripts = await read(V3 + "get_script_list", {})
    if [s["name"] for s in scripts["data"]] != [f"{MARK} script"]:
        leaks.append(f"business 3's scripts changed: {scripts}")
