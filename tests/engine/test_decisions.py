"""Decisions taken on a waiting step, against a real store."""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.engine.conftest import Rig, script_job

from jobfleet.domain.status import RunStatus
from jobfleet.engine.decisions import Decisions
from jobfleet.store.jobs import LostJob


async def _moved_on(rig: Rig, job_status: RunStatus) -> int:
    """A step an approver moved on while its job was at ``job_status``: the job's status
    once the runner saw the decision."""
    job_id, (step_id,) = await rig.engine.submit(script_job([1]), start=False)
    # driven by this rig's node, as its runner would
    await rig.store.update_job(job_id, status=int(job_status), owner_node="n1",
                               lease_until=time.time() + 600)
    await rig.store.update_step(step_id, status=int(RunStatus.SUCCESS))
    job, step = await rig.store.job(job_id), await rig.store.step(step_id)
    assert job is not None and step is not None
    current = await Decisions(rig.store, 0.05).await_decision(
        job, step, asyncio.Event(), "n1")
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
    # another node's live lease: this rig's own lease keeper leaves the job alone
    await rig.store.update_job(job_id, status=int(RunStatus.WAITING_USER), owner_node="n2",
                               lease_until=time.time() + 600)
    await rig.store.update_step(step_id, status=int(RunStatus.SUCCESS))
    job, step = await rig.store.job(job_id), await rig.store.step(step_id)
    assert job is not None and step is not None
    with pytest.raises(LostJob):
        await Decisions(rig.store, 0.05).await_decision(job, step, asyncio.Event(), "n1")
    after = await rig.store.job(job_id)
    assert after is not None and after.status == RunStatus.WAITING_USER
