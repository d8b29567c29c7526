"""The job driver on a real database: what it writes of its job's and steps' state
lands only while this node owns the job."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, update
from tests.engine.conftest import FakeLink, Rig, script_job

from jobfleet.domain import protocol
from jobfleet.domain.status import HostStatus, RunStatus
from jobfleet.store.leases import lease_clock
from jobfleet.store.tables import job_instances, outbox


async def _run_sent(link: FakeLink, timeout: float = 10) -> None:
    """Until the engine has sent the host its run."""
    async def sent() -> None:
        while not any(m["t"] == protocol.RUN for m in link.sent):
            await asyncio.sleep(0.02)
    await asyncio.wait_for(sent(), timeout)


async def _logged(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 10) -> None:
    """Until a log record holds ``text``: the old driver logs it as it stops."""
    async def found() -> None:
        while not any(text in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.02)
    await asyncio.wait_for(found(), timeout)


async def test_a_driver_whose_job_another_node_claimed_writes_no_more(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """This node's lease lapsed and another node claimed the job while the driver
    waited for a host: when the host's result comes, the old driver neither ends the
    step nor finishes the job (nor queues its callback); it stops, saying so once."""
    link = rig.agents.connect(1, behaviour=lambda m: None)
    job = script_job([1])
    job.values["callback_url"] = "http://127.0.0.1:9/done"
    job_id, (step_id,) = await rig.engine.submit(job, start=True)
    await _run_sent(link)
    async with rig.db.begin() as conn:
        await conn.execute(
            update(job_instances)
            .where(job_instances.c.id == job_id)
            .values(owner_node="another", lease_until=lease_clock() + 60)
        )
    link._finish(protocol.task_id(step_id, 0, 1), 0)

    async def stopped() -> None:
        while rig.engine.runner.running(job_id):
            await asyncio.sleep(0.02)
    await asyncio.wait_for(stopped(), 10)
    # the host's own result lands (whichever node the agent talks to writes it) ...
    (row,) = await rig.store.hosts(step_id, 0)
    assert row.status == HostStatus.SUCCESS
    # ... but the step and the job are the new driver's to end
    step = await rig.store.step(step_id)
    assert step is not None and step.status == RunStatus.RUNNING and step.end_time is None
    found = await rig.store.job(job_id)
    assert found is not None and found.status == RunStatus.RUNNING
    assert found.owner_node == "another" and found.end_time is None
    assert rig.finished == []
    async with rig.db.connect() as conn:
        queued = (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()
    assert queued == 0
    assert sum("job_lost" in r.getMessage() for r in caplog.records) == 1


async def test_a_driver_whose_job_its_own_node_claimed_again_writes_no_more(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """The same node claimed the job again while a driver of it still waited (as after
    its lease was given up for a stuck driver): the old driver writes nothing more, and
    the job is ended once, by the driver of the newer claim."""
    link = rig.agents.connect(1, behaviour=lambda m: None)
    job_id, (step_id,) = await rig.engine.submit(script_job([1]), start=True)
    await _run_sent(link)
    assert await rig.store.claim(job_id, rig.engine.settings.node_id, 60) is not None
    link._finish(protocol.task_id(step_id, 0, 1), 0)
    assert await rig.wait_finished(job_id) == RunStatus.SUCCESS
    await _logged(caplog, "job_lost")
    assert rig.finished == [(job_id, RunStatus.SUCCESS)]
    assert sum("job_lost" in r.getMessage() for r in caplog.records) == 1
