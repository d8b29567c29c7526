"""The engine's parts, built from what the server holds: each is given what it uses
through its constructor (``server.py`` calls ``build_engine``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jobfleet.bus.base import Bus
from jobfleet.engine.batches import StepTasks
from jobfleet.engine.cluster import SignalHandler
from jobfleet.engine.decisions import Decisions
from jobfleet.engine.dispatch import AgentEvents as EngineEvents
from jobfleet.engine.dispatch import Dispatcher
from jobfleet.engine.file_gathering import ThirdPartyDownloads
from jobfleet.engine.files import FileSteps
from jobfleet.engine.jobs import Jobs
from jobfleet.engine.leases import LeaseKeeper
from jobfleet.engine.ports import LiveEvents
from jobfleet.engine.results import Results
from jobfleet.engine.rpc import AgentRpc
from jobfleet.engine.runner import ConfirmWaiting, JobFinished, JobRunner
from jobfleet.engine.settings import EngineSettings
from jobfleet.engine.signals import Signals
from jobfleet.engine.tracking import Tracker
from jobfleet.engine.writer import ResultWriter
from jobfleet.gateway.endpoint import AgentEvents
from jobfleet.gateway.refusals import Refusals
from jobfleet.gateway.registry import Registry
from jobfleet.gateway.routing import AGENT as ROUTE_AGENT
from jobfleet.gateway.routing import AgentRouter, ClusterAgents, RoutedEvents
from jobfleet.store.blobs import BlobStore
from jobfleet.store.filelogs import FileLogStore
from jobfleet.store.inventory import Inventory
from jobfleet.store.jobs import JobStore
from jobfleet.store.secrets import Cipher

log = logging.getLogger(__name__)

# what a live node answers for a dead one it takes over, given the dead node's id
NodeGone = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class FileParts:
    """What file steps need beside the engine's own parts."""

    blobs: BlobStore
    file_logs: FileLogStore
    inventory: Inventory
    max_file_size: int
    # downloads from third-party file sources (file_type 3)
    third_party: ThirdPartyDownloads | None = None


def build_engine(
    store: JobStore,
    registry: Registry,
    bus: Bus,
    cipher: Cipher,
    settings: EngineSettings,
    refusals: Refusals,
    files: FileParts,
    on_job_finished: list[JobFinished],
    live: LiveEvents | None = None,
    rpc: AgentRpc | None = None,
    on_confirm_waiting: list[ConfirmWaiting] | None = None,
    on_node_gone: Sequence[NodeGone] = (),
) -> tuple[Jobs, AgentEvents, NodeListener]:
    """The engine's parts, each given what it uses: the façade, what the gateway
    tells the engine, and what the bus tells this node."""
    agents = ClusterAgents(registry, bus)
    tracker = Tracker()
    signals = Signals(bus, store.leases)
    results = Results(
        store, settings.max_output_bytes, refusals, tracker.is_live, live, cipher=cipher
    )
    writer = ResultWriter(results, tracker, signals)
    dispatcher = Dispatcher(store, agents, tracker, results, writer, settings)
    # requests to agents; given when something beyond the engine asks too (GSE processes)
    rpc = rpc or AgentRpc(agents, settings.agent_lost_grace)
    decisions = Decisions(store, settings.reconcile_interval)
    tasks = StepTasks(store, tracker, dispatcher, writer, decisions, settings)
    file_steps = FileSteps(
        tasks,
        dispatcher,
        rpc,
        files.blobs,
        files.file_logs,
        files.inventory,
        files.max_file_size,
        files.third_party,
    )
    runner = JobRunner(
        store,
        tasks,
        file_steps,
        decisions,
        cipher,
        settings,
        on_job_finished=on_job_finished,
        on_confirm_waiting=on_confirm_waiting or (),
    )
    leases = LeaseKeeper(store.leases, runner, settings)
    jobs = Jobs(
        store, runner, tasks, decisions, dispatcher, writer, leases, signals, cipher, settings
    )
    router = AgentRouter(registry, bus)
    events = RoutedEvents(EngineEvents(dispatcher, writer, rpc), router, bus)
    handler = SignalHandler(tracker, results, decisions, rpc, dispatcher, agents, tasks.force_stop)
    return jobs, events, NodeListener(router, handler, files.inventory, on_node_gone)


class NodeListener:
    """What the bus tells this node, to the part it concerns."""

    def __init__(
        self,
        router: AgentRouter,
        handler: SignalHandler,
        inventory: Inventory,
        on_node_gone: Sequence[NodeGone] = (),
    ) -> None:
        self.router = router
        self.handler = handler
        self.inventory = inventory
        # more of what a node leaves behind when it dies (by its node id), answered by
        # the live node that takes it over
        self.on_node_gone = tuple(on_node_gone)

    async def message(self, message: dict[str, Any]) -> None:
        kind = str(message.get("k"))
        if kind == ROUTE_AGENT:
            self.router.deliver(message)
        elif self.handler.handles(kind):
            self.handler.message(message)
        else:
            log.warning("bus_message_unknown kind=%s", kind[:32])

    def presence(self, node: str, online: list[int], offline: list[int]) -> None:
        self.handler.presence(online, offline)

    async def node_gone(self, node: str, hosts: list[int]) -> None:
        self.handler.hosts_gone(hosts)
        await self.inventory.reset_node(node)
        for gone in self.on_node_gone:
            # the take-over of the node's messages and agents goes on whatever fails here
            try:
                await gone(node)
            except Exception:
                log.exception("node_gone_failed node=%s", node)

    def reconnected(self) -> None:
        self.handler.reconnected()
