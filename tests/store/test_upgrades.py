"""Upgrades of a database that holds a fleet's history: from every revision that
shipped, every row of every table reads back after the upgrade as it was written,
and the schema is the one a new database gets. A failed upgrade keeps nothing of
itself; a database newer than the program is refused; nodes that start together
migrate once."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from tests.conftest import BACKENDS

from jobfleet.store import tables
from jobfleet.store.database import MIGRATIONS, Database, SchemaError
from jobfleet.store.revisions import shipped_head


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


# every revision that shipped, oldest first (the newest too: a database at head
# goes through the same start, and is an older one as soon as a migration is added)
REVISIONS = [
    r.revision for r in reversed(list(ScriptDirectory.from_config(_config()).walk_revisions()))
]


def _upgrade_to(revision: str) -> Callable[[Connection], None]:
    def run(conn: Connection) -> None:
        command.upgrade(_config(conn), revision)

    return run


def _admin_dsn() -> str:
    admin = make_url(os.environ["JOBFLEET_TEST_PG_URL"])
    return admin.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_url(name: str) -> str:
    admin = make_url(os.environ["JOBFLEET_TEST_PG_URL"])
    return admin.set(database=name).render_as_string(hide_password=False)


async def _copy_strategy(conn: asyncpg.Connection) -> str:
    # PostgreSQL 15 copies a small database through the WAL by default, ~6 times slower
    version = int(await conn.fetchval("SHOW server_version_num"))
    return " STRATEGY FILE_COPY" if version >= 150000 else ""


@dataclass
class Ladder:
    """A database at each shipped revision on one backend, copied for each test."""

    backend: str
    root: Path
    rungs: dict[str, str]  # revision -> SQLite file or PostgreSQL template database
    head_schema: list[tuple[Any, ...]]  # _schema() of a database migrated from nothing

    @asynccontextmanager
    async def copy(self, revision: str, into: Path) -> AsyncIterator[str]:
        rung = self.rungs[revision]
        if self.backend == "sqlite":
            path = into / "jobfleet.db"
            shutil.copyfile(rung, path)
            yield f"sqlite+aiosqlite:///{path}"
            return
        name = f"jf_up_{secrets.token_hex(5)}"
        conn = await asyncpg.connect(_admin_dsn())
        try:
            strategy = await _copy_strategy(conn)
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{rung}"{strategy}')
            try:
                yield _pg_url(name)
            finally:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def _build_ladder(backend: str, root: Path) -> Ladder:
    rungs: dict[str, str] = {}
    if backend == "sqlite":
        work = root / "work.db"
        for revision in REVISIONS:
            db = Database(f"sqlite+aiosqlite:///{work}")
            async with db.engine.begin() as conn:
                await conn.run_sync(_upgrade_to(revision))
            await db.close()
            sqlite3.connect(work).execute("PRAGMA journal_mode=DELETE").connection.close()
            rung = root / f"{revision}.db"
            shutil.copyfile(work, rung)
            rungs[revision] = str(rung)
        return Ladder(backend, root, rungs, await _migrated_schema(f"sqlite+aiosqlite:///{work}"))
    admin = await asyncpg.connect(_admin_dsn())
    try:
        work = f"jf_ladder_{secrets.token_hex(5)}"
        await admin.execute(f'CREATE DATABASE "{work}"')
        for revision in REVISIONS:
            db = Database(_pg_url(work))
            async with db.engine.begin() as conn:
                await conn.run_sync(_upgrade_to(revision))
            await db.close()
            rung = f"{work}_{len(rungs):02d}"
            strategy = await _copy_strategy(admin)
            await admin.execute(f'CREATE DATABASE "{rung}" TEMPLATE "{work}"{strategy}')
            rungs[revision] = rung
        head_schema = await _migrated_schema(_pg_url(work))
        await admin.execute(f'DROP DATABASE "{work}" WITH (FORCE)')
    finally:
        await admin.close()
    return Ladder(backend, root, rungs, head_schema)


async def _migrated_schema(url: str) -> list[tuple[Any, ...]]:
    db = Database(url)
    try:
        await db.migrate()
        async with db.connect() as conn:
            return await conn.run_sync(_schema)
    finally:
        await db.close()


@pytest.fixture(scope="module", params=BACKENDS)
def ladder(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ladder]:
    built = asyncio.run(_build_ladder(request.param, tmp_path_factory.mktemp("ladder")))
    try:
        yield built
    finally:
        if built.backend == "postgresql":

            async def drop() -> None:
                admin = await asyncpg.connect(_admin_dsn())
                try:
                    for rung in built.rungs.values():
                        await admin.execute(f'DROP DATABASE IF EXISTS "{rung}" WITH (FORCE)')
                finally:
                    await admin.close()

            asyncio.run(drop())


AtRevision = Callable[[str], Awaitable[str]]


@pytest.fixture
async def at_revision(ladder: Ladder, tmp_path: Path) -> AsyncIterator[AtRevision]:
    """A function giving the URL of a new copy of the database at a revision."""
    async with AsyncExitStack() as stack:

        async def open_copy(revision: str) -> str:
            into = tmp_path / secrets.token_hex(4)
            into.mkdir()
            return await stack.enter_async_context(ladder.copy(revision, into))

        yield open_copy


# one row of everything a column can hold, one with every nullable column NULL
BIG_TEXT = ("line ünïcode 名前 ✓ 'quoted' \"double\" \\back\\ \t tab\n" * 1500)[:70_000]
BLOB = bytes(range(256)) * 64


def _value(column: Any, k: int, n: int) -> Any:
    """Column ``column``'s value in row ``k`` (``n`` tells columns apart)."""
    if k == 1 and column.nullable and not column.primary_key:
        return None
    kind = column.type
    unique = 1000 * k + n + 1
    if isinstance(kind, Boolean):
        return k % 2 == 0
    if isinstance(kind, BigInteger):
        return 2**40 + unique
    if isinstance(kind, Integer):
        return 70_000 + unique
    if isinstance(kind, Float):
        return 0.25 + unique
    if isinstance(kind, LargeBinary):
        return BLOB + bytes([k])
    if isinstance(kind, JSON):
        return {"ключ": ["値", unique, None, {"nested": True}], "float": 1.5, "k": k}
    if isinstance(kind, String) and getattr(kind, "length", None):
        return f"{unique}-ü名✓-{column.name}"[: kind.length]
    if isinstance(kind, (String, Text)):
        return f"{unique}:" + (BIG_TEXT if k == 0 else "")
    raise AssertionError(f"no value for {column.table.name}.{column.name}: {kind!r}")


