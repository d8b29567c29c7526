"""Database accounts whose values a client's connect line could not carry are refused."""

from __future__ import annotations

import base64
import json

from sqlalchemy import select, update
from tests.integration.harness import Running

from jobfleet.store.tables import accounts

INVALID = 1241010


async def _root(running: Running) -> int:
    listing = await running.wire.v3(
        "get_account_list", {"bk_biz_id": 2, "category": 1}, method="GET"
    )
    return int(listing["data"]["data"][0]["id"])


async def test_control_characters_and_oracle_quotes_are_refused(running: Running) -> None:
    wire = running.wire
    base = {"bk_biz_id": 2, "category": 2, "account": "scott", "db_password": "pw",
            "db_system_account_id": await _root(running), "db_host": "127.0.0.1"}
    for type_ in (9, 10, 11, 12):
        for field, value in (("db_name", "app\nHOST rm -rf /"), ("db_name", "app\r"),
                             ("db_name", "a\x00b"), ("account", "scott\nQUIT")):
            made = await wire.v3("create_account", {**base, "type": type_,
                                                    "alias": f"x{type_}", field: value})
            assert made["code"] == INVALID, (type_, field, made)
            assert not made["result"] and f"[{field}]" in made["message"]
            # (the parameter reader itself refuses a NUL in any string)
            assert "control characters" in made["message"] or "NUL" in made["message"]
    secret = 'pa"ss'
    oracle = await wire.v3("create_account", {**base, "type": 10, "db_password": secret})
    assert oracle["code"] == INVALID and "[db_password]" in oracle["message"]
    assert secret not in json.dumps(oracle)
    db2_newline = await wire.v3("create_account", {**base, "type": 11, "db_password": "a\nb"})
    assert db2_newline["code"] == INVALID and "[db_password]" in db2_newline["message"]
    db2_alias = await wire.v3("create_account", {**base, "type": 11, "db_name": "S USER x"})
    assert db2_alias["code"] == INVALID and "[db_name]" in db2_alias["message"]
    async with running.server.db.connect() as conn:
        names = (await conn.execute(select(accounts.c.account).where(
            accounts.c.category == 2))).scalars().all()
    assert names == []


async def test_hard_passwords_are_kept_and_a_change_is_checked(running: Running) -> None:
    wire = running.wire
    secret = "a'b c;d%s$HOME\\x`y`&z"
    made = await wire.v3("create_account", {
        "bk_biz_id": 2, "category": 2, "type": 10, "account": "scott", "db_password": secret,
        "db_system_account_id": await _root(running), "db_name": "svc.example"})
    assert made["result"], made
    assert secret not in json.dumps(made)
    async with running.server.db.connect() as conn:
        stored = (await conn.execute(select(accounts.c.password).where(
            accounts.c.id == made["data"]["id"]))).scalar_one()
    assert stored.startswith("enc:v1:") and secret not in stored
    change = {"bk_biz_id": 2, "id": made["data"]["id"]}
    bad_name = await wire.v3("update_account", {**change, "db_name": "svc\nEXIT"})
    assert bad_name["code"] == INVALID and "[db_name]" in bad_name["message"]
    bad_password = await wire.v3("update_account", {**change, "db_password": 'x"y'})
    assert bad_password["code"] == INVALID and "[db_password]" in bad_password["message"]
    # to DB2, whose database alias takes no "." : the kept name is checked too
    to_db2 = await wire.v3("update_account", {**change, "type": 11})
    assert to_db2["code"] == INVALID and "[db_name]" in to_db2["message"]
    good = await wire.v3("update_account", {**change, "type": 11, "db_name": "SAMPLE"})
    assert good["result"], good
    assert secret not in json.dumps(good)


async def test_a_row_made_before_the_check_is_refused_at_submit(running: Running) -> None:
    wire = running.wire
    await running.server.inventory.add(2, "127.0.0.40")
    made = await wire.v3("create_account", {
        "bk_biz_id": 2, "category": 2, "type": 9, "account": "app", "db_password": "pw",
        "db_system_account_id": await _root(running), "db_name": "app"})
    assert made["result"], made
    async with running.server.db.begin() as conn:
        await conn.execute(update(accounts).where(accounts.c.id == made["data"]["id"]).values(
            db_name="app\nsystem id"))
    sub = await wire.v3("fast_execute_sql", {
        "bk_biz_id": 2, "db_account_id": made["data"]["id"],
        "script_content": base64.b64encode(b"SELECT 1;").decode(),
        "target_server": {"ip_list": [{"ip": "127.0.0.40", "bk_cloud_id": 0}]}})
    assert sub["code"] == INVALID and "[db_name]" in sub["message"], sub
