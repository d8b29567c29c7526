"""The agent's watchdog process, let go without holding up the agent's loop."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from jobfleet.agent import processes
from jobfleet.agent.watchdog import Watchdog


def gone(pid: int) -> bool:
    """Whether ``pid`` is reaped (a zombie still has its /proc entry)."""
    return not Path(f"/proc/{pid}").exists()


async def test_close_does_not_wait_for_the_watchdog_on_the_loop(tmp_path: Path) -> None:
    containment = processes.choose(processes.PROC, tmp_path / "work")
    watchdog = Watchdog(containment)
    watchdog.started("9:1:1", None, may_start=True)
    watchdog.ended("9:1:1")
    proc = watchdog._proc
    assert proc is not None and proc.poll() is None
    # a watchdog slow to go (one killing many tasks at the agent's end) stands still here
    os.kill(proc.pid, signal.SIGSTOP)
    lags: list[float] = []

    async def tick() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    ticker = asyncio.create_task(tick())
    try:
        await asyncio.sleep(0.05)
        started = time.monotonic()
        watchdog.close()
        assert time.monotonic() - started < 0.1
        await asyncio.sleep(0.05)
        assert max(lags) < 0.1
    finally:
        ticker.cancel()
        os.kill(proc.pid, signal.SIGCONT)
    # it sees the end of its pipe, exits, and is reaped: no zombie is left
    deadline = time.monotonic() + 5
    while not gone(proc.pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert gone(proc.pid)
    containment.close()
