"""Running a jobfleet process's event loop: uvloop where it is installed."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def raise_if_cancelled() -> None:
    """End a long-running loop whose task is being cancelled.

    On Python 3.11 ``asyncio.wait_for`` returns the result of an awaitable that
    completes as its task is cancelled, and swallows the cancellation; libraries
    (the Redis client among them) use it inside their calls. A loop that only
    relied on the ``CancelledError`` would then go on forever after its owner
    stopped it, so each turn checks the task's pending cancellations as well."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
