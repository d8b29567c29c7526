"""Fixtures for the whole suite: a fresh database per test on every configured backend.

``JOBFLEET_TEST_BACKENDS`` is a comma-separated list of ``sqlite`` and ``postgresql``
(default ``sqlite``); ``postgresql`` needs ``JOBFLEET_TEST_PG_URL``, the SQLAlchemy URL of
a superuser on a server the suite may create and drop databases on. ``make test`` sets
both up.

Most tests want the schema at head and nothing in it: ``database_url`` copies a database
migrated once per test process (a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE``
on PostgreSQL, made ahead and dropped after in the background), which costs a fraction
of running every migration again for each of the suite's many servers. Tests of the
migrations themselves take ``empty_database_url``.

A test marked ``one_backend`` runs on the first configured backend only: the console's
browser flows and the CLI's, which exercise the same API answers and store queries that
the API's and the store's own tests check on every backend, and what an agent does on
its host (the processes a task leaves, paths resolved for an account, its reconnects,
the zipapp agent), and what the server's connections do before a request reaches the
store (the handshake gate, timeouts and caps). What a browser, a terminal or a host
makes of those answers does not depend on the database; hostile input, which may, keeps
both (see test_console_hostile.py and test_console_catalog_input.py).
"""

from __future__ import annotations

import asyncio
import os
import queue
import secrets
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from jobfleet.store.database import MIGRATIONS, Database

KNOWN_BACKENDS = ("sqlite", "postgresql")
BACKENDS = tuple(
    name.strip()
    for name in os.environ.get("JOBFLEET_TEST_BACKENDS", "sqlite").split(",")
    if name.strip()
)


def pytest_configure(config: pytest.Config) -> None:
    # A misconfigured run must fail, not quietly test less than it claims to.
    unknown = set(BACKENDS) - set(KNOWN_BACKENDS)
    if unknown or not BACKENDS:
        raise pytest.UsageError(
            f"JOBFLEET_TEST_BACKENDS={','.join(BACKENDS)!r}: choose from {KNOWN_BACKENDS}"
        )
    if "postgresql" in BACKENDS and not os.environ.get("JOBFLEET_TEST_PG_URL"):
        raise pytest.UsageError("the postgresql backend needs JOBFLEET_TEST_PG_URL")


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # ``one_backend``: see the marker's description in pyproject.toml
    if metafunc.definition.get_closest_marker("one_backend") is None:
        return
    for name in ("database_url", "empty_database_url"):
        if name in metafunc.fixturenames:
            # as a mark, which both parametrize hooks after this one honour
            metafunc.definition.add_marker(
                pytest.mark.parametrize(name, BACKENDS[:1], indirect=True)
            )