def _fill(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    """Two rows in every table the database has, written with its own columns."""
    old = MetaData()
    old.reflect(conn)
    written: dict[str, list[dict[str, Any]]] = {}
    for table in old.sorted_tables:
        if table.name == "alembic_version":
            continue
        rows = [
            {c.name: _value(c, k, n) for n, c in enumerate(table.columns)} for k in (0, 1)
        ]
        conn.execute(table.insert(), rows)
        written[table.name] = rows
    return written


# Columns a migration drops on purpose: their values are not to be found after it.
DROPPED = {("step_hosts", "log_size")}


def _read_back(conn: Connection, written: dict[str, list[dict[str, Any]]]) -> None:
    """Each written row, read through today's tables, holds what was written."""
    for name, rows in written.items():
        table: Table = tables.metadata.tables[name]
        key = [c.name for c in table.primary_key.columns]
        assert key, name
        for row in rows:
            where = and_(*(table.c[k] == row[k] for k in key))
            found = conn.execute(select(table).where(where)).mappings().all()
            assert len(found) == 1, (name, {k: row[k] for k in key})
            stored = dict(found[0])
            for column, value in row.items():
                if (name, column) in DROPPED:
                    continue
                assert stored[column] == value, (name, column, str(stored[column])[:80])


def _schema(conn: Connection) -> list[tuple[Any, ...]]:
    """Every column, index and constraint of the database as its catalog tells them,
    without names the database makes up: the same for every path to head."""
    if conn.dialect.name == "postgresql":
        rows = conn.exec_driver_sql(
            "SELECT 'column', table_name, column_name, data_type, character_maximum_length,"
            " is_nullable, column_default FROM information_schema.columns"
            " WHERE table_schema = 'public'"
        ).all()
        rows += conn.exec_driver_sql(
            "SELECT 'index', tablename, indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = 'public'"
        ).all()
        rows += conn.exec_driver_sql(
            "SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
            " FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
        ).all()
        return sorted(tuple(str(v) for v in row) for row in rows)
    found: list[tuple[Any, ...]] = []
    names = conn.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).scalars().all()
    for table in names:
        for column in conn.exec_driver_sql(f"PRAGMA table_info('{table}')"):
            found.append(("column", table, *map(str, column[1:])))
        for _, name, unique, origin, partial in conn.exec_driver_sql(
            f"PRAGMA index_list('{table}')"
        ):
            columns = [c[2] for c in conn.exec_driver_sql(f"PRAGMA index_info('{name}')")]
            sql = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
            ).scalar()
            # an index SQLite makes for a UNIQUE or PRIMARY KEY is named by its position
            label = name if origin == "c" else origin
            found.append(("index", table, label, unique, partial, *columns, " ".join(
                str(sql).split())))
    return sorted(found)


def test_every_shipped_revision_is_in_the_ladder() -> None:
    assert REVISIONS[0] == "0001" and REVISIONS[-1] == shipped_head()
    assert len(REVISIONS) >= 17


