"""What the node that drives jobs does on hearing from the other nodes of a cluster
(``engine/signals.py`` is the sending side)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobfleet.engine.decisions import Decisions
from jobfleet.engine.dispatch import Dispatcher
from jobfleet.engine.ports import AgentDirectory
from jobfleet.engine.results import Results
from jobfleet.engine.rpc import AgentRpc
from jobfleet.engine.signals import REPLY, RESULTS, SKIP, STOP, WAKE
from jobfleet.engine.tracking import Tracker


class _Origin:
    """The host a reply came from, as ``AgentRpc`` checks it."""

    def __init__(self, bk_host_id: int) -> None:
        self.bk_host_id = bk_host_id


class SignalHandler:
    """The receiving side, on the node that drives the jobs."""

    def __init__(
        self,
        tracker: Tracker,
        results: Results,
        decisions: Decisions,
        rpc: AgentRpc,
        dispatcher: Dispatcher,
        agents: AgentDirectory,
        force_stop: Callable[[int], bool],
    ) -> None:
        self.tracker = tracker
        self.results = results
        self.decisions = decisions
        self.rpc = rpc
        self.dispatcher = dispatcher
        self.agents = agents
        self.force_stop = force_stop

    def handles(self, kind: str) -> bool:
        return kind in (RESULTS, STOP, WAKE, SKIP, REPLY)

    def message(self, message: dict[str, Any]) -> None:
        if message.get("orphan"):
            return  # sent to a node that died: its jobs are driven from the store now
        kind = message.get("k")
        if kind == RESULTS:
            for step, count, host in message["keys"]:
                self.results.forget((int(step), int(count), int(host)))
                self.tracker.finish((int(step), int(count)), int(host))
        elif kind == STOP:
            self.decisions.request_stop(int(message["job"]))
        elif kind == WAKE:
            self.decisions.wake_step(int(message["step"]))
        elif kind == SKIP:
            self.force_stop(int(message["step"]))
        elif kind == REPLY:
            self.rpc.reply(_Origin(int(message["host"])), message["msg"])  # type: ignore[arg-type]

    def presence(self, online: list[int], offline: list[int]) -> None:
        """Agents came to or left another node."""
        for host in offline:
            self.dispatcher.host_offline(host)
        for host in online:
            link = self.agents.for_host(host)
            if link is not None:
                self.dispatcher.agent_online(link)

    def hosts_gone(self, hosts: list[int]) -> None:
        for host in hosts:
            self.dispatcher.host_offline(host)

    def reconnected(self) -> None:
        self.dispatcher.resend_all()
