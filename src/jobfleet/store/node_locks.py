"""Which node ids a running server holds, told by PostgreSQL itself.

Every server on PostgreSQL holds a session advisory lock keyed by its node id, on a
connection of its own, for as long as it runs: the lock ends with the server (its
connection closes with its process, and PostgreSQL ends the session). Whether a node
id is live is then a try of that lock, for the instant of a transaction.

Nodes that share a database and no Redis have no other way to tell which of them
live: without this, each node's start took the hosts alive under the others for a
dead node's and set them offline (gateway/presence.py). With Redis the bus's
registrations tell it, and the lock is held all the same, so that a node started
without Redis on a cluster's database does not take the cluster's nodes for dead.
SQLite is one node's database: its own node id is the only live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.store.database import Database
from jobfleet.store.outage import OutageLog

log = logging.getLogger(__name__)

# the two-key advisory locks ("jf", node): apart from the one-key locks of migrations
# and name checks (store/database.py)
NAMESPACE = 0x6A66
# how long a start waits for its node id's lock (a session of its previous life that
# PostgreSQL has not ended yet), and how often a held lock is looked at
TAKE_WAIT = 5.0
KEEP_EVERY = 5.0


def node_key(node_id: str) -> int:
    """The lock's second key: a signed 32-bit hash of the node id."""
    value = zlib.crc32(node_id.encode())
    return value - (1 << 32) if value >= 1 << 31 else value


class NodeLocks:
    def __init__(self, db: Database, node_id: str) -> None:
        self.db = db
        self.node_id = node_id
        self._conn: AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy_told = False

    async def hold(self) -> None:
        """Take this node id's lock (waiting a little for a session of this node's
        previous life to end), and keep it while the server runs: a lock lost with
        its connection (the database restarted) is taken again."""
        if self.db.is_sqlite:
            return
        deadline = asyncio.get_running_loop().time() + TAKE_WAIT
        while not await self._take() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def _take(self) -> bool:
        conn = await self.db.engine.connect()
        try:
            # no transaction stays open on this connection for the server's life
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = bool(
                (
                    await conn.execute(
                        select(func.pg_try_advisory_lock(NAMESPACE, node_key(self.node_id)))
                    )
                ).scalar()
            )
        except BaseException:
            await conn.close()
            raise
        if not got:
            await conn.close()
            if not self._busy_told:
                self._busy_told = True
                log.warning(
                    "node_lock_busy node=%s: another session holds this node id on this "
                    "database (another server with this node id, or this one's previous "
                    "life not ended yet); taken once it ends",
                    self.node_id,
                )
            return False
        self._conn = conn
        self._busy_told = False
        return True

    async def _keep(self) -> None:
        outage = OutageLog(log, "node_lock_failed")
        while True:
            await asyncio.sleep(KEEP_EVERY)
            try:
                if self._conn is not None:
                    await self._conn.execute(select(1))
                else:
                    await self._take()
                outage.ok()
            except asyncio.CancelledError:
                raise
            except Exception:
                # its session (and the lock) went with the connection: taken again
                await self._drop()
                outage.failed()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                # closed for good, not back to the pool: the lock ends with its session
                await conn.invalidate()
                await conn.close()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._drop()

    async def live_among(self, nodes: list[str]) -> set[str]:
        """Those of ``nodes`` whose lock a session holds: a server runs under them."""
        wanted = set(nodes)
        live = {self.node_id} & wanted
        others = sorted(wanted - live)
        if self.db.is_sqlite or not others:
            return live
        async with self.db.begin() as conn:
            for node in others:
                # released as this transaction ends
                free = (
                    await conn.execute(
                        select(func.pg_try_advisory_xact_lock(NAMESPACE, node_key(node)))
                    )
                ).scalar()
                if not free:
                    live.add(node)
        return live
