"""Writes agents coming and going to the inventory in batches.

Thousands of agents reconnect at once after a restart; one transaction per
agent would take seconds, so changes are collected and flushed together.

A host is alive under the node id that holds its agent. A node that dies while
the cluster watches it is taken over (``bus``: ``node_gone``), which resets its
hosts; what no live node will ever take over (a node id an operator renamed, a
single node that started under a new id, a node that died while Redis lost its
record) is reset by each node as it starts (``forget_dead_nodes``): hosts alive
under a node id that is alive neither by the bus's rule nor by its node lock in the
database (``store.node_locks``: nodes that share a database without Redis).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from jobfleet.bus.base import Bus
from jobfleet.store.database import Database, now_ms
from jobfleet.store.inventory import Inventory
from jobfleet.store.node_locks import NodeLocks
from jobfleet.store.outage import OutageLog

log = logging.getLogger(__name__)


class Presence:
    # ``interval`` has no default here: ``EngineSettings.presence_batch`` is its one source
    def __init__(self, db: Database, node_id: str, interval: float) -> None:
        self.db = db
        self.inventory = Inventory(db)
        self.node_id = node_id
        self.interval = interval
        self._online: dict[int, dict[str, Any]] = {}
        self._offline: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sweep: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def forget_dead_nodes(self, bus: Bus, locks: NodeLocks, retry: float = 1.0) -> None:
        """Reset, once, the hosts alive under node ids that are not alive now: neither
        by ``bus.live_among`` (asked again every ``retry`` s while it cannot tell) nor
        by the database's node locks, the one word of nodes that share the database
        and no Redis."""
        self._sweep = asyncio.get_running_loop().create_task(self._forget(bus, locks, retry))

    async def _forget(self, bus: Bus, locks: NodeLocks, retry: float) -> None:
        outage = OutageLog(log, "presence_dead_nodes_failed")
        while True:
            try:
                if await self._forget_once(bus, locks):
                    return
                outage.ok()
            except Exception:
                outage.failed()
            await asyncio.sleep(retry)

    async def _forget_once(self, bus: Bus, locks: NodeLocks) -> bool:
        """True once done; False while the bus cannot tell which nodes live."""
        held = await self.inventory.holding_nodes()
        # this node's own were reset at its start; what it writes since is live
        held.discard(self.node_id)
        if not held:
            return True
        named = sorted(n for n in held if n is not None)
        live = await bus.live_among(named)
        if live is None:
            return False
        dead = held - set(live) - await locks.live_among(named)
        count = await self.inventory.reset_nodes(dead)
        if count:
            log.warning(
                "presence_dead_nodes_reset nodes=%s hosts=%d: hosts left alive under "
                "node ids no live node holds are offline",
                ",".join(sorted(n or "-" for n in dead)),
                count,
            )
        return True

    def online(self, bk_host_id: int, facts: dict[str, Any]) -> None:
        self._offline.discard(bk_host_id)
        self._online[bk_host_id] = facts
        self._wake.set()

    def offline(self, bk_host_id: int) -> None:
        self._online.pop(bk_host_id, None)
        self._offline.add(bk_host_id)
        self._wake.set()

    async def _run(self) -> None:
        outage = OutageLog(log, "presence_flush_failed")
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.interval)
            self._wake.clear()
            try:
                await self.flush()
                outage.ok()
            except Exception:
                outage.failed()

    async def flush(self) -> None:
        online, self._online = self._online, {}
        offline, self._offline = self._offline, set()
        if not online and not offline:
            return
        now = now_ms()
        try:
            await self.inventory.record_presence(self.node_id, online, offline, now)
        except BaseException:
            # put back what failed, unless the host changed state since
            for host, facts in online.items():
                if host not in self._offline:
                    self._online.setdefault(host, facts)
            for host in offline:
                if host not in self._online:
                    self._offline.add(host)
            self._wake.set()
            raise

    async def stop(self) -> None:
        tasks = [task for task in (self._task, self._sweep) if task]
        for task in tasks:
            task.cancel()
        # a flush under way holds its batch until its cancellation puts it back: the
        # last flush must come after that, or it finds nothing and the batch is lost
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.flush()
