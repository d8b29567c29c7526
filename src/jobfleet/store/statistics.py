"""Keeping SQLite's planner statistics current while the server runs: a sampled
ANALYZE a minute after the start and every hour (``Database.analyze``), off the
request path. PostgreSQL's autovacuum does this on its own.
"""

from __future__ import annotations

import asyncio
import logging

from jobfleet.store.database import Database

log = logging.getLogger(__name__)

# seconds between two passes (SQLite suggests hourly or daily for long-lived connections)
INTERVAL = 3600.0
# seconds from the start to the first pass: past what a start does at once (recovery,
# agents reconnecting, the first requests), which the pass's write lock would only slow
FIRST = 60.0


class Statistics:
    def __init__(self, db: Database, interval: float = INTERVAL, first: float = FIRST) -> None:
        self.db = db
        self.interval = interval
        self.first = first
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.db.is_sqlite:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(self.first)
        while True:
            try:
                await self.db.analyze()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sqlite_analyze_failed")
            await asyncio.sleep(self.interval)
