"""TemplateStore on a real database: stable ids, secrets at rest, references, deletes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import insert, select

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.variables import MASK
from jobfleet.store.accounts import AccountStore
from jobfleet.store.crons import CronStore
from jobfleet.store.database import Database
from jobfleet.store.plans import PlanStore
from jobfleet.store.scripts import ScriptStore
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import file_sources, job_templates
from jobfleet.store.templates import ListFilter, TemplateStore

HOSTS = {"ip_list": [{"bk_cloud_id": 0, "ip": "127.0.0.5"}]}
PASSWORD = "pw-Never-Stored-Plain"
SENSITIVE = "--token=Never-Stored-Plain"


def script_step(name: str, **info: Any) -> dict[str, Any]:
    body = {"script_content": "echo ${greeting}", "script_language": 1, "account": "root",
            "server": HOSTS, **info}
    return {"name": name, "type": 1, "script_info": body}


def variables(password: str = PASSWORD) -> list[dict[str, Any]]:
    return [{"name": "greeting", "type": 1, "value": "hi"},
            {"name": "secret", "type": 4, "value": password}]


async def make(store: TemplateStore, name: str = "deploy", biz: int = 2,
               steps: list[dict[str, Any]] | None = None) -> int:
    return await store.create_template(
        biz, name, "", steps or [script_step("one"), script_step("two")], variables(), "alice")


def code_of(err: pytest.ExceptionInfo[JobError]) -> int:
    return err.value.code


@pytest.fixture
async def store(db: Database, cipher: Cipher) -> TemplateStore:
    await AccountStore(db).create(2, "root")
    return TemplateStore(db, cipher)


async def test_ids_stay_with_their_entries_and_are_never_reused(store: TemplateStore) -> None:
    tid = await make(store)
    row = await store.get_template([2], tid)
    assert [(s["id"], s["name"]) for s in store.steps(row)] == [(1, "one"), (2, "two")]
    assert row.version == 1
    # "one" goes, "two" stays by name, "three" is new: it gets 3, not the freed 1
    steps = [script_step("two"), script_step("three")]
    row = await store.update_template([2], tid, "deploy", "", steps, variables(), "bob")
    assert [(s["id"], s["name"]) for s in store.steps(row)] == [(2, "two"), (3, "three")]
    assert row.version == 2 and row.last_modify_user == "bob"
    # nothing changed: the version stays
    same = [{**s} for s in store.steps(row)]
    row = await store.update_template([2], tid, "deploy", "", same, variables(), "bob")
    assert row.version == 2


async def test_secrets_are_sealed_at_rest_and_masked_values_keep_them(
    store: TemplateStore, db: Database
) -> None:
    steps = [script_step("one", script_param=SENSITIVE, is_param_sensitive=1)]
    tid = await make(store, steps=steps)
    async with db.connect() as conn:
        raw = (await conn.execute(select(job_templates).where(job_templates.c.id == tid))).one()
    assert PASSWORD not in json.dumps(raw.variables) and SENSITIVE not in json.dumps(raw.steps)
    row = await store.get_template([2], tid)
    assert {v.name: v.value for v in store.variables(row)}["secret"] == PASSWORD
    assert store.steps(row)[0]["script_info"]["script_param"] == SENSITIVE
    # sending back what readers see (MASK) keeps the stored secrets
    masked = [script_step("one", script_param=MASK, is_param_sensitive=1)]
    row = await store.update_template([2], tid, "deploy", "", masked, variables(MASK), "bob")
    assert {v.name: v.value for v in store.variables(row)}["secret"] == PASSWORD
    assert store.steps(row)[0]["script_info"]["script_param"] == SENSITIVE


async def test_a_sensitive_parameter_that_looks_sealed_is_sealed_like_any_other(
    store: TemplateStore, db: Database, cipher: Cipher
) -> None:
    # what a caller sends is never taken for the store's own ciphertext: left as it was,
    # "enc:v1:..." was kept in clear and every read of the template then failed
    looks_sealed = "enc:v1:not-a-token"
    replayed = cipher.encrypt("--token=someone-elses")
    steps = [script_step("one", script_param=looks_sealed, is_param_sensitive=1),
             script_step("two", script_param=replayed, is_param_sensitive=1)]
    tid = await make(store, steps=steps)
    async with db.connect() as conn:
        raw = (await conn.execute(select(job_templates).where(job_templates.c.id == tid))).one()
    assert looks_sealed not in json.dumps(raw.steps) and replayed not in json.dumps(raw.steps)
    row = await store.get_template([2], tid)
    assert [s["script_info"]["script_param"] for s in store.steps(row)] == [
        looks_sealed, replayed]


async def test_accounts_and_scripts_are_resolved_in_the_business(
    store: TemplateStore, db: Database
) -> None:
    scripts = ScriptStore(db)
    made = await scripts.create_script(2, name="tool", language=4, description="",
                                       content="print(1)", version="1", version_desc="", user="u")
    sid, vid = str(made["script_id"]), int(str(made["id"]))
    stored = {"script_type": 2, "script_id": sid, "account": "root", "server": HOSTS}
    step = {"name": "s", "type": 1, "script_info": stored}
    with pytest.raises(JobError) as err:
        await make(store, "no-online", steps=[step])
    assert code_of(err) == ErrorCode.SCRIPT_NOT_EXECUTABLE
    assert "has no online version" in str(err.value.message)
    await scripts.publish_version(2, sid, vid, user="u")
    tid = await make(store, "pinned", steps=[step])
    info = store.steps(await store.get_template([2], tid))[0]["script_info"]
    root = await AccountStore(db).find_system([2], account_id=None, alias="root")
    assert root is not None
    assert info["account"] == {"id": root.id, "alias": "root"}
    assert (info["script_version_id"], info["script_language"]) == (vid, 4)
    for bad, code, says in [
        (script_step("s", account="nobody"), ErrorCode.ACCOUNT_NOT_EXIST,
         "Account 'nobody' of step 's' does not exist in business 2"),
        ({"name": "s", "type": 1, "script_info": {**stored, "script_id": "missing"}},
         ErrorCode.SCRIPT_NOT_EXIST, "The script missing of step 's' does not exist in business 2"),
        ({"name": "s", "type": 1, "script_info": {**stored, "script_version_id": 10**9}},
         ErrorCode.SCRIPT_VERSION_NOT_EXIST, f"Script version {10**9} of step 's' does not exist"),
    ]:
        with pytest.raises(JobError) as err:
            await make(store, "bad", steps=[bad])
        assert code_of(err) == code
        assert says in str(err.value.message)
    # another business's account does not resolve
    await AccountStore(store.db).create(3, "other")
    with pytest.raises(JobError) as err:
        await make(store, "bad", steps=[script_step("s", account="other")])
    assert code_of(err) == ErrorCode.ACCOUNT_NOT_EXIST


async def test_names_lists_and_deletes(store: TemplateStore, db: Database, cipher: Cipher) -> None:
    tid = await make(store)
    with pytest.raises(JobError) as err:
        await make(store)
    assert code_of(err) == ErrorCode.CONFLICT
    await make(store, "other-deploy")
    total, rows = await store.list_templates([2], ListFilter(name="OTHER"))
    assert total == 1 and rows[0].name == "other-deploy"
    with pytest.raises(JobError) as err:
        await store.get_template([3], tid)
    assert code_of(err) == ErrorCode.TEMPLATE_NOT_EXIST
    plans = PlanStore(db, cipher)
    pid = await plans.create_plan([2], tid, "p", None, None, "alice")
    with pytest.raises(JobError) as err:
        await store.delete_template([2], tid)
    assert code_of(err) == ErrorCode.CONFLICT and "cascade" in str(err.value.message)
    cron_id = await CronStore(db).create(
        {"bk_biz_id": 2, "scope_type": "biz", "scope_id": "2", "name": "c", "plan_id": pid})
    with pytest.raises(JobError) as err:
        await store.delete_template([2], tid, cascade=True)
    assert f"launched by cron {cron_id}" in str(err.value.message)
    await CronStore(db).delete(cron_id)
    row, deleted = await store.delete_template([2], tid, cascade=True)
    assert row.id == tid and deleted == [pid]
    assert await store.template(tid) is None and await plans.plan(pid) is None


async def test_concurrent_updates_each_count(store: TemplateStore) -> None:
    # each update reads the template it replaces inside its write transaction: read
    # before it (SQLite), two updates both bumped version 1 to 2, and a plan synced
    # between them took the first one's steps for the second's version
    tid = await make(store)

    async def update(n: int) -> None:
        steps = [script_step("one"), script_step(f"step {n}")]
        await store.update_template([2], tid, "deploy", "", steps, variables(), "bob")

    await asyncio.gather(*(update(n) for n in range(8)))
    row = await store.get_template([2], tid)
    assert row.version == 9
    # every new step had an id of its own, and the one kept says so
    assert row.next_step_id == 11 and store.steps(row)[1]["id"] >= 3


async def test_a_file_source_of_another_business_or_none_is_refused_at_save(
        db: Database, store: TemplateStore) -> None:
    # accepted at save, such a step was only refused when its plan was launched
    async with db.begin() as conn:
        ids = {}
        for biz in (2, 3):
            ids[biz] = (await conn.execute(insert(file_sources).values(
                bk_biz_id=biz, code="mirror", alias="mirror", type="HTTP",
                access_params={"base_url": "http://127.0.0.1:9"}, credential_id="x" * 32,
                create_time=1, last_modify_time=1))).inserted_primary_key[0]

    def file_step(source_id: int) -> dict[str, Any]:
        return {"name": "fetch", "type": 2, "file_info": {
            "file_source_list": [{"file_type": 3, "file_list": ["a"],
                                  "file_source_id": source_id}],
            "file_destination": {"path": "/tmp/x", "account": "root", "server": HOSTS}}}

    tid = await make(store, steps=[file_step(ids[2])])
    for bad in (ids[3], ids[3] + 100):
        with pytest.raises(JobError) as err:
            await make(store, name="other", steps=[file_step(bad)])
        assert code_of(err) == ErrorCode.FILE_SOURCE_NOT_EXIST
        assert f"File source {bad} of step 'fetch'" in err.value.message
        with pytest.raises(JobError) as err:
            await store.update_template([2], tid, "deploy", "", [file_step(bad)], variables(),
                                        "alice")
        assert code_of(err) == ErrorCode.FILE_SOURCE_NOT_EXIST
