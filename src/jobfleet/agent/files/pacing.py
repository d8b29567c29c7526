"""Rate limits, progress reports and the one file thread of a transfer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

# at most this many progress reports a second (besides the final one)
REPORT_INTERVAL = 0.25
# idle time a rate-limited transfer may catch up on in one burst
BURST_SECONDS = 0.1
# a rate-limited transfer moves at most this many seconds' worth of bytes per chunk,
# so the limit shows as a steady rate rather than bursts and pauses
PACE_SLICE = 0.125
MIN_CHUNK = 16 * 1024


@dataclass
class Progress:
    done: int
    total: int
    bytes_per_second: float


class Pacer:
    """A token bucket kept as a schedule: n bytes may go once the clock passes ``due``.

    The bucket starts empty, so a limited transfer never starts with a burst, and holds
    at most ``BURST_SECONDS`` of idle time, so a slow network does not earn a later
    burst above the limit."""

    def __init__(self, rate: int | None) -> None:
        self.rate = rate if rate is not None and rate > 0 else None
        self._due: float | None = None

    def chunk(self, chunk_size: int) -> int:
        if self.rate is None:
            return chunk_size
        return max(1, min(chunk_size, max(MIN_CHUNK, int(self.rate * PACE_SLICE))))

    async def take(self, n: int) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        due = now if self._due is None else max(self._due, now - BURST_SECONDS)
        self._due = due + n / self.rate
        if self._due > now:
            await asyncio.sleep(self._due - now)


class Meter:
    def __init__(self, total: int, callback: Callable[[Progress], None] | None) -> None:
        self._total = total
        self._callback = callback
        self._start = self._last = time.monotonic()
        self._last_done = 0

    def update(self, done: int) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        if now - self._last < REPORT_INTERVAL:
            return
        speed = max(0.0, (done - self._last_done) / (now - self._last))
        self._last, self._last_done = now, done
        self._callback(Progress(done, self._total, speed))

    def finish(self, done: int) -> None:
        if self._callback is None:
            return
        elapsed = time.monotonic() - self._start
        self._callback(Progress(done, self._total, done / elapsed if elapsed > 0 else 0.0))


class FileThread:
    """The one thread that does a transfer's file I/O, in order.

    Ordering is the point: after a cancellation the cleanup queued here runs only once
    the read or write in flight has finished, so a descriptor is never closed (and its
    number reused) under a thread still using it."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobfleet-file")

    async def run(self, fn: Callable[[], T]) -> T:
        return await self.submit(fn)

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def close(self, cleanup: Callable[[], None] | None = None) -> None:
        """Run ``cleanup`` after whatever is in flight, then let the thread go.

        A cancellation while waiting does not stop ``cleanup``; it still runs."""
        try:
            if cleanup is not None:
                queued = self._pool.submit(_logged, cleanup)
                await asyncio.shield(asyncio.wrap_future(queued))
        finally:
            self._pool.shutdown(wait=False)


def _logged(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        logger.exception("file cleanup failed")
