"""A business set's user acts in the set as in a business: what they make under the set
(uploads, accounts) is theirs to use and read there, and no further; the set reaches its
members' hosts, not their own uploads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.harness import Running, Wire, eventually, run_server
from tests.integration.test_cli_and_sdk import cli

V3 = "/api/bk-job/prod/api/v3"
OWN = "/api/jobfleet/v1"
A = "127.0.0.2"
SET = {"bk_scope_type": "biz_set", "bk_scope_id": "9000001"}
OTHER_SET = {"bk_scope_type": "biz_set", "bk_scope_id": "9000002"}
BIZ2 = {"bk_scope_type": "biz", "bk_scope_id": "2"}


async def people(running: Running) -> dict[str, dict[str, str]]:
    """Set 9000001 of businesses 2 and 3, set 9000002 of the same two, and a user holding
    each of them and business 2: their headers by scope id."""
    identity = running.server.identity
    await identity.create_business(3, "three")
    await identity.create_biz_set(9000001, "set one", [2, 3])
    await identity.create_biz_set(9000002, "set two", [2, 3])
    headers = {}
    for user, scope in (("setuser", SET), ("otherset", OTHER_SET), ("bizuser", BIZ2)):
        await identity.ensure_user(user)
        await identity.grant(user, scope["bk_scope_type"], scope["bk_scope_id"])
        headers[scope["bk_scope_id"]] = running.wire.headers(bk_username=user)
    return headers


async def upload(running: Running, scope: dict[str, str], headers: dict[str, str],
                 data: bytes) -> dict[str, Any]:
    answer = (await running.wire.http.post(f"{OWN}/files", params={"name": "a.bin", **scope},
                                           content=data, headers=headers)).json()
    assert answer["result"], answer
    return dict(answer["data"])


def transfer(scope: dict[str, str], path: str, target: str) -> dict[str, Any]:
    return {**scope, "account_alias": "root", "file_target_path": target,
            "file_source_list": [{"file_type": 2, "file_list": [path]}],
            "target_server": {"ip_list": [{"ip": A, "bk_cloud_id": 0}]}}


async def finished(running: Running, scope: dict[str, str], headers: dict[str, str],
                   job_id: int) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        answer = await running.wire.get(f"{V3}/get_job_instance_status", {
            **scope, "job_instance_id": job_id}, headers=headers)
        assert answer["result"], answer
        return answer["data"] if answer["data"]["finished"] else None
    return dict(await eventually(done, 60, 0.1))


async def test_a_set_user_sends_and_reads_their_own_uploads(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents([A])
    who = await people(running)
    mine = who["9000001"]
    made = await upload(running, SET, mine, b"set bytes")
    # through an upload URL as well
    urls = await running.wire.post(f"{V3}/generate_local_file_upload_url", {
        **SET, "file_name_list": ["b.conf"]}, headers=mine)
    assert urls["result"], urls
    put = (await running.wire.http.put(urls["data"]["url_map"]["b.conf"]["upload_url"],
                                       content=b"conf")).json()
    assert put["result"], put
    read = await running.wire.http.get(f"{OWN}/files/{made['file_id']}", headers=mine)
    assert (read.status_code, read.content) == (200, b"set bytes"), read.text
    for path in (made["path"], urls["data"]["url_map"]["b.conf"]["path"]):
        sent = await running.wire.post(f"{V3}/fast_transfer_file",
                                       transfer(SET, path, f"{tmp_path}/out"), headers=mine)
        assert sent["result"], sent
        data = await finished(running, SET, mine, sent["data"]["job_instance_id"])
        assert data["job_instance"]["status"] == 3, data
    assert (tmp_path / "out" / "a.bin").read_bytes() == b"set bytes"
    assert (tmp_path / "out" / "b.conf").read_bytes() == b"conf"


async def test_the_sets_uploads_and_its_members_stay_apart(running: Running) -> None:
    who = await people(running)
    theirs = await upload(running, SET, who["9000001"], b"set bytes")
    members = await upload(running, BIZ2, who["2"], b"business bytes")
    # a member business's user and another set's user reach nothing of the set's
    for scope, headers in ((BIZ2, who["2"]), (OTHER_SET, who["9000002"])):
        read = await running.wire.http.get(f"{OWN}/files/{theirs['file_id']}", headers=headers)
        assert (read.status_code, read.json()["code"]) == (403, 9900403), read.text
        sent = await running.wire.post(f"{V3}/fast_transfer_file",
                                       transfer(scope, theirs["path"], "/tmp/x"),
                                       headers=headers)
        assert sent["code"] == 1241010 and theirs["path"] in sent["message"], sent
    # nor does the set's user reach a member business's own upload
    read = await running.wire.http.get(f"{OWN}/files/{members['file_id']}",
                                       headers=who["9000001"])
    assert (read.status_code, read.json()["code"]) == (403, 9900403), read.text
    sent = await running.wire.post(f"{V3}/fast_transfer_file",
                                   transfer(SET, members["path"], "/tmp/x"),
                                   headers=who["9000001"])
    assert sent["code"] == 1241010 and members["path"] in sent["message"], sent


async def test_the_host_list_takes_a_scope_and_shows_a_sets_members(running: Running) -> None:
    who = await people(running)
    wire = running.wire
    inventory = running.server.inventory
    await inventory.add(2, "127.0.0.9")
    await inventory.add(3, "127.0.0.10")
    await running.server.identity.create_business(4, "four")
    await inventory.add(4, "127.0.0.11")

    async def listed(params: dict[str, Any], headers: dict[str, str]) -> list[str]:
        answer = await wire.get(f"{OWN}/hosts", params, headers=headers)
        assert answer["result"], answer
        return sorted(h["ip"] for h in answer["data"])

    # a set's user sees its members' hosts, named or not
    members = ["127.0.0.10", "127.0.0.9"]
    assert await listed(SET, who["9000001"]) == members
    assert await listed({}, who["9000001"]) == members
    assert await listed({"bk_biz_id": 9000001}, who["9000001"]) == members
    # a scope named and not held is refused, as on every route that names one
    for scope, headers in ((SET, who["2"]), (BIZ2, who["9000001"])):
        refused = await wire.get(f"{OWN}/hosts", scope, headers=headers)
        assert refused["code"] == 9900403 and "no permission" in refused["message"], refused
    assert await listed(BIZ2, who["2"]) == ["127.0.0.9"]
    missing = await wire.get(f"{OWN}/hosts", {"bk_scope_type": "biz_set",
                                              "bk_scope_id": "9000009"})
    assert missing["code"] == 1243051, missing
    assert await listed({"bk_scope_type": "biz", "bk_scope_id": "4"}, wire.headers()) == [
        "127.0.0.11"]


async def test_a_set_user_runs_as_an_account_made_in_the_set(running: Running) -> None:
    await running.start_agents([A])
    who = await people(running)
    mine = who["9000001"]
    made = await running.wire.post(f"{V3}/create_account", {
        **SET, "account": "root", "alias": "ops", "type": 1, "category": 1}, headers=mine)
    assert made["result"], made
    ran = await running.wire.post(f"{V3}/fast_execute_script", {
        **SET, "script_language": 1, "script_content": "ZWNobyBvaw==", "account_alias": "ops",
        "target_server": {"ip_list": [{"ip": A, "bk_cloud_id": 0}]}}, headers=mine)
    assert ran["result"], ran
    data = await finished(running, SET, mine, ran["data"]["job_instance_id"])
    assert data["job_instance"]["status"] == 3, data
    # the set's account is the set's: a member business's user does not run as it
    theirs = await running.wire.post(f"{V3}/fast_execute_script", {
        **BIZ2, "script_language": 1, "script_content": "ZWNobyBvaw==", "account_alias": "ops",
        "target_server": {"ip_list": [{"ip": A, "bk_cloud_id": 0}]}}, headers=who["2"])
    assert theirs["code"] == 1244003, theirs


async def test_a_set_user_sends_from_a_file_source_made_in_the_set(
        tmp_path: Path, database_url: str) -> None:
    # the source's endpoint is on loopback, which only --callback-allow lets it name
    async with run_server(tmp_path, database_url,
                          server={"callback_allow": ["127.0.0.0/8"]}) as running:
        await sends_from_a_set_source(running)


async def sends_from_a_set_source(running: Running) -> None:
    who = await people(running)
    await running.server.inventory.add(2, A)
    mine = who["9000001"]
    cred = await running.wire.post(f"{V3}/create_credential", {
        **SET, "name": "p", "type": "PASSWORD", "credential_password": "x"}, headers=mine)
    assert cred["result"], cred
    made = await running.wire.post(f"{V3}/create_file_source", {
        **SET, "code": "setsrc", "alias": "set source", "type": "HTTP",
        "access_params": {"base_url": "http://127.0.0.1:9"}, "credential_id": cred["data"]["id"]},
        headers=mine)
    assert made["result"], made

    def sent(scope: dict[str, str], named: dict[str, Any]) -> dict[str, Any]:
        return {**scope, "account_alias": "root", "file_target_path": "/tmp/x",
                "start_task": False,
                "file_source_list": [{"file_type": 3, "file_list": ["a"], **named}],
                "target_server": {"ip_list": [{"ip": A, "bk_cloud_id": 0}]}}

    for named in ({"file_source_code": "setsrc"}, {"file_source_id": made["data"]["id"]}):
        ran = await running.wire.post(f"{V3}/fast_transfer_file", sent(SET, named),
                                      headers=mine)
        assert ran["result"], ran
        # the set's source is the set's: a member business's user does not reach it
        theirs = await running.wire.post(f"{V3}/fast_transfer_file", sent(BIZ2, named),
                                         headers=who["2"])
        assert theirs["code"] in (1260001, 1260012), theirs


async def test_gse_queries_answer_a_set_user_for_its_members_hosts(running: Running) -> None:
    await running.start_agents([A])
    who = await people(running)
    identity = running.server.identity
    await identity.create_business(4, "four")
    await identity.create_biz_set(9000004, "set four", [4])
    await identity.ensure_user("fouruser")
    await identity.grant("fouruser", "biz_set", "9000004")
    for headers, alive in ((who["9000001"], 1), (running.wire.headers(bk_username="fouruser"), 0)):
        for prefix, name, key in (("/api/c/compapi/v2/gse", "get_agent_status", f"0:{A}"),):
            answer = await running.wire.post(f"{prefix}/{name}", {
                "hosts": [{"ip": A, "bk_cloud_id": 0}]}, headers=headers)
            assert answer["result"], answer
            assert answer["data"][key]["bk_agent_alive"] == alive, answer
    listed = await running.wire.post("/api/bk-gse/prod/api/v2/cluster/list_agent_state", {
        "agent_id_list": [f"0:{A}"]}, headers=who["9000001"])
    assert listed["result"], listed
    assert [a["status_code"] for a in listed["data"]] == [2], listed


async def test_an_app_of_every_member_reads_a_sets_fetched_files(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents([A])
    await people(running)
    secret = await running.server.identity.create_app("members", users=["setuser"], biz=[2, 3])
    limited = Wire(running.url, "members", secret, "setuser")
    try:
        log = tmp_path / "app.log"
        log.write_text("line\n")
        made = await limited.post(f"{OWN}/fetch", {
            **SET, "account_alias": "root", "file_list": [str(log)],
            "target_server": {"ip_list": [{"ip": A, "bk_cloud_id": 0}]}})
        assert made["result"], made
        job_id = made["data"]["job_instance_id"]
        data = await finished(running, SET, limited.headers(), job_id)
        assert data["job_instance"]["status"] == 3, data
        listing = await limited.get(f"{OWN}/fetch/{job_id}", SET)
        [item] = listing["data"]
        for url in (item["url"], f"{OWN}/files/{item['file_id']}"):
            read = await limited.http.get(url, headers=limited.headers())
            assert (read.status_code, read.content) == (200, b"line\n"), (url, read.text)
        async with limited.http.stream("GET", f"{OWN}/jobs/{job_id}/events",
                                       headers=limited.headers()) as events:
            kind = events.headers.get("content-type", "")
            assert kind.startswith("text/event-stream"), (await events.aread())[:300]
    finally:
        await limited.close()


async def test_an_app_of_every_member_searches_a_sets_audit(running: Running) -> None:
    await people(running)
    secret = await running.server.identity.create_app("members", users=["setuser"], biz=[2, 3])
    limited = Wire(running.url, "members", secret, "setuser")
    try:
        made = await limited.post(f"{V3}/create_account", {
            **SET, "account": "deploy", "alias": "deploy", "type": 1, "category": 1})
        assert made["result"], made
        for params in ({"action": "create_account"}, {**SET, "action": "create_account"}):
            seen = await limited.get(f"{OWN}/audit/entries", params)
            assert seen["result"], seen
            assert [(e["scope_type"], e["scope_id"]) for e in seen["data"]["data"]] == [
                ("biz_set", "9000001")], (params, seen)
    finally:
        await limited.close()


async def test_a_plan_run_in_a_set_sends_only_its_own_businesss_uploads(
        running: Running) -> None:
    who = await people(running)
    await running.server.inventory.add(2, A)
    wire = running.wire
    await running.server.identity.grant("setuser", "biz", "3")
    # an upload of business 3, named in a plan of business 2
    theirs = await upload(running, {"bk_scope_type": "biz", "bk_scope_id": "3"},
                          who["9000001"], b"three's")
    tpl = await wire.post(f"{OWN}/templates?bk_biz_id=2", {
        "name": "send", "step_list": [{"name": "send", "type": 2, "file_info": {
            "file_source_list": [{"file_type": 2, "file_list": [theirs["path"]]}],
            "file_destination": {"path": "/tmp/x", "account": "root",
                                 "server": {"ip_list": [{"ip": A, "bk_cloud_id": 0}]}}}}]})
    assert tpl["result"], tpl
    plan = await wire.post(f"{OWN}/templates/{tpl['data']['id']}/plans?bk_biz_id=2",
                           {"name": "send now"})
    assert plan["result"], plan
    for scope in (BIZ2, SET):
        ran = await wire.post(f"{V3}/execute_job_plan", {
            **scope, "job_plan_id": plan["data"]["id"], "start_task": False})
        assert ran["code"] == 1241010 and theirs["path"] in ran["message"], (scope, ran)


async def test_an_administrator_makes_a_business_set_from_the_cli_and_grants_it(
        running: Running) -> None:
    wire = running.wire
    await running.server.identity.create_business(3, "three")
    await running.server.inventory.add(3, "127.0.0.12")
    code, out = await cli(running, "admin", "biz-set", "create", "9000007", "web",
                          "--biz", "3", "--biz", "2", "--biz", "3")
    assert code == 0 and "created business set 9000007 (web): 2, 3" in out, out
    code, out = await cli(running, "admin", "biz-set", "list", "--json")
    assert code == 0, out
    assert json.loads(out) == [{"bk_biz_set_id": 9000007, "name": "web", "bk_biz_ids": [2, 3]}]
    code, out = await cli(running, "admin", "user", "grant", "carol",
                          "--scope-type", "biz_set", "--scope-id", "9000007")
    assert code == 0, out
    carol = wire.headers(bk_username="carol")
    hosts = await wire.get(f"{OWN}/hosts", {"bk_scope_type": "biz_set",
                                            "bk_scope_id": "9000007"}, headers=carol)
    assert "127.0.0.12" in {h["ip"] for h in hosts["data"]}, hosts

    async def refused(body: dict[str, Any], code: int, said: str) -> None:
        answer = await wire.post(f"{OWN}/business-sets", body)
        assert answer["code"] == code and said in answer["message"], answer

    made = {"bk_biz_set_id": 9000008, "name": "x", "bk_biz_ids": [2]}
    await refused({**made, "bk_biz_set_id": 9000007}, 1249409, "already exists")
    await refused({**made, "bk_biz_set_id": 3}, 1241010, "bk_biz_set_id")
    await refused({**made, "bk_biz_ids": []}, 1241010, "at least one business")
    await refused({**made, "bk_biz_ids": [2, 77]}, 1243049, "77 does not exist")
    await refused({**made, "bk_biz_ids": [True]}, 1241010, "not a business id")
    await refused({**made, "bk_biz_ids": "2"}, 1241010, "bk_biz_ids")
    # a bare bk_biz_id in the sets' range names a set, so no business takes one
    business = await wire.post(f"{OWN}/businesses", {"bk_biz_id": 9000009, "name": "no"})
    assert business["code"] == 1241010 and "business set ids" in business["message"], business
    # only administrators make sets
    answer = await wire.post(f"{OWN}/business-sets", made, headers=carol)
    assert answer["code"] == 9900403, answer
    assert (await wire.get(f"{OWN}/business-sets", {}))["data"][0]["bk_biz_set_id"] == 9000007
