"""What the agent reports for the tasks an earlier agent process left unfinished."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path

from jobfleet.agent.connection import Agent
from jobfleet.agent.settings import AgentSettings
from jobfleet.agent.spool import Spool

MARK = "JOBFLEET_TEST_RECOVERY"


def _marked(marker: str) -> list[int]:
    needle = f"{MARK}={marker}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


async def _one(marker: str) -> int:
    for _ in range(250):
        pids = _marked(marker)
        if pids:
            return pids[0]
        await asyncio.sleep(0.02)
    raise AssertionError("the process never started")


async def _gone(marker: str) -> list[int]:
    """What still runs with ``marker`` once a killed process has had time to die: SIGKILL
    is delivered, not waited for."""
    for _ in range(250):
        left = _marked(marker)
        if not left:
            return left
        await asyncio.sleep(0.02)
    return left


async def test_an_interrupted_task_is_reported_as_what_happened_to_it(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    # a script an earlier agent started and that runs on: not a descendant of this process
    env = {**os.environ, MARK: marker, "JOBFLEET_TASK_ID": "1:1:1"}
    subprocess.run(["setsid", "-f", "sleep", "1000"], env=env, check=True)
    running = await _one(marker)
    # a script that had ended before its result was saved: its group is gone
    ended = subprocess.Popen(["true"], start_new_session=True)
    ended.wait()

    state = tmp_path / "state"
    earlier = Spool(state)
    for task_id in ("1:1:1", "1:1:2", "1:1:3"):
        earlier.accept(task_id)
    earlier.set_pgid("1:1:1", running)
    earlier.set_pgid("1:1:2", ended.pid)
    earlier.close()

    agent = Agent(AgentSettings(server="http://127.0.0.1:9", state_dir=state, ip="127.0.0.1"),
                  spool=Spool(state))
    try:
        agent.recover_interrupted()
        notes = {m["id"]: m.get("data", "") for m in agent.spool.pending() if m["t"] == "done"}
        left = await _gone(marker)
    finally:
        await agent.stop()
        for pid in _marked(marker):
            os.kill(pid, 9)
    assert left == []
    assert notes["1:1:1"].endswith("1 of its processes were still running and were stopped\n")
    for gone in ("1:1:2", "1:1:3"):
        assert "processes were stopped" not in notes[gone], notes
        assert notes[gone].endswith("its result was lost with the agent\n"), notes
    assert "none of its processes were left running" in notes["1:1:2"], notes
    assert "no process of it was recorded" in notes["1:1:3"], notes
