"""What the presence writer has not written yet when it stops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jobfleet.gateway.presence import Presence
from jobfleet.store.database import Database
from jobfleet.store.inventory import Inventory


async def test_a_flush_in_flight_at_stop_is_written_by_the_last_one(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The periodic flush has taken the batch (agents that left as the server stops)
    and waits on the database when the stop comes: the stop's own flush writes that
    batch, rather than find nothing to write while the cancelled flush puts it back
    for no one."""
    host = await Inventory(db).add(2, "127.0.0.41")
    presence = Presence(db, "node-1", interval=0.0)
    real = presence.inventory.record_presence
    in_flight = asyncio.Event()
    written: list[set[int]] = []

    async def record(node_id: str, online: dict[int, dict[str, Any]], offline: set[int],
                     now: int) -> None:
        if not in_flight.is_set():
            in_flight.set()
            await asyncio.Event().wait()  # a write the stop finds under way
        written.append(set(offline))
        await real(node_id, online, offline, now)

    monkeypatch.setattr(presence.inventory, "record_presence", record)
    presence.start()
    presence.offline(host.bk_host_id)
    await asyncio.wait_for(in_flight.wait(), 10)
    await asyncio.wait_for(presence.stop(), 10)
    assert written == [{host.bk_host_id}]
