"""What the engine remembers about a step attempt while it runs on this node.

The store is the truth; this is an index over it so that results can wake the
step that waits for them without polling the database.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from jobfleet.domain import protocol

WAITING = "waiting"  # not sent to an agent yet
SENT = "sent"  # sent (or maybe sent before a restart)


@dataclass
class StepRun:
    job_id: int
    step_id: int
    execute_count: int
    # the run message minus its task id, identical for every host of the step
    template: dict[str, Any]
    # what a host that outlives the step's timeout ends with
    timeout_status: int = 13
    pending: dict[int, str] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # what differs for some hosts (their own values of namespace variables)
    per_host: dict[int, dict[str, Any]] = field(default_factory=dict)

    def key(self) -> tuple[int, int]:
        return self.step_id, self.execute_count

    def task_id(self, host_id: int) -> str:
        return protocol.task_id(self.step_id, self.execute_count, host_id)

    def message(self, host_id: int) -> dict[str, Any]:
        own = self.per_host.get(host_id)
        if own:
            return {"t": protocol.RUN, "id": self.task_id(host_id), **self.template, **own}
        return {"t": protocol.RUN, "id": self.task_id(host_id), **self.template}

    def finish(self, host_id: int) -> None:
        self.pending.pop(host_id, None)
        if not self.pending:
            self.done.set()
