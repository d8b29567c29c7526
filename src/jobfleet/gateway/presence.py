"""Writes agents coming and going to the inventory in batches.

Thousands of agents reconnect at once after a restart; one transaction per
agent would take seconds, so changes are collected and flushed together.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from jobfleet.store.database import Database, now_ms
from jobfleet.store.inventory import Inventory
from jobfleet.store.outage import OutageLog

log = logging.getLogger(__name__)


class Presence:
    def __init__(self, db: Database, node_id: str, interval: float = 0.2) -> None:
        self.db = db
        self.inventory = Inventory(db)
        self.node_id = node_id
        self.interval = interval
        self._online: dict[int, dict[str, Any]] = {}
        self._offline: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

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
        if self._task:
            self._task.cancel()
        await self.flush()
