"""Agent credentials checked a batch at a time.

After a server restart thousands of agents connect within seconds. One query per
agent is a trip through the database driver each (for SQLite, several hops to its
thread), which cost more server CPU than the TLS handshake. Here the credentials
that arrive while a query runs wait for the next one and go together, so a lone
agent is checked at once and a storm costs one query per batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
Check = Callable[[list[tuple[str, str]]], Awaitable[dict[tuple[str, str], T]]]
# agent ids in one query (well under the bound parameters SQLite and PostgreSQL take)
MAX_BATCH = 500


class CredentialChecks(Generic[T]):
    def __init__(self, check: Check[T], max_batch: int = MAX_BATCH) -> None:
        self._check = check
        self.max_batch = max_batch
        self._waiting: dict[tuple[str, str], list[asyncio.Future[T | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def check(self, agent_id: str, secret: str) -> T | None:
        """What the query tells of the credential (its host), or None if it is not valid;
        raises what the query raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T | None] = loop.create_future()
        self._waiting.setdefault((agent_id, secret), []).append(future)
        if self._task is None:
            self._task = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                # those arriving in the same turn of the loop join this batch
                await asyncio.sleep(0)
                keys = list(self._waiting)[: self.max_batch]
                batch = {key: self._waiting.pop(key) for key in keys}
                try:
                    valid = await self._check(keys)
                except Exception as exc:
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                except BaseException:
                    # cancelled in the middle of a query: its waiters end too
                    for futures in batch.values():
                        for future in futures:
                            future.cancel()
                    raise
                for key, futures in batch.items():
                    for future in futures:
                        if not future.done():
                            future.set_result(valid.get(key))
        finally:
            self._task = None
            # cancelled (the server stops): nobody is left waiting for ever
            for futures in self._waiting.values():
                for future in futures:
                    future.cancel()
            self._waiting.clear()
