"""Group commit: requests that arrive while a write is under way go together in the next.

A write transaction costs about the same for one row as for a hundred, so when many
callers each want a small write at once (ten thousand hosts enrolling), one
transaction per caller spends nearly all its time on the transaction. Here callers
queue their items; one writer task takes everything queued (up to ``max_batch``) and
writes it in one go, and whatever arrives meanwhile waits for the next write. Before a
batch that is not full the writer waits ``linger`` seconds for more to come: a few
milliseconds of latency that make batches larger when requests come steadily but
sparsely (each one's handshake costs more than its write).

Each caller still gets its own answer: the write returns one outcome per item, a
value or an exception meant for that item's caller alone (a refusal). If the write as
a whole fails, each item of the batch is written again alone, so one bad item costs
its neighbours a retry, never their answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")
# one outcome per item, in the order of the items: a value, or that item's exception
WriteBatch = Callable[[Sequence[Item]], Awaitable[Sequence[Result | Exception]]]


class GroupCommit(Generic[Item, Result]):
    """Batches concurrent ``submit`` calls into calls of ``write``, in arrival order."""

    def __init__(
        self,
        name: str,
        write: WriteBatch[Item, Result],
        *,
        max_batch: int = 256,
        linger: float = 0.0,
    ) -> None:
        if max_batch < 1 or linger < 0:
            raise ValueError("max_batch must be at least 1, linger not negative")
        self.name = name
        self._write = write
        self.max_batch = max_batch
        self.linger = linger
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None
        # how many batches were written, and how many items they held (for tests, metrics)
        self.batches = 0
        self.items = 0

    async def submit(self, item: Item) -> Result:
        """``item`` written with whatever else is queued; its own outcome, or its error.

        A caller cancelled while its item still waits takes the item out of the queue;
        once its batch is being written, the write goes on without the caller."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name=f"group-commit-{self.name}")
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                # callers woken by the same event-loop turn join at least
                await asyncio.sleep(self.linger if len(self._queue) < self.max_batch else 0)
                batch = [(i, f) for i, f in self._queue[: self.max_batch] if not f.done()]
                del self._queue[: self.max_batch]
                if batch:
                    await self._commit(batch)
        finally:
            # stopped (cancelled) with callers still waiting: they must not wait forever
            for _, future in self._queue:
                future.cancel()
            self._queue.clear()

    async def _commit(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            outcomes = await self._write([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(
                    f"{self.name}: {len(outcomes)} outcomes for a batch of {len(batch)}"
                )
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            log.warning(
                "group_commit_retry name=%s size=%d error=%s",
                self.name,
                len(batch),
                type(exc).__name__,
            )
            for k, one in enumerate(batch):
                try:
                    await self._commit([one])
                except asyncio.CancelledError:
                    # stopped mid-retry: the items not yet written end with it
                    for _, future in batch[k + 1 :]:
                        future.cancel()
                    raise
            return
        self.batches += 1
        self.items += len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            _settle(future, outcome)


def _settle(future: asyncio.Future[Result], outcome: Result | Exception) -> None:
    if future.done():  # its caller went away
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
