"""A database already at the newest migration starts without Alembic; any other is
upgraded by Alembic as before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from jobfleet.store.database import MIGRATIONS, Database
from jobfleet.store.revisions import shipped_head

OLD = "ix_file_logs_step_instance_id_execute_count_bk_host_id"
NEW = "ix_file_logs_step_instance_id_execute_count_bk_host_id_mode_seq"
# what 0018_list_indexes adds
LIST_INDEXES = [
    "ix_job_instances_scope_type_scope_id_status_create_time",
    "ix_job_instances_scope_type_scope_id_operator_create_time",
    "ix_job_instances_scope_type_scope_id_cron_id_create_time",
    "ix_audit_log_scope_type_scope_id_id",
    "ix_outbox_state_next_attempt_at",
    "ix_scripts_bk_biz_id_last_modify_time",
]
# migrates the database named by argv[1], then says whether Alembic was loaded
MIGRATE = """
import asyncio, sys
from jobfleet.store.database import Database

async def main() -> None:
    db = Database(sys.argv[1])
    await db.migrate()
    print(await db.revisions())
    await db.close()

asyncio.run(main())
print("alembic" in sys.modules)
"""


def _migrate_in_a_new_process(url: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", MIGRATE, url], capture_output=True, text=True, timeout=120,
        check=True,
    )
    return done.stdout.split("\n")


def test_the_shipped_head_is_the_one_alembic_finds() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert shipped_head() == ScriptDirectory.from_config(config).get_current_head()
    assert shipped_head() is not None


def test_a_database_at_the_head_is_not_migrated_through_alembic(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobfleet.db'}"
    revisions, loaded, _ = _migrate_in_a_new_process(url)
    # a new database: Alembic built it
    assert revisions == f"['{shipped_head()}']"
    assert loaded == "True"
    revisions, loaded, _ = _migrate_in_a_new_process(url)
    assert revisions == f"['{shipped_head()}']"
    assert loaded == "False"


async def test_a_database_behind_the_head_is_upgraded(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        assert await db.revisions() == []
        await db.migrate()
        assert await db.revisions() == [shipped_head()]
        async with db.begin() as conn:
            # as if the last two migrations had not run: the upgrade runs them
            for index in LIST_INDEXES:
                await conn.execute(text(f"DROP INDEX {index}"))
            await conn.execute(text(f"DROP INDEX {NEW}"))
            columns = "step_instance_id, execute_count, bk_host_id"
            await conn.execute(text(f"CREATE INDEX {OLD} ON file_logs ({columns})"))
            await conn.execute(
                text("UPDATE alembic_version SET version_num = '0016_proc_unknown_agents'")
            )
        await db.migrate()
        assert await db.revisions() == [shipped_head()]
    finally:
        await db.close()
