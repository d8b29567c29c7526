"""A loop that checks its task each turn ends even when a cancellation was swallowed."""

from __future__ import annotations

import asyncio
import contextlib

from jobfleet.loop import raise_if_cancelled


async def test_a_swallowed_cancellation_still_ends_the_loop() -> None:
    async def loop() -> None:
        for _turn in range(300):  # bounded, so that without the check the test fails
            raise_if_cancelled()
            # what Python 3.11's wait_for does when its awaitable completes as the
            # task is cancelled
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    task = asyncio.get_running_loop().create_task(loop())
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2.0)
    assert done and task.cancelled()


async def test_a_task_not_being_cancelled_goes_on() -> None:
    raise_if_cancelled()
    await asyncio.sleep(0)
    raise_if_cancelled()
