"""Targets by business topology, dynamic groups, the host whitelist and IPv6, end to end."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from tests.integration.harness import Running, b64, eventually
from typer.testing import CliRunner

from jobfleet.cli.main import app as cli_app
from jobfleet.domain.errors import JobError
from jobfleet.domain.targets import parse_target
from jobfleet.engine.submit import Scope
from jobfleet.sdk import AsyncJobClient
from jobfleet.store.tables import dynamic_groups, host_modules, hosts, topo_nodes

ADMIN = "/api/jobfleet/v1"
WEB1, WEB2, DB1, BATCH, OTHER = "127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15"
AGENTS = {
    WEB1: {"hostname": "web-1", "labels": {"env": "prod", "role": "web"}},
    WEB2: {"hostname": "web-2", "labels": {"env": "prod", "role": "web"}},
    DB1: {"hostname": "db-1", "labels": {"env": "test", "role": "db"}},
    BATCH: {"hostname": "batch-1"},
}


async def call(running: Running, method: str, path: str, body: dict[str, Any] | None = None,
               *, user: str | None = None) -> dict[str, Any]:
    wire = running.wire
    headers = wire.headers(**({"bk_username": user} if user else {}))
    if method == "GET":
        resp = await wire.http.get(ADMIN + path, params=body, headers=headers)
    else:
        resp = await wire.http.request(method, ADMIN + path, json=body, headers=headers)
    return dict(resp.json())


async def ok(running: Running, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    answer = await call(running, method, path, body)
    assert answer["result"], answer
    return answer.get("data")


async def submit(running: Running, target: dict[str, Any], biz: int = 2) -> dict[str, Any]:
    return await running.wire.v3("fast_execute_script", {
        "bk_scope_type": "biz", "bk_scope_id": str(biz), "script_content": b64(
            'echo "ran on $JOBFLEET_HOST_IP"'), "script_language": 1, "account_alias": "root",
        "target_server": target})


async def ran_on(running: Running, target: dict[str, Any]) -> list[str]:
    """The IPs a script on ``target`` ran on (each host once), after checking each log."""
    answer = await submit(running, target)
    assert answer["result"], answer
    data = answer["data"]
    status = await running.wire.wait(data["job_instance_id"])
    results = status["step_instance_list"][0]["step_ip_result_list"]
    ips = [r["ip"] for r in results]
    assert len(ips) == len(set(ips)), ips
    assert all(r["status"] == 9 for r in results), results
    logs = await running.wire.logs(data["job_instance_id"], data["step_instance_id"], ips)
    assert logs == {ip: f"ran on {ip}\n" for ip in ips}
    return sorted(ips)


async def host_ids(running: Running) -> dict[str, int]:
    return {h.ip: h.bk_host_id for h in await running.server.inventory.list()}


async def wait_for_labels(running: Running, ips: list[str]) -> None:
    async def reported() -> bool:
        found = {h.ip: h for h in await running.server.inventory.list()}
        return all(ip in found and found[ip].labels == AGENTS[ip].get("labels", {})
                   and found[ip].os_name for ip in ips)
    await eventually(reported)


async def test_targets_by_set_module_group_and_combinations(running: Running) -> None:
    await running.start_agents(list(AGENTS), settings_of=AGENTS)
    await wait_for_labels(running, list(AGENTS))
    ids = await host_ids(running)

    web = await ok(running, "POST", "/topology/sets", {"bk_biz_id": 2, "name": "web"})
    data = await ok(running, "POST", "/topology/sets", {"bk_biz_id": 2, "name": "data"})
    assert web["node_type"] == "set" and web["bk_biz_id"] == 2
    nginx = await ok(running, "POST", "/topology/modules",
                     {"bk_biz_id": 2, "set_id": web["id"], "name": "nginx"})
    php = await ok(running, "POST", "/topology/modules",
                   {"bk_biz_id": 2, "set_id": web["id"], "name": "php"})
    mysql = await ok(running, "POST", "/topology/modules",
                     {"bk_biz_id": 2, "set_id": data["id"], "name": "mysql"})
    assert nginx["set_id"] == web["id"] and nginx["node_type"] == "module"
    await ok(running, "POST", "/topology/hosts/move",
             {"bk_biz_id": 2, "bk_host_ids": [ids[WEB1], ids[WEB2]], "module_ids": [nginx["id"]]})
    await ok(running, "POST", "/topology/hosts/move", {
        "bk_biz_id": 2, "bk_host_ids": [ids[WEB2]], "module_ids": [php["id"]],
        "is_increment": True})
    await ok(running, "POST", "/topology/hosts/move",
             {"bk_biz_id": 2, "bk_host_ids": [ids[DB1]], "module_ids": [mysql["id"]]})

    tree = await ok(running, "GET", "/topology", {"bk_biz_id": 2})
    modules = {m["name"]: m["host_ids"] for s in tree["sets"] for m in s["modules"]}
    assert modules == {"nginx": sorted([ids[WEB1], ids[WEB2]]), "php": [ids[WEB2]],
                       "mysql": [ids[DB1]]}
    assert tree["idle_host_ids"] == [ids[BATCH]]
    shown = {h["ip"]: h for h in tree["hosts"]}
    assert shown[WEB1]["hostname"] == "web-1" and shown[WEB1]["labels"]["role"] == "web"

    def node(n: dict[str, Any]) -> dict[str, Any]:
        return {"topo_node_list": [{"id": n["id"], "node_type": n["node_type"]}]}

    # a host in two modules of the set runs once
    assert await ran_on(running, node(web)) == [WEB1, WEB2]
    assert await ran_on(running, node(php)) == [WEB2]
    # moving web-1 to mysql takes it out of nginx
    await ok(running, "POST", "/topology/hosts/move",
             {"bk_biz_id": 2, "bk_host_ids": [ids[WEB1]], "module_ids": [mysql["id"]]})
    assert await ran_on(running, node(web)) == [WEB2]
    assert await ran_on(running, node(data)) == [WEB1, DB1]
    # the whole business
    assert await ran_on(running, {"topo_node_list": [{"id": 2, "node_type": "biz"}]}) == sorted(
        AGENTS)

    prod = await ok(running, "POST", "/dynamic-groups", {
        "bk_biz_id": 2, "name": "prod",
        "filter": [{"field": "labels.env", "op": "equal", "value": "prod"}]})
    dbs = await ok(running, "POST", "/dynamic-groups", {
        "bk_biz_id": 2, "name": "databases", "id": "dbs",
        "filter": [{"field": "hostname", "op": "prefix", "value": "db-"}]})
    assert dbs["id"] == "dbs" and len(prod["id"]) == 32
    assert await ran_on(running, {"dynamic_group_list": [{"id": prod["id"]}]}) == [WEB1, WEB2]
    # bk-job's old "biz:id" form names the same group
    assert await ran_on(running, {"dynamic_group_list": [{"id": "2:dbs"}]}) == [DB1]
    # everything at once, overlapping: each host once
    combined = {
        "host_id_list": [ids[BATCH], ids[WEB2]],
        "ip_list": [{"bk_cloud_id": 0, "ip": WEB2}],
        "topo_node_list": [{"id": php["id"], "node_type": "module"}],
        "dynamic_group_list": [{"id": "dbs"}, {"id": prod["id"]}],
    }
    assert await ran_on(running, combined) == [WEB1, WEB2, DB1, BATCH]

    # a group follows the hosts' labels as they are when the job starts
    await ok(running, "PUT", "/dynamic-groups/dbs", {
        "bk_biz_id": 2, "filter": {"any": [
            [{"field": "labels.role", "op": "equal", "value": "db"}],
            [{"field": "hostname", "op": "equal", "value": "batch-1"}]]}})
    preview = await ok(running, "GET", "/dynamic-groups/dbs/hosts", {"bk_biz_id": 2})
    assert sorted(h["ip"] for h in preview["hosts"]) == [DB1, BATCH] and preview["total"] == 2
    unsaved = await ok(running, "POST", "/dynamic-groups/preview", {
        "bk_biz_id": 2, "filter": [{"field": "labels.role", "op": "exists", "value": False}]})
    assert [h["ip"] for h in unsaved["hosts"]] == [BATCH]
    groups = await ok(running, "GET", "/dynamic-groups", {"bk_biz_id": 2})
    assert [g["name"] for g in groups] == ["databases", "prod"]

    # what cannot be resolved is refused before anything runs
    empty = await ok(running, "POST", "/topology/modules",
                     {"bk_biz_id": 2, "set_id": data["id"], "name": "empty"})
    for target, code in (
        ({"topo_node_list": [{"id": 99999, "node_type": "set"}]}, 1241010),
        ({"topo_node_list": [{"id": mysql["id"], "node_type": "set"}]}, 1241010),
        ({"topo_node_list": [{"id": 1, "node_type": "rack"}]}, 1241010),
        ({"topo_node_list": [{"id": 3, "node_type": "biz"}]}, 1241010),
        ({"dynamic_group_list": [{"id": "nope"}]}, 1211003),
        ({"topo_node_list": [{"id": empty["id"], "node_type": "module"}]}, 1244028),
    ):
        answer = await submit(running, target)
        assert answer["code"] == code, (target, answer)
        assert "Traceback" not in answer["message"]

    # a module or set that holds hosts is not deleted
    refused = await call(running, "DELETE", f"/topology/sets/{data['id']}?bk_biz_id=2")
    assert refused["code"] == 1249409 and "move them out" in refused["message"]
    await ok(running, "DELETE", f"/topology/modules/{empty['id']}?bk_biz_id=2")
    renamed = await ok(running, "PUT", f"/topology/modules/{php['id']}",
                       {"bk_biz_id": 2, "name": "php-fpm"})
    assert renamed["name"] == "php-fpm"
    clash = await call(running, "POST", "/topology/sets", {"bk_biz_id": 2, "name": "web"})
    assert clash["code"] == 1249409
    bad_filter = await call(running, "POST", "/dynamic-groups", {
        "bk_biz_id": 2, "name": "bad", "filter": [{"field": "mac", "op": "equal", "value": 1}]})
    assert bad_filter["code"] == 1241010 and "filter[0].field" in bad_filter["message"]
    await ok(running, "DELETE", "/dynamic-groups/dbs?bk_biz_id=2")
    gone = await call(running, "GET", "/dynamic-groups/dbs", {"bk_biz_id": 2})
    assert gone["code"] == 1211003


async def test_a_set_or_module_name_is_held_under_calls_at_once(running: Running) -> None:
    """Creates and renames that find a set's or a module's name free at once: one takes
    it, the others are refused as a conflict, never a 500 or a second node of the name."""
    answers = await asyncio.gather(*(
        call(running, "POST", "/topology/sets", {"bk_biz_id": 2, "name": "race"})
        for _ in range(12)))
    assert sorted(a["code"] for a in answers) == [0] + [1249409] * 11, answers
    sets = [await ok(running, "POST", "/topology/sets", {"bk_biz_id": 2, "name": f"set {i}"})
            for i in range(8)]
    answers = await asyncio.gather(*(
        call(running, "PUT", f"/topology/sets/{s['id']}", {"bk_biz_id": 2, "name": "renamed"})
        for s in sets))
    assert sorted(a["code"] for a in answers) == [0] + [1249409] * 7, answers
    modules = [await ok(running, "POST", "/topology/modules",
                        {"bk_biz_id": 2, "set_id": sets[0]["id"], "name": f"module {i}"})
               for i in range(8)]
    answers = await asyncio.gather(*(
        call(running, "PUT", f"/topology/modules/{m['id']}", {"bk_biz_id": 2, "name": "mod"})
        for m in modules))
    assert sorted(a["code"] for a in answers) == [0] + [1249409] * 7, answers
    topology = await ok(running, "GET", "/topology", {"bk_biz_id": 2})
    text = str(topology)
    assert (text.count("'race'"), text.count("'renamed'"), text.count("'mod'")) == (1, 1, 1)


async def test_other_business_needs_a_whitelist_entry(running: Running) -> None:
    await ok(running, "POST", "/businesses", {"bk_biz_id": 3, "name": "other"})
    await running.start_agents([OTHER], biz=3)
    await running.start_agents([WEB1])
    ids = await host_ids(running)
    target = {"ip_list": [{"bk_cloud_id": 0, "ip": WEB1}, {"bk_cloud_id": 0, "ip": OTHER}]}
    refused = await submit(running, target)
    assert refused["code"] == 1244002 and OTHER in refused["message"]
    # biz 3's topology is no way in either
    other_set = await ok(running, "POST", "/topology/sets", {"bk_biz_id": 3, "name": "s"})
    through_topo = await submit(running, {"topo_node_list": [
        {"id": other_set["id"], "node_type": "set"}]})
    assert through_topo["code"] == 1241010
    moved = await call(running, "POST", "/topology/hosts/move",
                       {"bk_biz_id": 2, "bk_host_ids": [ids[OTHER]], "module_ids": []})
    assert moved["code"] == 1244002

    entry = await ok(running, "POST", "/host-whitelist", {
        "ip": OTHER, "biz_ids": [2], "action_scopes": ["SCRIPT_EXECUTE"], "remark": "shared"})
    assert entry["bk_host_id"] == ids[OTHER] and entry["host_bk_biz_id"] == 3
    assert await ran_on(running, target) == [WEB1, OTHER]
    # the entry covers script execution only
    scope = Scope("biz", "2", 2, {2})
    spec = parse_target(target)
    hosts_ = await running.server.submitter.resolve_hosts(spec, scope)
    assert sorted(h.ip for h in hosts_) == [WEB1, OTHER]
    with pytest.raises(JobError) as refused_files:
        await running.server.submitter.resolve_hosts(spec, scope, action="FILE_DISTRIBUTION")
    assert refused_files.value.code == 1244002

    # only administrators manage the whitelist
    await running.server.identity.ensure_user("carol")
    await running.server.identity.grant("carol", "biz", "2")
    for method, path in (("GET", "/host-whitelist"), ("DELETE", f"/host-whitelist/{entry['id']}")):
        denied = await call(running, method, path, user="carol")
        assert denied["code"] == 9900403, denied
    topo_denied = await call(running, "GET", "/topology", {"bk_biz_id": 3}, user="carol")
    assert topo_denied["code"] == 9900403
    assert (await call(running, "GET", "/topology", {"bk_biz_id": 2}, user="carol"))["result"]
    listed = await ok(running, "GET", "/host-whitelist")
    assert [e["id"] for e in listed] == [entry["id"]]
    await ok(running, "DELETE", f"/host-whitelist/{entry['id']}")
    assert (await submit(running, target))["code"] == 1244002


async def test_ipv6_targets(running: Running) -> None:
    # an IPv6-only host enrolls with its IPv6 address as ip; dual-stack hosts report ipv6
    # (on loopback: ::1, or a host's own IPv4 address in IPv6 form, which is that address)
    v21, v99 = (str(ipaddress.IPv6Address(f"::ffff:{ip}")) for ip in ("127.0.0.21", "127.0.6.99"))
    agents = {
        "::1": {"hostname": "v6-only"},
        "127.0.0.21": {"ipv6": "0:0:0:0:0:ffff:7f00:15"},
        "127.0.0.22": {"ipv6": "::1"},  # claims an address another host holds as its ip
        # another IPv4 address in IPv6 form: refused, they report none
        "127.0.0.23": {"ipv6": v99},
        "127.0.0.24": {"ipv6": v99},
    }
    await running.start_agents(list(agents), settings_of=agents)

    async def reported() -> bool:
        v6 = {h.ip: h.ipv6 for h in await running.server.inventory.list()}
        return v6 == {"::1": "::1", "127.0.0.21": v21, "127.0.0.22": "::1",
                      "127.0.0.23": "", "127.0.0.24": ""}
    await eventually(reported)

    assert await ran_on(running, {"ip_list": [{"bk_cloud_id": 0, "ip": "::1"}]}) == ["::1"]
    assert await ran_on(running, {"ip_list": [
        {"bk_cloud_id": 0, "ip": "0:0:0:0:0:0:0:1"}, {"bk_cloud_id": 0, "ip": v21}]}) == [
        "127.0.0.21", "::1"]
    # 127.0.6.99, which no host has, whoever claimed it
    claimed = await submit(running, {"ip_list": [{"bk_cloud_id": 0, "ip": v99}]})
    assert claimed["code"] == 1243052, claimed
    unknown = await submit(running, {"ip_list": [{"bk_cloud_id": 0, "ip": "::ffff:127.0.6.123"}]})
    assert unknown["code"] == 1243052
    listed = await ok(running, "GET", "/hosts", {"bk_biz_id": 2})
    v6_only = next(h for h in listed if h["ip"] == "::1")
    assert v6_only["ipv6"] == "::1" and v6_only["hostname"] == "v6-only" and v6_only["os_name"]
    group = await ok(running, "POST", "/dynamic-groups", {
        "bk_biz_id": 2, "name": "v6",
        "filter": [{"field": "ipv6", "op": "prefix", "value": "::ffff:"}]})
    preview = await ok(running, "GET", f"/dynamic-groups/{group['id']}/hosts", {"bk_biz_id": 2})
    assert sorted(h["ip"] for h in preview["hosts"]) == ["127.0.0.21"]
    # the same through the async SDK
    boot = running.boot
    async with AsyncJobClient(running.url, boot["bk_app_code"], boot["bk_app_secret"], "admin",
                              biz=2) as client:
        topo_set = await client.create_set("v6")
        module = await client.create_module(topo_set["id"], "only")
        await client.move_hosts([v6_only["bk_host_id"]], [module["id"]])
        tree = await client.get_topology()
        assert tree["sets"][0]["modules"][0]["host_ids"] == [v6_only["bk_host_id"]]
        matched = await client.preview_dynamic_group(
            [{"field": "ip", "op": "equal", "value": "0::1"}])
        assert [h["ip"] for h in matched["hosts"]] == ["::1"]
        groups = await client.list_dynamic_groups()
        assert [g["id"] for g in groups] == [group["id"]]
    assert await ran_on(running, {"topo_node_list": [
        {"id": module["id"], "node_type": "module"}]}) == ["::1"]


async def test_large_targets_resolve_fast(running: Running) -> None:
    count = 10_000
    now = int(time.time() * 1000)
    db = running.server.db
    async with db.begin() as conn:
        await conn.execute(insert(hosts), [
            {"bk_biz_id": 2, "bk_cloud_id": 0,
             "ip": f"127.{100 + i // 65536}.{i // 256 % 256}.{i % 256}",
             "ipv6": "", "hostname": f"node-{i}", "os_type": "Linux", "os_name": "",
             "agent_version": "", "labels": {"rack": str(i % 10)}, "alive": 0,
             "create_time": now} for i in range(count)])
        topo_set = (await conn.execute(insert(topo_nodes).values(
            bk_biz_id=2, node_type="set", name="big", parent_id=None, create_time=now))
        ).inserted_primary_key[0]
        module = (await conn.execute(insert(topo_nodes).values(
            bk_biz_id=2, node_type="module", name="all", parent_id=topo_set, create_time=now))
        ).inserted_primary_key[0]
        await conn.execute(insert(dynamic_groups).values(
            id="racks", bk_biz_id=2, name="racks", description="", creator="t",
            create_time=now, last_modify_user="t", last_modify_time=now,
            filter=[{"field": "labels.rack", "op": "in", "value": ["1", "2", "3"]}]))
    all_hosts = await running.server.inventory.list(bk_biz_id=2)
    async with db.begin() as conn:
        await conn.execute(insert(host_modules), [
            {"bk_host_id": h.bk_host_id, "module_id": module} for h in all_hosts])
    scope = Scope("biz", "2", 2, {2})
    submitter = running.server.submitter
    for target, expected in (
        ({"host_id_list": [h.bk_host_id for h in all_hosts]}, count),
        ({"ip_list": [{"bk_cloud_id": 0, "ip": h.ip} for h in all_hosts]}, count),
        ({"topo_node_list": [{"id": topo_set, "node_type": "set"}]}, count),
        ({"dynamic_group_list": [{"id": "racks"}]}, count * 3 // 10),
        ({"topo_node_list": [{"id": 2, "node_type": "biz"}],
          "host_id_list": [h.bk_host_id for h in all_hosts]}, count),
    ):
        # CPU time: other tests may share the machine; this measures our own work
        started, wall = time.process_time(), time.monotonic()
        resolved = await submitter.resolve_hosts(parse_target(target), scope)
        elapsed = time.process_time() - started
        assert len(resolved) == expected
        # a guard against a quadratic resolution, not a speed claim (the server's own
        # background work shares the process; 1.9 s seen on a loaded run)
        assert elapsed < 4.0, (list(target), elapsed, time.monotonic() - wall)
    too_many = await submit(running, {"topo_node_list": [{"id": topo_set, "node_type": "set"}]})
    assert too_many["result"] is True  # 10,000 is within bk-job's 50,000
    with pytest.raises(JobError) as over:
        await submitter.resolve_hosts(parse_target({"dynamic_group_list": [{"id": "racks"}]}),
                                      scope, limit=100)
    assert over.value.code == 1244022


def run_cli(running: Running, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli_app, [
        "--server", running.url, "--bootstrap",
        str(running.data_dir / "server" / "bootstrap.json"), *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


async def test_cli_topo_commands(running: Running, tmp_path: Path) -> None:
    await running.start_agents([WEB1, DB1], settings_of=AGENTS)
    await wait_for_labels(running, [WEB1, DB1])
    ids = await host_ids(running)

    async def cli(*args: str) -> tuple[int, str]:
        return await asyncio.to_thread(run_cli, running, *args)

    code, out = await cli("topo", "add-set", "web")
    assert code == 0 and out.startswith("created set "), out
    set_id = int(out.split()[2])
    code, out = await cli("topo", "add-module", str(set_id), "nginx")
    assert code == 0, out
    module_id = int(out.split()[2])
    code, out = await cli("topo", "move", WEB1, str(ids[DB1]), "--module", str(module_id))
    assert code == 0 and "now in module" in out, out
    code, out = await cli("topo", "list")
    assert code == 0, out
    assert "set web" in out and "module nginx" in out and "2 hosts" in out
    assert "web-1" in out and "env=prod" in out and "idle" not in out
    code, out = await cli("topo", "move", DB1)
    assert code == 0 and "idle" in out, out
    code, out = await cli("topo", "list", "--json")
    assert code == 0 and '"idle_host_ids"' in out, out

    code, out = await cli("topo", "group", "add", "prod-web", "-w", "labels.env equal prod",
                          "-w", "hostname prefix web-", "--id", "prodweb")
    assert code == 0 and "created dynamic group prodweb" in out, out
    code, out = await cli("topo", "group", "show", "prodweb")
    assert code == 0 and WEB1 in out and DB1 not in out and "1 matching host" in out, out
    # the same name again names the group that has it, not the id made for the new one
    code, out = await cli("topo", "group", "add", "prod-web", "-w", "labels.env equal prod")
    assert code == 2 and "named 'prod-web' already exists in business 2 (id 'prodweb')" in out, out
    (tmp_path / "f.json").write_text('{"any": [[{"field": "hostname", "op": "equal", '
                                     '"value": "db-1"}], [{"field": "ip", "op": "in", '
                                     f'"value": ["{WEB1}"]}}]]}}')
    code, out = await cli("topo", "group", "preview", "--filter", f"@{tmp_path / 'f.json'}")
    assert code == 0 and WEB1 in out and DB1 in out, out
    code, out = await cli("topo", "group", "list")
    assert code == 0 and "labels.env equal prod and hostname prefix web-" in out, out
    code, out = await cli("topo", "group", "add", "bad", "-w", "hostname")
    assert code == 2 and "FIELD OP VALUE" in out, out

    code, out = await cli("topo", "delete-module", str(module_id))
    assert code == 2 and "1249409" in out and "Traceback" not in out, out
    code, out = await cli("topo", "whitelist", "add", DB1, "--for-biz", "2")
    assert code == 0 and "SCRIPT_EXECUTE, FILE_DISTRIBUTION" in out, out
    code, out = await cli("topo", "whitelist", "list")
    assert code == 0 and DB1 in out, out
    entry = int(out.splitlines()[-1].split()[0])
    code, out = await cli("topo", "whitelist", "delete", str(entry))
    assert code == 0, out
    code, out = await cli("topo", "group", "delete", "prodweb")
    assert code == 0, out

    # the agent's own options are checked before it starts
    agent = ["agent", "--server", running.url, "--state-dir", str(tmp_path / "a"),
             "--ip", "127.0.0.99"]
    for bad, message in ((["--label", "env"], "key=value"), (["--label", "-x=1"], "key=value"),
                         (["--ipv6", "127.0.0.1"], "not an IPv6 address")):
        result = CliRunner().invoke(cli_app, [*agent, *bad])
        assert result.exit_code == 2 and message in result.output, result.output