@pytest.mark.parametrize("revision", REVISIONS)
async def test_rows_of_every_table_survive_the_upgrade(
    revision: str, at_revision: AtRevision, ladder: Ladder
) -> None:
    db = Database(await at_revision(revision))
    try:
        async with db.begin() as conn:
            written = await conn.run_sync(_fill)
        assert len(written) >= 10
        await db.migrate()
        assert await db.revisions() == [shipped_head()]
        async with db.connect() as conn:
            await conn.run_sync(_read_back, written)
            assert await conn.run_sync(_schema) == ladder.head_schema
    finally:
        await db.close()


def _table_names(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_an_upgrade_that_fails_half_way_keeps_nothing(at_revision: AtRevision) -> None:
    """0011 and 0012 run, 0013 cannot (an operator's table has its name): the
    database stays at 0010 as it was, for the old version, and the upgrade runs
    once the obstacle is gone."""
    start = "0010_db_accounts_credentials"
    db = Database(await at_revision(start))
    try:
        async with db.begin() as conn:
            written = await conn.run_sync(_fill)
            await conn.execute(text("CREATE TABLE agent_loads (note VARCHAR(20))"))
        with pytest.raises(Exception) as failed:
            await db.migrate()
        assert await db.revisions() == [start]
        async with db.connect() as conn:
            names = await conn.run_sync(_table_names)
            assert "passwords" not in names and "heal_rules" not in names
            await conn.run_sync(_read_back, {"accounts": written["accounts"]})
        assert isinstance(failed.value, SchemaError), failed.value
        message = str(failed.value)
        assert "agent_loads" in message and f"at revision {start}" in message, message
        assert "nothing of the upgrade was kept" in message and "\n" not in message
        async with db.begin() as conn:
            await conn.execute(text("DROP TABLE agent_loads"))
        await db.migrate()
        assert await db.revisions() == [shipped_head()]
        async with db.connect() as conn:
            await conn.run_sync(_read_back, written)
    finally:
        await db.close()


async def test_a_database_newer_than_the_program_is_refused(at_revision: AtRevision) -> None:
    db = Database(await at_revision(REVISIONS[-1]))
    try:
        async with db.begin() as conn:
            written = await conn.run_sync(_fill)
            await conn.execute(text("UPDATE alembic_version SET version_num = '0099_later'"))
        with pytest.raises(SchemaError) as refused:
            await db.migrate()
        message = str(refused.value)
        assert "0099_later" in message and str(shipped_head()) in message, message
        assert "newer jobfleet" in message
        assert await db.revisions() == ["0099_later"]
        async with db.connect() as conn:
            await conn.run_sync(_read_back, written)
    finally:
        await db.close()


async def test_nodes_starting_together_on_an_older_database_migrate_once(
    at_revision: AtRevision,
) -> None:
    url = await at_revision(REVISIONS[0])
    nodes = [Database(url) for _ in range(3)]
    try:
        async with nodes[0].begin() as conn:
            written = await conn.run_sync(_fill)
        await asyncio.gather(*(node.migrate() for node in nodes))
        for node in nodes:
            assert await node.revisions() == [shipped_head()]
        async with nodes[0].connect() as conn:
            await conn.run_sync(_read_back, written)
    finally:
        for node in nodes:
            await node.close()


# migrates the database named by argv[1]
MIGRATE = """
import asyncio, sys
from jobfleet.store.database import Database

async def main() -> None:
    db = Database(sys.argv[1])
    await db.migrate()
    await db.close()

asyncio.run(main())
"""


async def test_an_upgrade_killed_half_way_keeps_nothing(at_revision: AtRevision) -> None:
    """The process is killed while 0014 waits for the scripts table (0011 to 0013 done
    in its transaction): the database is at 0010 as it was, and the next start
    upgrades it."""
    start = "0010_db_accounts_credentials"
    url = await at_revision(start)
    if not url.startswith("postgresql"):
        pytest.skip("SQLite's upgrade holds the file's write lock from its first statement")
    db = Database(url)
    try:
        async with db.begin() as conn:
            written = await conn.run_sync(_fill)
        async with db.connect() as holder:
            await holder.execute(text("LOCK TABLE scripts IN ACCESS SHARE MODE"))
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", MIGRATE, url)
            try:
                for _ in range(600):
                    # the statistics are a snapshot per transaction, and this one lasts
                    await holder.execute(text("SELECT pg_stat_clear_snapshot()"))
                    waiting = await holder.execute(text(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE 'ALTER TABLE scripts%'"))
                    backend = waiting.scalar()
                    if backend is not None:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the upgrade never reached 0014")
                proc.kill()
            finally:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
            await holder.rollback()
        # the server process notices its client is gone once the lock is granted
        async with db.connect() as conn:
            for _ in range(600):
                alive = await conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": backend})
                if alive.scalar() == 0:
                    break
                await asyncio.sleep(0.05)
        assert await db.revisions() == [start]
        async with db.connect() as conn:
            names = await conn.run_sync(_table_names)
            assert "passwords" not in names and "agent_loads" not in names
        await db.migrate()
        assert await db.revisions() == [shipped_head()]
        async with db.connect() as conn:
            await conn.run_sync(_read_back, written)
    finally:
        await db.close()
