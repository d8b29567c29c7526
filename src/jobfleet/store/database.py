"""The database handle: one async engine, SQLite tuning, migrations at start."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, func, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util.concurrency import in_greenlet

from jobfleet.store.outage import disk_refused
from jobfleet.store.revisions import shipped_head

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")
# rows of each index an ANALYZE samples (SQLite's docs: 100 to 1000 suit most uses)
ANALYSIS_LIMIT = 400

log = logging.getLogger(__name__)


class SchemaError(Exception):
    """The database's schema cannot be brought to this program's: it is newer than
    the program, or an upgrade failed (and nothing of it was kept)."""


def now_ms() -> int:
    return int(time.time() * 1000)


async def lock_names(conn: AsyncConnection, kind: str, owner: object) -> None:
    """Serialize name changes of ``kind`` per owner on PostgreSQL, for a name checked
    after the write that takes it.

    SQLite needs no lock: the insert or rename that precedes the name check takes its
    single write lock, so a concurrent writer sees the committed name."""
    if conn.dialect.name == "postgresql":
        key = zlib.crc32(f"jobfleet.{kind}.name:{owner}".encode())
        await conn.execute(select(func.pg_advisory_xact_lock(key)))


def change_stamps(row: Any) -> dict[str, Any]:
    """Who made a stored thing and who changed it last, and when (epoch ms)."""
    return {
        "creator": row.creator,
        "create_time": row.create_time,
        "last_modify_user": row.last_modify_user,
        "last_modify_time": row.last_modify_time,
    }


def new_stamps(user: str, now: int) -> dict[str, Any]:
    """The stamps of a thing made now by ``user``: its creator is its last modifier."""
    return {"creator": user, "create_time": now, "last_modify_user": user, "last_modify_time": now}


def _close_cancelled_sqlite_connections_plainly(engine: AsyncEngine) -> None:
    """A statement cancelled twice (a stop that times out cancels again) must not
    hang the loop. SQLAlchemy's aiosqlite ``terminate`` starts a shielded graceful
    close and, on the second cancellation, also stops the connection's thread; the
    graceful close then waits on a thread that has gone, forever, and so does any
    shutdown that waits for its tasks. A plain close in the cancelled task stops
    the thread exactly once. Outside a task (garbage collection of a connection
    no one closed) ``terminate`` only stops the thread, which is safe.

    The close is preceded by a rollback. A cancelled statement's cursor stays
    referenced (by the cancellation's traceback) until the cyclic collector runs,
    and SQLite closes a connection with a live statement only when that statement
    goes: till then it is a zombie that keeps its write transaction open, so every
    other writer of the file (the lease renewal at a stop) waits its busy timeout.
    The rollback is queued to the connection's thread first, and the close follows
    it even when the wait for the rollback is cancelled. The garbage collector's
    close, which cannot wait for anything, has the same zombie to fear: its rollback
    is queued to that thread ahead of the close ``terminate`` queues there."""
    dialect = engine.dialect
    terminate = dialect.do_terminate

    def do_terminate(dbapi_connection: Any) -> None:
        if not in_greenlet():
            _queue_rollback(dbapi_connection)
            terminate(dbapi_connection)
            return
        try:
            # a connection that cannot roll back is closed all the same
            with suppress(Exception):
                dbapi_connection.rollback()
        finally:
            dialect.do_close(dbapi_connection)

    dialect.do_terminate = do_terminate  # type: ignore[method-assign]


def _queue_rollback(dbapi_connection: Any) -> None:
    """A rollback run by an aiosqlite connection's thread after what it has queued,
    with no one to wait for it (a failure there is the thread's to drop)."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    queue = getattr(driver, "_tx", None)
    sqlite = getattr(driver, "_connection", None)
    if queue is not None and sqlite is not None:
        queue.put_nowait((None, sqlite.rollback))


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'jobfleet.db'}"


class Database:
    """Owns the engine. ``begin()`` is a transaction, ``connect()`` a read."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 60}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            _close_cancelled_sqlite_connections_plainly(self.engine)
        # SQLite: the plain driver and its one thread for ``run_write``, made on first use
        self._plain: Engine | None = None
        self._plain_thread: ThreadPoolExecutor | None = None

    @property
    def file(self) -> Path | None:
        """The SQLite database's file (None on PostgreSQL or in memory): where a full or
        read-only disk is the operator's to see to."""
        if not self.is_sqlite:
            return None
        name = make_url(self.url).database
        return None if name in (None, "", ":memory:") else Path(str(name)).absolute()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def run_write(self, work: Callable[[Connection], T]) -> T:
        """``work`` in one transaction on a plain (synchronous) connection, for writes of
        many statements on a hot path. On SQLite it runs in one thread of its own with
        the plain driver: one hop to that thread for the whole transaction, where the
        async driver makes several for every statement. On PostgreSQL it runs through
        the async driver (SQLAlchemy's ``run_sync``)."""
        if not self.is_sqlite or make_url(self.url).database in (None, "", ":memory:"):
            async with self.engine.begin() as conn:
                return await conn.run_sync(work)
        if self._plain is None or self._plain_thread is None:
            self._plain = create_engine(
                make_url(self.url).set(drivername="sqlite"), connect_args={"timeout": 60}
            )
            event.listen(self._plain, "connect", _sqlite_pragmas)
            self._plain_thread = ThreadPoolExecutor(1, thread_name_prefix="jobfleet-sqlite")
        plain = self._plain

        def run() -> T:
            with plain.begin() as conn:
                return work(conn)

        return await asyncio.get_running_loop().run_in_executor(self._plain_thread, run)

    async def migrate(self) -> None:
        """Upgrade the schema to this program's newest migration, all of it or none:
        a failure leaves the database at the revision it was at, for the old
        version to go on using (SchemaError says what happened)."""
        head = shipped_head()
        before = await self.revisions()
        if head is not None and before == [head]:
            return
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(_upgrade)
        except SchemaError:
            raise
        except Exception as exc:
            at = ", ".join(await self.revisions()) or "none (an empty database)"
            raise SchemaError(
                f"upgrading the database schema to {head or 'head'} failed, and nothing of "
                f"the upgrade was kept (the database is at revision {at}): "
                f"{type(exc).__name__}: {_first_line(exc)}"
            ) from exc

    async def revisions(self) -> list[str]:
        """The migrations the database is at (none: not migrated)."""
        async with self.engine.connect() as conn:
            try:
                rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
            except Exception:
                return []
            return [str(row[0]) for row in rows]

    async def analyze(self) -> None:
        """SQLite's planner statistics, gathered anew. Without them its plans are
        guesses, which can turn into a scan as a table grows. ``analysis_limit`` has
        ANALYZE sample that many rows of each index instead of reading all of them:
        21 ms on a million jobs, against a second. SQLite 3.46+ would have ``PRAGMA
        optimize`` decide when; before 3.46 (3.40 is common) it looks only at the
        tables the connection running it has read, and a pooled connection has read
        few: the sample, taken every hour, is the cheap and certain way on both.
        PostgreSQL's autovacuum analyzes on its own."""
        if not self.is_sqlite:
            return
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
            await conn.exec_driver_sql("ANALYZE")

    async def close(self) -> None:
        await self.engine.dispose()
        if self._plain is not None and self._plain_thread is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._plain_thread, self._plain.dispose
            )
            self._plain_thread.shutdown()
            self._plain = self._plain_thread = None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