# Tests that take 20 s or more each (measured on 2 loaded cores): started first, so that a
# parallel run does not end with one worker still on them while the others have nothing
# left to do. A name that no longer matches only loses its place in the queue.
START_FIRST = (
    "tests/gateway/test_tlslayer_hostile.py::test_nothing_is_kept_per_connection_after_many_cycles",
    "tests/integration/test_agent_zipapp.py::test_the_zipapp_agent_runs_a_job",
    "tests/integration/test_cli_and_sdk.py::test_cli_admin_and_errors",
    "tests/integration/test_cli_and_sdk.py::test_cli_run_status_logs_hosts",
    "tests/integration/test_cli_and_sdk.py::test_cli_shows_hostile_host_text_without_obeying_it",
    "tests/integration/test_cli_and_sdk.py::test_demo_keep_prints_a_command_and_a_login_that_work",
    "tests/integration/test_cli_and_sdk.py::test_demo_runs_end_to_end",
    "tests/integration/test_cli_fleet.py::test_jobs_filters_on_a_real_history",
    "tests/integration/test_cli_fleet.py::test_step_operations_end_to_end",
    "tests/integration/test_cli_fleet.py::test_step_skip_ends_a_termination_an_agent_cannot_answer",
    "tests/integration/test_cli_fleet.py::test_targets_by_group_module_set_and_label",
    "tests/integration/test_cluster_bus.py::test_a_file_uploaded_to_one_node_reaches_agents_of_another",
    "tests/integration/test_cluster_bus.py::test_a_termination_under_way_when_its_node_dies_ends_on_the_node_that_takes_over",
    "tests/integration/test_cluster_bus.py::test_kill_9_of_a_node_mid_job_loses_and_duplicates_nothing",
    "tests/integration/test_cluster_bus.py::test_one_job_reaches_agents_on_every_node",
    "tests/integration/test_cluster_bus.py::test_terminate_through_a_node_that_neither_drives_nor_holds",
    "tests/integration/test_cluster_failures.py::test_a_node_restarted_while_redis_is_down_serves_and_joins_when_it_is_back",
    "tests/integration/test_cluster_failures.py::test_jobs_sent_right_after_redis_comes_back_empty_reach_every_agent",
    "tests/integration/test_cluster_failures.py::test_postgresql_dropping_connections_and_away_for_seconds_loses_no_output",
    "tests/integration/test_console.py::test_terminate_from_the_page",
    "tests/integration/test_console.py::test_two_output_groups",
    "tests/integration/test_console_admin.py::test_hosts_page_topology_groups_and_filters",
    "tests/integration/test_console_admin.py::test_pages_in_chinese_and_for_a_user_without_the_business",
    "tests/integration/test_console_catalog.py::test_a_user_without_the_business_sees_none_of_it",
    "tests/integration/test_console_catalog.py::test_create_a_cron_and_see_it_fire",
    "tests/integration/test_console_catalog_input.py::test_odd_addresses_answer_pages",
    "tests/integration/test_console_hostile.py::test_another_site_cannot_frame_a_page",
    "tests/integration/test_console_hostile.py::test_hostile_names_and_output_are_text",
    "tests/integration/test_console_hostile.py::test_logging_out_ends_the_live_output",
    "tests/integration/test_console_jobs.py::test_approvers_notified_and_shown_on_home",
    "tests/integration/test_console_jobs.py::test_variables_per_step_with_passwords_masked",
    "tests/integration/test_console_operator.py::test_a_retry_from_the_ended_page_is_followed",
    "tests/integration/test_console_operator.py::test_history_pages_keep_the_filter",
    "tests/integration/test_console_operator.py::test_the_open_job_page_shows_how_long_each_step_took",
    "tests/integration/test_console_scale.py::test_ten_thousand_host_job_page",
    "tests/integration/test_cron.py::test_slot_missed_while_down_fires_once_on_start",
    "tests/integration/test_file_durability.py::test_server_sigkill_mid_transfer",
    "tests/integration/test_gse_cluster.py::test_a_dead_nodes_operation_in_flight_is_answered_by_a_live_node",
    "tests/integration/test_heal_cluster.py::test_one_alert_posted_to_two_nodes_at_once_starts_one_job",
    "tests/integration/test_job_control.py::test_stream_follow_jobs_terminate_and_exit_codes",
    "tests/integration/test_openapi_fuzz.py::test_every_operation_answers_the_envelope_under_generated_input",
    "tests/integration/test_peer_files.py::test_a_dead_peer_is_dropped_and_its_pieces_come_from_the_server",
    "tests/integration/test_plans.py::test_decisions_on_a_confirmation_at_once_are_all_kept",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # sort() is stable: the rest keep their order
    items.sort(key=lambda item: not item.nodeid.startswith(START_FIRST))


def pytest_report_header() -> str:
    return f"jobfleet database backends: {', '.join(BACKENDS)}"


def _admin_dsn() -> str:
    admin = make_url(os.environ["JOBFLEET_TEST_PG_URL"])
    # asyncpg takes a plain libpq-style DSN, without SQLAlchemy's driver suffix
    return admin.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_url(name: str) -> str:
    admin = make_url(os.environ["JOBFLEET_TEST_PG_URL"])
    return admin.set(database=name).render_as_string(hide_password=False)


class PostgresqlPool:
    """Copies of the PostgreSQL template made ahead, and used ones dropped, on a thread of
    its own: a copy takes tens of ms of the server's time (hundreds on a loaded machine),
    which a test need not wait for while the one before it runs. The thread has its own
    event loop, since each test's loop ends with the test. The pool owns the template:
    it drops it last, when closed."""

    # enough for the next test, and the one after it while a copy is being made
    AHEAD = 2
    # an order for one more copy; any other order is a used copy's name, to drop
    MAKE = "make"

    def __init__(self, template: str) -> None:
        self.template = template
        self.ready: queue.Queue[str | BaseException] = queue.Queue()
        # one queue, so the thread waits on nothing else and does the work in the order given
        self.orders: queue.Queue[str | None] = queue.Queue()
        for _ in range(self.AHEAD):
            self.orders.put(self.MAKE)
        self.thread = threading.Thread(target=self._run, name="postgresql-pool", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        stopped = PoolStopped("the PostgreSQL database pool has stopped")
        try:
            asyncio.run(self._work())
        except BaseException as exc:  # the tests waiting for a database say why
            stopped.__cause__ = exc
        finally:
            # last in the queue: no test waits for a copy that will never come
            self.ready.put(stopped)

    async def take(self) -> str:
        self.orders.put(self.MAKE)  # one more for a later test (or to try again)
        name = await asyncio.to_thread(self.ready.get)
        if isinstance(name, PoolStopped):
            self.ready.put(name)  # for every test after this one
        if isinstance(name, BaseException):
            raise name
        return name

    def give_back(self, name: str) -> None:
        """Dropped on the pool's thread, while the next test starts."""
        self.orders.put(name)

    def close(self) -> None:
        """Every database the pool made dropped, then the template."""
        self.orders.put(None)
        self.thread.join()

    async def _work(self) -> None:
        conn = await asyncpg.connect(_admin_dsn())
        made: set[str] = set()
        try:
            while (order := await asyncio.to_thread(self.orders.get)) is not None:
                if order != self.MAKE:
                    await _drop_database(conn, order)
                    made.discard(order)
                    continue
                name = f"jf_{secrets.token_hex(6)}"
                try:
                    await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
                except Exception as exc:  # the test that waits for it says why
                    self.ready.put(exc)
                    continue
                made.add(name)
                self.ready.put(name)
        finally:
            try:
                for name in made:
                    await _drop_database(conn, name)
                await _drop_database(conn, self.template)
            finally:
                await conn.close()


class PoolStopped(RuntimeError):
    """The pool's thread has ended: every later ``take`` raises it."""


async def _drop_database(conn: asyncpg.Connection, name: str) -> None:
    # FORCE: a test that leaks a connection must not leak its database too
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _drop_new_database(name: str, db: Database) -> None:
    await db.close()
    conn = await asyncpg.connect(_admin_dsn())
    try:
        await _drop_database(conn, name)
    finally:
        await conn.close()


class Templates:
    """Databases migrated to head once per test process, one per backend, made when a
    test first asks for one (a process runs its tests one at a time)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sqlite: Path | None = None
        self.postgresql: str | None = None
        self.pool: PostgresqlPool | None = None

    async def sqlite_file(self) -> Path:
        if self.sqlite is None:
            path = self.root / "template.db"
            db = Database(f"sqlite+aiosqlite:///{path}")
            try:
                await db.migrate()
            finally:
                await db.close()
            # one self-contained file: the copies must not depend on a -wal beside it
            conn = sqlite3.connect(path)
            try:
                conn.execute("PRAGMA journal_mode=DELETE")
            finally:
                conn.close()
            self.sqlite = path
        return self.sqlite

    async def postgresql_name(self) -> str:
        if self.postgresql is None:
            name = f"jf_template_{secrets.token_hex(6)}"
            conn = await asyncpg.connect(_admin_dsn())
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()
            db = Database(_pg_url(name))
            try:
                await db.migrate()
            except BaseException:
                await _drop_new_database(name, db)  # else each test leaves one behind
                raise
            # the template must have no session left when it is copied
            await db.close()
            self.postgresql = name
        return self.postgresql

    async def postgresql_pool(self) -> PostgresqlPool:
        if self.pool is None:
            self.pool = PostgresqlPool(await self.postgresql_name())
        return self.pool

    def drop(self) -> None:
        if self.pool is not None:
            self.pool.close()  # the template with it, after its copies


@pytest.fixture(scope="session")
def database_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    templates = Templates(tmp_path_factory.mktemp("database-templates"))
    try:
        yield templates
    finally:
        templates.drop()


@asynccontextmanager
async def fresh_database(
    backend: str, tmp_dir: Path, templates: Templates | None = None
) -> AsyncIterator[str]:
    """A database on ``backend`` for as long as the context lasts; yields its URL. Empty,
    or a copy of ``templates``' database at head when given."""
    if backend == "sqlite":
        path = tmp_dir / "jobfleet.db"
        if templates is not None:
            shutil.copyfile(await templates.sqlite_file(), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    if templates is not None:
        pool = await templates.postgresql_pool()
        name = await pool.take()
        try:
            yield _pg_url(name)
        finally:
            pool.give_back(name)
        return
    name = f"jf_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(_admin_dsn())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _pg_url(name)
        finally:
            await _drop_database(conn, name)
    finally:
        await conn.close()


@pytest.fixture(params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, database_templates: Templates
) -> AsyncIterator[str]:
    """SQLAlchemy URL of a database migrated to head with no rows of its own, once per
    configured backend."""
    async with fresh_database(request.param, tmp_path, database_templates) as url:
        yield url


@pytest.fixture(params=BACKENDS)
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """SQLAlchemy URL of an empty database (no tables), once per configured backend."""
    async with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database of the test's backend."""
    database = Database(database_url)
    await database.migrate()
    try:
        yield database
    finally:
        await database.close()


def upgrade_to(revision: str) -> Callable[[Connection], None]:
    """What ``conn.run_sync`` takes to bring a database up to ``revision`` (and no
    further): a database as an older release left it."""
    def run(conn: Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    return run

