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
# the key of a run message that says why its hosts are not sent it (a value a host set
# would have become their code); never sent to an agent
REFUSED = "refused"


@dataclass
class StepRun:
    job_id: int
    step_id: int
    execute_count: int
    # the run message (``protocol.run`` or ``protocol.download``) with an empty task id,
    # identical for every host of the step
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
            message = {**self.template, "id": self.task_id(host_id), **own}
        else:
            message = {**self.template, "id": self.task_id(host_id)}
        message.pop(REFUSED, None)
        return message

    def refusal(self, host_id: int) -> str:
        """Why ``host_id`` is not sent its task (``""``: it is)."""
        own = self.per_host.get(host_id) or {}
        return str(own[REFUSED] if REFUSED in own else self.template.get(REFUSED) or "")

    def finish(self, host_id: int) -> None:
        self.pending.pop(host_id, None)
        if not self.pending:
            self.done.set()


class Tracker:
    """The step attempts this node drives, and which of them wait for each host."""

    def __init__(self) -> None:
        self.runs: dict[tuple[int, int], StepRun] = {}
        self.by_host: dict[int, set[tuple[int, int]]] = {}

    def track(self, run: StepRun) -> None:
        self.runs[run.key()] = run
        for host in run.pending:
            self.by_host.setdefault(host, set()).add(run.key())

    def add_hosts(self, run: StepRun, hosts: list[int]) -> None:
        """A rolling step's next batch joins the index."""
        for host in hosts:
            self.by_host.setdefault(host, set()).add(run.key())

    def untrack(self, run: StepRun) -> list[int]:
        """Drop a step attempt; the hosts still pending in it."""
        self.runs.pop(run.key(), None)
        hosts = list(run.pending)
        for host in hosts:
            self.forget(host, run.key())
        return hosts

    def forget(self, host: int, key: tuple[int, int]) -> None:
        keys = self.by_host.get(host)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.by_host[host]

    def get(self, key: tuple[int, int]) -> StepRun | None:
        return self.runs.get(key)

    def for_host(self, host: int) -> list[StepRun]:
        """The step attempts still waiting for this host."""
        found = []
        for key in list(self.by_host.get(host, ())):
            run = self.runs.get(key)
            if run is not None and host in run.pending:
                found.append(run)
        return found

    def is_live(self, key: tuple[int, int, int]) -> bool:
        """Was this task sent from this node, and is its result still to come?"""
        run = self.runs.get((key[0], key[1]))
        return run is not None and run.pending.get(key[2]) == SENT

    def finish(self, key: tuple[int, int], host: int) -> None:
        """A host's result is stored: its step attempt stops waiting for it."""
        run = self.runs.get(key)
        if run is not None and host in run.pending:
            run.finish(host)
            self.forget(host, key)

    def pending(self) -> int:
        return sum(len(r.pending) for r in self.runs.values())

    def pending_for(self, step_id: int) -> StepRun | None:
        for run in list(self.runs.values()):
            if run.step_id == step_id and run.pending:
                return run
        return None
