"""What the nodes of a cluster tell each other about jobs.

The node that drives a job (its lease owner) must hear at once of what happens
elsewhere: results stored by another node (that an agent is connected to, or that
took the skip of a termination), a terminate or a confirmation taken by another node,
agents that come to or leave other nodes.
``Signals`` sends these to the owner; ``engine/cluster.py`` acts on them. A signal
that is lost (its node died, Redis restarted) costs only time: the owner also
reads the store every ``reconcile_interval``, and a new owner starts from it.
A job whose lease lapsed has no owner to tell: its node may be dead, and the node
that claims it next (any node's lease loop, within ``lease_renew``) starts from the
store, where the terminate or result already is.
"""

from __future__ import annotations

import logging

from jobfleet.engine.ports import NodeMessages
from jobfleet.engine.results import TaskKey
from jobfleet.store.leases import LeaseStore

log = logging.getLogger(__name__)

RESULTS = "results"
STOP = "stop"
WAKE = "wake"
REPLY = "reply"
# sent by nodes of earlier releases, which asked the driving node to end a termination
# wait (these end the hosts in the store): still taken, for a cluster mid-upgrade
SKIP = "skip"


class Signals:
    def __init__(self, bus: NodeMessages, leases: LeaseStore) -> None:
        self.bus = bus
        self.leases = leases

    @property
    def clustered(self) -> bool:
        return self.bus.clustered

    async def results_stored(self, keys: list[TaskKey]) -> None:
        """Final results this node stored for tasks another node waits for."""
        if not self.bus.clustered or not keys:
            return
        owners = await self.leases.owners_of_steps([k[0] for k in keys])
        by_node: dict[str, list[list[int]]] = {}
        for step, count, host in keys:
            node = owners.get(step)
            if node is not None and node != self.bus.node_id:
                by_node.setdefault(node, []).append([step, count, host])
        for node, found in by_node.items():
            self.bus.send(node, {"k": RESULTS, "keys": found})

    async def stop(self, job_id: int) -> None:
        if not self.bus.clustered:
            return
        node = await self.leases.owner_of_job(job_id)
        if node is not None and node != self.bus.node_id:
            self.bus.send(node, {"k": STOP, "job": job_id})

    async def wake(self, step_id: int) -> None:
        if not self.bus.clustered:
            return
        node = (await self.leases.owners_of_steps([step_id])).get(step_id)
        if node is not None and node != self.bus.node_id:
            self.bus.send(node, {"k": WAKE, "step": step_id})