def _first_line(exc: BaseException) -> str:
    # a driver's error text goes on with the whole statement and its parameters
    return (str(exc).strip().splitlines() or [""])[0][:500]


def _upgrade(conn: Connection) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    if conn.dialect.name == "postgresql":
        # several nodes may start at once on one database
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(74657)")
    else:
        # The sqlite3 module opens a transaction before DML only: without this, each
        # migration's CREATE and ALTER would be kept at once, and a failure half-way
        # would leave tables the next attempt trips over. IMMEDIATE: a second
        # process starting on the same file waits here, then finds the work done.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    script = ScriptDirectory.from_config(cfg)
    known = {revision.revision for revision in script.walk_revisions()}
    current = MigrationContext.configure(conn).get_current_heads()
    unknown = [revision for revision in current if revision not in known]
    if unknown:
        raise SchemaError(
            f"the database is at revision {', '.join(unknown)}, which this jobfleet does "
            f"not know (its newest is {script.get_current_head()}): a newer jobfleet "
            "has upgraded it. Run that version (or newer), or restore the database "
            "from a backup taken before the upgrade; this one will not use it"
        )
    command.upgrade(cfg, "head")


async def wait_for(db: Database, attempts: int = 30) -> None:
    """Wait until the database answers (a server started beside PostgreSQL); a disk
    that refuses the database's files is not waited for."""
    for i in range(attempts):
        try:
            async with db.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
            return
        except Exception as exc:
            if i == attempts - 1 or disk_refused(exc) is not None:
                raise
            await asyncio.sleep(1)
