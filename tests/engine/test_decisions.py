"""Decisions taken on a waiting step, against a real store."""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.engine.conftest import Rig, script_job

from jobfleet.domain.status import RunStatus
from jobfleet.engine.decisions import Decisions
from jobfleet.store.jobs import JobLease, LostJob


async def _driven_by_another_node(rig: Rig, job_id: int, status: RunStatus) -> JobLease:
    """The job at ``status``, and the lease of a driver on node n2: its live lease keeps
    this rig's own lease keeper (node n1) off the job."""
    await rig.store.update_job(job_id, status=int(status), owner_node="n2",
                               lease_until=time.time() + 600)
    lease = await rig.store.claim(job_id, "n2", 600)
    assert lease is not None
    return lease


async def _moved_on(rig: Rig, job_status: RunStatus) -> int:
    """A step an approver moved on while its job was at ``job_status``: the job's status
    once the runner saw the decision."""
    job_id, (step_id,) = await rig.engine.submit(script_job([1]), start=False)
    lease = await _driven_by_another_node(rig, job_id, job_status)
    await rig.store.update_step(step_id, status=int(RunStatus.SUCCESS))
    step = await rig.store.step(step_id)
    assert step is not None
    current = await Decisions(rig.store, 0.05).await_decision(lease, step, asyncio.Event())
    assert current is not None and current.status == RunStatus.SUCCESS
    after = await rig.store.job(job_id)
    assert after is not None
    return int(after.status)


async def test_a_decision_resumes_a_waiting_job(rig: Rig) -> None:
    assert await _moved_on(rig, RunStatus.WAITING_USER) == RunStatus.RUNNING


async def test_a_decision_does_not_undo_a_terminate_taken_meanwhile(rig: Rig) -> None:
    # the node that drives the job learns of a terminate taken elsewhere from this status
    assert await _moved_on(rig, RunStatus.STOPPING) == RunStatus.STOPPING


async def test_a_driver_that_lost_its_lease_does_not_resume_the_job(rig: Rig) -> None:
    """The decision lands after another node took the job over: the old driver learns
    so (``LostJob``) and the job's row stays as its new driver has it."""
    job_id, (step_id,) = await rig.engine.submit(script_job([1]), start=False)
    lease = await _driven_by_another_node(rig, job_id, RunStatus.WAITING_USER)
    await rig.store.update_job(job_id, owner_node="n3")  # as n3's claim writes it
    await rig.store.update_step(step_id, status=int(RunStatus.SUCCESS))
    step = await rig.store.step(step_id)
    assert step is not None
    with pytest.raises(LostJob):
        await Decisions(rig.store, 0.05).await_decision(lease, step, asyncio.Event())
    after = await rig.store.job(job_id)
    assert after is not None and after.status == RunStatus.WAITING_USER
