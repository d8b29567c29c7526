"""Ids that plans and clients keep are never handed out twice, even after a delete.

A plan step names its script version and account by id, and clients keep plan ids; had
SQLite given a deleted row's id to the next row, a plan would run another script, as
another account, and a saved ``execute_job_plan`` another plan, without a word.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert

from jobfleet.store.accounts import AccountStore
from jobfleet.store.database import MIGRATIONS, Database
from jobfleet.store.plans import PlanStore
from jobfleet.store.scripts import ScriptStore
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import accounts, script_versions
from jobfleet.store.templates import TemplateStore

TABLES = ("script_versions", "accounts", "job_templates", "job_plans")
HOSTS = {"ip_list": [{"bk_cloud_id": 0, "ip": "127.0.0.5"}]}


def steps() -> list[dict[str, Any]]:
    return [{"name": "one", "type": 1, "script_info": {
        "script_content": "echo", "script_language": 1, "account": "root", "server": HOSTS}}]


async def test_a_deleted_script_versions_id_goes_to_no_other_version(db: Database) -> None:
    store = ScriptStore(db)
    first = await store.create_script(2, name="a", language=1, description="", content="echo a",
                                      version="1", version_desc="", user="alice")
    await store.delete_script(2, first["script_id"])
    second = await store.create_script(2, name="b", language=1, description="",
                                       content="echo b", version="1", version_desc="",
                                       user="alice")
    assert second["id"] > first["id"]
    extra = await store.create_version(2, second["script_id"], content="echo c", version="2",
                                       version_desc="", user="alice")
    await store.delete_version(2, second["script_id"], extra["id"], user="alice")
    again = await store.create_version(2, second["script_id"], content="echo d", version="3",
                                       version_desc="", user="alice")
    assert again["id"] > extra["id"]


async def test_a_deleted_accounts_id_goes_to_no_other_account(db: Database) -> None:
    store = AccountStore(db)
    low = await store.create(2, "nobody", alias="low")
    await store.delete(2, low)
    assert await store.create(2, "toor", alias="high") > low


async def test_deleted_template_and_plan_ids_go_to_no_others(db: Database, cipher: Cipher) -> None:
    await AccountStore(db).create(2, "root")
    templates, plans = TemplateStore(db, cipher), PlanStore(db, cipher)
    old_template = await templates.create_template(2, "t1", "", steps(), [], "alice")
    old_plan = await plans.create_plan([2], old_template, "p", None, [], "alice")
    await templates.delete_template([2], old_template, cascade=True)
    template = await templates.create_template(2, "t2", "", steps(), [], "alice")
    assert template > old_template
    assert await plans.create_plan([2], template, "p", None, [], "alice") > old_plan


def _schema(conn: Any, table: str) -> tuple[list[Any], list[Any], list[Any]]:
    """A SQLite table's columns, and its indexes with their columns."""
    columns = conn.exec_driver_sql(f"PRAGMA table_info({table})").all()
    indexes = sorted(
        (row[2], row[1].startswith("sqlite_autoindex"),
         [c[2] for c in conn.exec_driver_sql(f"PRAGMA index_info('{row[1]}')")])
        for row in conn.exec_driver_sql(f"PRAGMA index_list({table})")
    )
    rows = conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id").all()
    return [tuple(c) for c in columns], indexes, [tuple(r) for r in rows]


def test_the_migration_keeps_rows_and_indexes_and_counts_on_from_them(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    now = 1_700_000_000_000
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0017_file_log_index")
        for n in (1, 2):
            conn.execute(insert(script_versions).values(
                id=n, script_id="s", version=str(n), content="echo", status=0, version_desc="",
                creator="a", create_time=now, last_modify_user="a", last_modify_time=now))
            conn.execute(insert(accounts).values(
                id=n, bk_biz_id=2, account=f"a{n}", alias=f"a{n}", category=1, type=1,
                os="Linux", description="", creator="a", create_time=now,
                last_modify_user="a", last_modify_time=now))
        before = {t: _schema(conn, t) for t in TABLES}
        command.upgrade(config, "head")
        assert {t: _schema(conn, t) for t in TABLES} == before
        for table in TABLES:
            ddl = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = ?", (table,)).scalar_one()
            assert "AUTOINCREMENT" in ddl, ddl
        conn.exec_driver_sql("DELETE FROM script_versions WHERE id = 2")
        res = conn.execute(insert(script_versions).values(
            script_id="s", version="3", content="echo", status=0, version_desc="",
            creator="a", create_time=now, last_modify_user="a", last_modify_time=now))
        assert res.inserted_primary_key[0] == 3
        command.downgrade(config, "0017_file_log_index")
        assert _schema(conn, "accounts") == before["accounts"]
    engine.dispose()
