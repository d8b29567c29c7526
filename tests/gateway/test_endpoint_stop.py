"""The gateway's stop on a real database that fails its last writes."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import pytest
from sqlalchemy import text

from jobfleet.engine.settings import EngineSettings
from jobfleet.gateway.endpoint import Gateway
from jobfleet.gateway.presence import Presence
from jobfleet.gateway.refusals import Refusals
from jobfleet.gateway.registry import AgentConnection, Registry
from jobfleet.store.agent_loads import AgentLoad
from jobfleet.store.database import Database
from jobfleet.store.identity import IdentityStore
from jobfleet.store.inventory import Inventory


def presence(db: Database) -> Presence:
    return Presence(db, "node-1", EngineSettings().presence_batch)


def gateway(db: Database) -> Gateway:
    return Gateway(IdentityStore(db), Registry(), presence(db), ack_delay=30.0)


async def test_every_part_stops_when_the_last_writes_fail(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The database gone at shutdown: the host facts' last write fails, and the loads'
    writer and the held acknowledgements' timer stop all the same, with one log line."""
    host = await Inventory(db).add(2, "127.0.0.31")
    gw = gateway(db)
    gw.start()
    gw._facts.add(host.bk_host_id, {"os_name": "linux", "labels": None})
    gw._loads.add(host.bk_host_id, AgentLoad(0.5, 0.25, 1000, 2000))
    loads = gw._loads._task
    assert loads is not None and gw._acks is not None
    gw._acks.hold(cast(AgentConnection, object()))
    async with db.begin() as conn:
        # what a database that went away answers: every write fails
        await conn.execute(text("ALTER TABLE hosts RENAME TO hosts_gone"))
        await conn.execute(text("ALTER TABLE agent_loads RENAME TO agent_loads_gone"))
    with caplog.at_level(logging.WARNING, logger="jobfleet.gateway.endpoint"):
        await asyncio.wait_for(gw.stop(), 10)
    assert loads.done()
    assert gw._loads._task is None
    assert gw._acks._timer is None
    failed = [r for r in caplog.records if r.name == "jobfleet.gateway.endpoint"]
    assert len(failed) == 1
    assert failed[0].exc_info is None
    assert "facts" in failed[0].getMessage() and "load" in failed[0].getMessage()


class FailingRefusals(Refusals):
    async def stop(self) -> None:
        raise RuntimeError("the refusals' last audit entry was not written")


async def test_the_facts_are_written_when_the_refusals_fail_to_stop(db: Database) -> None:
    host = await Inventory(db).add(2, "127.0.0.32")
    gw = Gateway(IdentityStore(db), Registry(), presence(db),
                 refusals=FailingRefusals(None))
    gw.start()
    gw._facts.add(host.bk_host_id, {"os_name": "plan9", "labels": None})
    await asyncio.wait_for(gw.stop(), 10)
    (stored,) = await Inventory(db).by_ids([host.bk_host_id])
    assert stored.os_name == "plan9"
