"""What the agent reports for the tasks an earlier agent process left unfinished."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.agent.test_executor import MARK, marked_processes, wait_gone, wait_started

# a fixture: pytest finds it by its name in this module; it kills what outlives the test
from tests.agent.test_executor import marker as marker

from jobfleet.agent.connection import Agent
from jobfleet.agent.settings import AgentSettings
from jobfleet.agent.spool import Spool


async def test_an_interrupted_task_is_reported_as_what_happened_to_it(
        tmp_path: Path, marker: str) -> None:
    # a script an earlier agent started and that runs on: not a descendant of this process
    env = {**os.environ, MARK: marker, "JOBFLEET_TASK_ID": "1:1:1"}
    subprocess.run(["setsid", "-f", "sleep", "1000"], env=env, check=True)
    await wait_started(marker, 1)
    running = marked_processes(marker)[0]
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
        # SIGKILL is delivered, not waited for
        left = await wait_gone(marker, within=5.0)
    finally:
        await agent.stop()
    assert left == []
    assert notes["1:1:1"].endswith("1 of its processes were still running and were stopped\n")
    for gone in ("1:1:2", "1:1:3"):
        assert "processes were stopped" not in notes[gone], notes
        assert notes[gone].endswith("its result was lost with the agent\n"), notes
    assert "none of its processes were left running" in notes["1:1:2"], notes
    assert "no process of it was recorded" in notes["1:1:3"], notes
