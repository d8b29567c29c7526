"""Decisions taken on a waiting step, against a real store."""

from __future__ import annotations

import asyncio

from tests.engine.conftest import Rig, script_job

from jobfleet.domain.status import RunStatus
from jobfleet.engine.decisions import Decisions


async def _moved_on(rig: Rig, job_status: RunStatus) -> int:
    """A step an approver moved on while its job was at ``job_status``: the job's status
    once the runner saw the decision."""
    job_id, (step_id,) = await rig.engine.submit(script_job([1]), start=False)
    await rig.store.update_job(job_id, status=int(job_status))
    await rig.store.update_step(step_id, status=int(RunStatus.SUCCESS))
    job, step = await rig.store.job(job_id), await rig.store.step(step_id)
    assert job is not None and step is not None
    current = await Decisions(rig.store, 0.05).await_decision(job, step, asyncio.Event())
    assert current is not None and current.status == RunStatus.SUCCESS
    after = await rig.store.job(job_id)
    assert after is not None
    return int(after.status)


async def test_a_decision_resumes_a_waiting_job(rig: Rig) -> None:
    assert await _moved_on(rig, RunStatus.WAITING_USER) == RunStatus.RUNNING


async def test_a_decision_does_not_undo_a_terminate_taken_meanwhile(rig: Rig) -> None:
    # the node that drives the job learns of a terminate taken elsewhere from this status
    assert await _moved_on(rig, RunStatus.STOPPING) == RunStatus.STOPPING
