"""The agent's watchdog: kills the agent's running tasks when the agent dies.

One small process per agent (not per task), started by the executor with the read
end of a pipe whose write end only the agent holds. The agent writes a line when a
task starts and when it ends; when the pipe reaches end of file — the agent exited,
crashed or was SIGKILLed — the watchdog kills every task still running, then exits.
It ignores the signals a terminal or a service manager sends to the agent's group,
so that stopping the agent does not stop it first.

Run as ``python -m jobfleet.agent.watchdog FD cgroup BASE`` or ``… FD proc``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

from jobfleet.agent.processes import (
    CGROUP,
    CgroupContainment,
    Containment,
    ProcContainment,
)

logger = logging.getLogger("jobfleet.agent.watchdog")


def _containment(args: list[str]) -> Containment:
    if args and args[0] == CGROUP:
        base = Path(args[1])
        # the watchdog never moves itself, so its own cgroup serves as "home"
        return CgroupContainment(base, base)
    return ProcContainment(args[1])


def watch(fd: int, containment: Containment) -> int:
    """Follow the agent's task lines on ``fd`` until EOF; kill what still runs."""
    running: dict[str, int | None] = {}
    pending = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:
            break
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        for line in lines:
            try:
                event = json.loads(line)
                if event["op"] == "+":
                    running[str(event["id"])] = event.get("pgid")
                else:
                    running.pop(str(event["id"]), None)
            except (ValueError, KeyError, TypeError):
                logger.warning("watchdog ignored a bad line")
    for task_id, pgid in running.items():
        containment.kill(task_id, pgid)
    # in a cgroup, a task that was being started when the agent died is there too
    containment.sweep()
    containment.close()
    if running:
        logger.warning("agent gone: killed its running tasks count=%d", len(running))
    return 0


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
    return watch(int(argv[0]), _containment(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
