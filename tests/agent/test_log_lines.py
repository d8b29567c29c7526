"""Every line the agent and its watchdog write to stderr carries its time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=[A-Z]+ logger=\S+ ")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "JOBFLEET_ENROLL_TOKEN"}


def test_an_agent_that_cannot_start_says_why_in_a_timed_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobfleet.agent.main", "--server", "http://127.0.0.1:9",
         "--state-dir", str(tmp_path / "state"), "--ip", "127.0.0.1", "--log-level", "warning"],
        capture_output=True, text=True, timeout=60, env=_env(), check=False,
    )
    assert done.returncode == 2, done
    lines = done.stderr.splitlines()
    assert lines, done
    assert all(STAMP.match(line) for line in lines), lines
    assert "this agent has no credential yet" in lines[-1], lines


def test_the_watchdogs_lines_are_timed(tmp_path: Path) -> None:
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobfleet.agent.watchdog", str(read), "proc", str(tmp_path)],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, pass_fds=(read,),
        env=_env(),
    )
    os.close(read)
    # a task it must kill when the agent goes (none runs under that pgid), and a bad line
    os.write(write, b'{"op": "+", "id": "9:1:1", "pgid": null}\nnot json\n')
    os.close(write)
    _, err = proc.communicate(timeout=60)
    lines = err.splitlines()
    assert len(lines) == 2, lines
    assert all(STAMP.match(line) for line in lines), lines
