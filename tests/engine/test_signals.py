"""Signals on a real database: what a node tells the driver of a job goes to a node
whose lease is live, never to one whose lease lapsed (it may be dead)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from tests.store.test_leases import new_job

from jobfleet.engine.signals import RESULTS, STOP, WAKE, Signals
from jobfleet.store.database import Database
from jobfleet.store.jobs import JobStore
from jobfleet.store.leases import LeaseStore


@dataclass
class SentMessages:
    """The bus of a cluster node, as the engine uses it, keeping what was sent."""

    node_id: str = "here"
    clustered: bool = True
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def send(self, node: str, message: dict[str, Any]) -> None:
        self.sent.append((node, message))


async def test_signals_go_to_a_live_owner_only(db: Database) -> None:
    jobs, leases = JobStore(db), LeaseStore(db)
    bus = SentMessages()
    signals = Signals(bus, leases)
    live, live_step = await new_job(jobs)
    lapsed, lapsed_step = await new_job(jobs)
    assert await leases.claim(live, "peer", 60) and await leases.claim(lapsed, "dead", 0.05)
    await asyncio.sleep(0.1)

    await signals.stop(live)
    await signals.wake(live_step)
    await signals.results_stored([(live_step, 0, 1)])
    assert bus.sent == [
        ("peer", {"k": STOP, "job": live}),
        ("peer", {"k": WAKE, "step": live_step}),
        ("peer", {"k": RESULTS, "keys": [[live_step, 0, 1]]}),
    ]
    bus.sent.clear()
    # the job's next driver starts from the store: nothing is sent to the dead node
    await signals.stop(lapsed)
    await signals.wake(lapsed_step)
    await signals.results_stored([(lapsed_step, 0, 1)])
    assert bus.sent == []
