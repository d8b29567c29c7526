"""Execution accounts through the bk-job v3 routes."""

from __future__ import annotations

import json

from sqlalchemy import select
from tests.integration.harness import Running

from jobfleet.store.tables import accounts


async def test_account_lifecycle(running: Running) -> None:
    wire = running.wire
    created = await wire.v3("create_account", {
        "bk_scope_type": "biz", "bk_scope_id": "2", "account": "deploy", "alias": "deployer",
        "type": 1, "category": 1, "description": "release user"})
    assert created["result"], created
    account = created["data"]
    assert (account["account"], account["alias"], account["os"]) == ("deploy", "deployer", "Linux")
    assert account["bk_scope_id"] == "2" and "password" not in account
    listing = await wire.v3("get_account_list", {"bk_biz_id": 2, "category": 1, "length": 1},
                            method="GET")
    assert listing["data"]["total"] == 2 and len(listing["data"]["data"]) == 1
    by_alias = await wire.v3("get_account_list", {"bk_biz_id": 2, "alias": "deployer"},
                             method="GET")
    assert [a["id"] for a in by_alias["data"]["data"]] == [account["id"]]
    updated = await wire.v3("update_account", {"bk_biz_id": 2, "id": account["id"],
                                               "alias": "release", "description": "new"})
    assert (updated["data"]["alias"], updated["data"]["description"]) == ("release", "new")
    # the new alias is what fast_execute_script resolves
    await running.server.inventory.add(2, "127.0.0.40")
    run = await wire.v3("fast_execute_script", {
        "bk_biz_id": 2, "script_content": "ZWNobw==", "script_language": 1,
        "account_alias": "release",
        "target_server": {"ip_list": [{"ip": "127.0.0.40", "bk_cloud_id": 0}]}})
    assert run["result"], run
    deleted = await wire.v3("delete_account", {"bk_biz_id": 2, "id": account["id"]})
    assert deleted["data"]["id"] == account["id"]
    again = await wire.v3("delete_account", {"bk_biz_id": 2, "id": account["id"]})
    assert again["code"] == 1244003


async def test_account_rules_and_secret_password(running: Running) -> None:
    wire = running.wire
    base = {"bk_biz_id": 2, "category": 1}
    windows = await wire.v3("create_account", {**base, "account": "Administrator", "type": 2})
    assert windows["code"] == 1241004  # a Windows account needs its password
    bad_type = await wire.v3("create_account", {**base, "account": "x", "type": 9})
    assert bad_type["code"] == 1241010
    db_base = {"bk_biz_id": 2, "category": 2, "account": "dba", "type": 9}
    no_password = await wire.v3("create_account", {**db_base, "db_system_account_id": 1})
    assert no_password["code"] == 1241004
    no_system = await wire.v3("create_account", {**db_base, "db_password": "x"})
    assert no_system["code"] == 1241004
    not_db = await wire.v3("create_account", {**db_base, "type": 1, "db_password": "x",
                                              "db_system_account_id": 1})
    assert not_db["code"] == 1241010
    bad_host = await wire.v3("create_account", {**db_base, "db_password": "x",
                                                "db_system_account_id": 1,
                                                "db_host": "a b;rm"})
    assert bad_host["code"] == 1241010
    bad_category = await wire.v3("create_account", {**db_base, "category": 3})
    assert bad_category["code"] == 1241010
    taken = await wire.v3("create_account", {**base, "account": "root", "type": 1})
    assert taken["code"] == 1241010
    secret = "Pa55-w0rd-that-must-not-leak"
    made = await wire.v3("create_account", {**base, "account": "Admin", "type": 2,
                                            "password": secret})
    assert made["result"] and made["data"]["os"] == "Windows"
    assert secret not in json.dumps(made)
    listing = await wire.v3("get_account_list", {"bk_biz_id": 2}, method="GET")
    assert secret not in json.dumps(listing)
    async with running.server.db.connect() as conn:
        stored = (await conn.execute(select(accounts.c.password).where(
            accounts.c.account == "Admin"))).scalar_one()
    assert stored.startswith("enc:v1:") and secret not in stored
    await running.server.identity.ensure_user("mallory")
    denied = await wire.post("/api/bk-job/prod/api/v3/create_account",
                             {**base, "account": "evil", "type": 1},
                             headers=wire.headers(bk_username="mallory"))
    assert denied["code"] == 9900403
