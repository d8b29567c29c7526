"""The engine end to end on a real database, with in-process agents: how a job's
hosts, steps and the job itself end in every way a host task can end."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import text
from tests.engine.conftest import FAST, FakeLink, Rig, script_job

from jobfleet.domain import protocol
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import GseErrorCode, HostStatus, RunStatus, StepType
from jobfleet.store.database import now_ms
from jobfleet.store.jobs import JobLease


async def host_statuses(rig: Rig, step_id: int) -> dict[int, int]:
    return {r.bk_host_id: r.status for r in await rig.store.hosts(step_id, 0)}


async def test_every_host_answers_and_the_job_succeeds(rig: Rig) -> None:
    links = [rig.agents.connect(h) for h in (1, 2, 3)]
    job_id, (step_id,) = await rig.engine.submit(script_job([1, 2, 3]), start=True)
    assert await rig.wait_finished(job_id) == RunStatus.SUCCESS
    assert await host_statuses(rig, step_id) == dict.fromkeys((1, 2, 3), HostStatus.SUCCESS)
    step = await rig.store.step(step_id)
    assert step is not None and step.status == RunStatus.SUCCESS and step.end_time
    for link in links:
        (run,) = [m for m in link.sent if m["t"] == protocol.RUN]
        assert run["id"] == protocol.task_id(step_id, 0, link.bk_host_id)
        assert run["script"] == "echo hi" and run["account"] == "root"
        # output and the final result were both acknowledged once stored
        assert sorted(seq for _, seq in link.acked()) == [1, 2]


async def test_a_failing_host_fails_the_step_and_stops_the_job(rig: Rig) -> None:
    rig.agents.connect(1)
    rig.agents.connect(2, behaviour=lambda m: 3)
    job_id, (first, second) = await rig.engine.submit(script_job([1, 2], steps=2), start=True)
    assert await rig.wait_finished(job_id) == RunStatus.FAIL
    statuses = await host_statuses(rig, first)
    assert statuses == {1: HostStatus.SUCCESS, 2: HostStatus.SCRIPT_NOT_ZERO_EXIT_CODE}
    # the second step never ran
    later = await rig.store.step(second)
    assert later is not None and later.status == RunStatus.BLANK


async def test_hosts_without_a_live_agent_end_at_once(rig: Rig) -> None:
    rig.agents.connect(1)
    job = script_job([1, 2, 3], no_agent=(3,))
    job_id, (step_id,) = await rig.engine.submit(job, start=True)
    assert await rig.wait_finished(job_id) == RunStatus.FAIL
    assert await host_statuses(rig, step_id) == {
        1: HostStatus.SUCCESS,
        2: HostStatus.GSE_AGENT_ERROR,
        3: HostStatus.AGENT_NOT_INSTALLED,
    }


async def test_terminate_kills_what_runs_and_stops_the_job(rig: Rig) -> None:
    links = [rig.agents.connect(h) for h in (1, 2)]
    job_id, (step_id,) = await rig.engine.submit(script_job([1, 2], "sleep 60"), start=True)
    while not all(link.sent for link in links):
        await asyncio.sleep(0.01)
    await rig.engine.terminate(job_id)
    assert await rig.wait_finished(job_id) == RunStatus.STOP_SUCCESS
    assert set((await host_statuses(rig, step_id)).values()) == {
        HostStatus.GSE_TASK_TERMINATE_SUCCESS
    }
    for link in links:
        assert [m["reason"] for m in link.sent if m["t"] == protocol.KILL] == ["terminate"]


async def test_a_host_past_its_timeout_is_killed_and_ends_timed_out(rig: Rig) -> None:
    link = rig.agents.connect(1)
    job_id, (step_id,) = await rig.engine.submit(script_job([1], "sleep 60", timeout=1),
                                                 start=True)
    assert await rig.wait_finished(job_id) == RunStatus.FAIL
    assert await host_statuses(rig, step_id) == {1: HostStatus.TASK_TIMEOUT}
    assert [m["reason"] for m in link.sent if m["t"] == protocol.KILL] == ["timeout"]


async def test_an_agent_that_drops_and_comes_back_gets_its_task_again(rig: Rig) -> None:
    hang = rig.agents.connect(1, behaviour=lambda m: None)
    job_id, (step_id,) = await rig.engine.submit(script_job([1]), start=True)
    while not hang.sent:
        await asyncio.sleep(0.01)
    rig.agents.drop(1)
    # back within the grace period, on a new connection that does not know the task
    back = rig.agents.connect(1)
    assert await rig.wait_finished(job_id) == RunStatus.SUCCESS
    assert [m["t"] for m in back.sent if m["t"] == protocol.RUN] == [protocol.RUN]
    assert await host_statuses(rig, step_id) == {1: HostStatus.SUCCESS}


async def test_an_agent_that_stays_away_ends_its_host_after_the_grace(rig: Rig) -> None:
    hang = rig.agents.connect(1, behaviour=lambda m: None)
    rig.agents.connect(2)
    job_id, (step_id,) = await rig.engine.submit(script_job([1, 2]), start=True)
    while not hang.sent:
        await asyncio.sleep(0.01)
    rig.agents.drop(1)
    assert await rig.wait_finished(job_id) == RunStatus.FAIL
    assert await host_statuses(rig, step_id) == {
        1: HostStatus.GSE_AGENT_ERROR, 2: HostStatus.SUCCESS
    }


async def test_rolling_batches_run_in_order(rig: Rig) -> None:
    order: list[int] = []

    def record(message: dict[str, object]) -> int:
        order.append(int(str(message["id"]).rsplit(":", 1)[1]))
        return 0

    for host in (1, 2, 3, 4):
        rig.agents.connect(host, behaviour=record)
    rolling = {"size": 2, "config": {"expression": "2", "mode": 2}}
    job_id, (step_id,) = await rig.engine.submit(script_job([1, 2, 3, 4], rolling=rolling),
                                                 start=True)
    assert await rig.wait_finished(job_id) == RunStatus.SUCCESS
    assert sorted(order[:2]) == [1, 2] and sorted(order[2:]) == [3, 4]
    step = await rig.store.step(step_id)
    assert step is not None and step.current_batch == 2


async def test_a_job_created_waiting_starts_once(rig: Rig) -> None:
    rig.agents.connect(1)
    job_id, _ = await rig.engine.submit(script_job([1]), start=False)
    job = await rig.store.job(job_id)
    assert job is not None and job.status == RunStatus.BLANK
    assert await rig.engine.start_job(job_id)
    assert not await rig.engine.start_job(job_id)
    assert await rig.wait_finished(job_id) == RunStatus.SUCCESS


async def test_a_job_terminated_before_it_starts_ends_its_hosts_as_a_terminate_does(
    rig: Rig,
) -> None:
    """Its hosts read as the hosts a terminate ends in a running job: force-terminated
    (403) with GSE's terminated error code beside it, not the code of a finished task."""
    link = rig.agents.connect(1)
    running_id, (running_step,) = await rig.engine.submit(script_job([1], "sleep 60"),
                                                          start=True)
    await _until(lambda: _is(bool(link.sent)))
    waiting_id, (waiting_step,) = await rig.engine.submit(script_job([2, 3]), start=False)
    await rig.engine.terminate(running_id)
    await rig.engine.terminate(waiting_id)
    await rig.wait_finished(running_id)
    assert await rig.wait_finished(waiting_id) == RunStatus.TERMINATED
    (stopped,) = await rig.store.hosts(running_step, 0)
    assert stopped.status == HostStatus.GSE_TASK_TERMINATE_SUCCESS
    for host in await rig.store.hosts(waiting_step, 0):
        assert (host.status, host.error_code, host.total_time) == (
            stopped.status, stopped.error_code, stopped.total_time
        )
        assert host.error_code == GseErrorCode.TERMINATED and host.end_time


async def test_another_node_takes_over_a_job_whose_owner_is_gone(rig: Rig) -> None:
    rig.agents.connect(1)
    job = script_job([1])
    job.values.update(owner_node="dead", lease_until=0, status=int(RunStatus.RUNNING),
                      create_time=now_ms())
    job_id, _ = await rig.store.create(job)
    await rig.engine.recover()
    assert await rig.wait_finished(job_id) == RunStatus.SUCCESS
    # a finished job has no owner any more
    owner = await rig.store.job(job_id)
    assert owner is not None and owner.owner_node is None


async def test_a_terminate_that_comes_as_the_job_ends_leaves_it_ended(rig: Rig) -> None:
    """The API reads the job running, the job ends, then the terminate is made: it must not
    turn the finished job into one that is stopping for ever."""
    rig.agents.connect(1)
    job_id, _ = await rig.engine.submit(script_job([1]), start=True)
    assert await rig.wait_finished(job_id) == RunStatus.SUCCESS
    with pytest.raises(JobError) as raised:
        await rig.engine.terminate(job_id)
    assert raised.value.code == ErrorCode.UNSUPPORTED_OPERATION
    job = await rig.store.job(job_id)
    assert job is not None and job.status == RunStatus.SUCCESS


async def test_a_terminate_taken_between_the_last_step_and_the_end_stops_the_job(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver found every step passed; the terminate is taken before it writes the
    job's end. The operator was told it was taken: the job ends stopped (11), as bk-job
    ends a terminating job whose step no longer runs."""
    rig.agents.connect(1)
    finish = JobLease.finish
    answers: list[JobError | None] = []

    async def terminated_first(lease: JobLease, *args: Any, **kwargs: Any) -> Any:
        if not answers:
            try:
                await rig.engine.terminate(lease.job_id)
                answers.append(None)
            except JobError as error:
                answers.append(error)
        return await finish(lease, *args, **kwargs)

    monkeypatch.setattr(JobLease, "finish", terminated_first)
    job_id, (step_id,) = await rig.engine.submit(script_job([1]), start=True)
    assert await rig.wait_finished(job_id) == RunStatus.STOP_SUCCESS
    assert answers == [None]
    job = await rig.store.job(job_id)
    assert job is not None and job.status == RunStatus.STOP_SUCCESS and job.end_time
    step = await rig.store.step(step_id)
    assert step is not None and step.status == RunStatus.SUCCESS


async def test_a_second_terminate_is_told_the_job_is_terminating(rig: Rig) -> None:
    rig.agents.connect(1)
    job_id, _ = await rig.engine.submit(script_job([1], "sleep 60"), start=True)
    await rig.engine.terminate(job_id)
    with pytest.raises(JobError) as raised:
        await rig.engine.terminate(job_id)
    assert raised.value.code in (ErrorCode.TASK_ALREADY_TERMINATING,
                                 ErrorCode.UNSUPPORTED_OPERATION)
    assert await rig.wait_finished(job_id) == RunStatus.STOP_SUCCESS


async def _refuse_running_hosts(rig: Rig) -> None:
    """The database refuses to mark a host running (a real error, raised by a trigger)."""
    async with rig.db.begin() as conn:
        if rig.db.engine.dialect.name == "sqlite":
            await conn.execute(text(
                "CREATE TRIGGER refuse_running BEFORE UPDATE OF status ON step_hosts "
                "WHEN NEW.status = 7 BEGIN SELECT RAISE(ABORT, 'refused'); END"))
        else:
            await conn.execute(text(
                "CREATE FUNCTION refuse_running() RETURNS trigger AS "
                "$$ BEGIN RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql"))
            await conn.execute(text(
                "CREATE TRIGGER refuse_running BEFORE UPDATE OF status ON step_hosts "
                "FOR EACH ROW WHEN (NEW.status = 7) EXECUTE FUNCTION refuse_running()"))


async def test_a_step_that_raises_ends_with_its_hosts_and_can_be_retried(rig: Rig) -> None:
    rig.agents.connect(1)
    rig.agents.connect(2)
    await _refuse_running_hosts(rig)
    job_id, (step_id,) = await rig.engine.submit(script_job([1, 2]), start=True)
    assert await rig.wait_finished(job_id) == RunStatus.ABNORMAL_STATE
    step = await rig.store.step(step_id)
    assert step is not None and step.status == RunStatus.ABNORMAL_STATE and step.end_time
    assert await host_statuses(rig, step_id) == dict.fromkeys((1, 2), HostStatus.UNKNOWN_ERROR)
    logs = await rig.store.logs(step_id, 0, [1, 2])
    assert all("failed on the server" in text_ for text_ in logs.values()), logs
    # the step takes a retry once the database accepts it again
    async with rig.db.begin() as conn:
        await conn.execute(text("DROP TRIGGER refuse_running"
                                + ("" if rig.db.engine.dialect.name == "sqlite"
                                   else " ON step_hosts")))
    assert await rig.engine.retry_step(step, failed_only=True)
    rig.finished.clear()
    assert await rig.wait_finished(job_id) == RunStatus.SUCCESS


async def test_a_step_that_raises_kills_what_was_sent_even_if_a_kill_fails(rig: Rig) -> None:
    """Host 1's task is out when starting the next batch fails inside the server: it is
    killed; host 3's agent cannot be told (its link raises), which stops nothing."""
    links = {h: rig.agents.connect(h) for h in (1, 3)}

    def broken(message: dict[str, object]) -> None:
        if message["t"] == protocol.KILL:
            raise ConnectionError("agent gone")
        FakeLink.send(links[3], message)

    links[3].send = broken  # type: ignore[method-assign]
    rig.agents.connect(2)
    async with rig.db.begin() as conn:
        if rig.db.engine.dialect.name == "sqlite":
            await conn.execute(text(
                "CREATE TRIGGER refuse_running BEFORE UPDATE OF status ON step_hosts "
                "WHEN NEW.status = 7 AND NEW.bk_host_id = 2 "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"))
        else:
            await conn.execute(text(
                "CREATE FUNCTION refuse_running() RETURNS trigger AS "
                "$$ BEGIN RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql"))
            await conn.execute(text(
                "CREATE TRIGGER refuse_running BEFORE UPDATE OF status ON step_hosts "
                "FOR EACH ROW WHEN (NEW.status = 7 AND NEW.bk_host_id = 2) "
                "EXECUTE FUNCTION refuse_running()"))
    rolling = {"size": 2, "config": {"expression": "2", "execution_mode": 2,
                                     "batch_start_wait_fixed_ms": 100}}
    job_id, (step_id,) = await rig.engine.submit(
        script_job([1, 3, 2], "sleep 60", rolling=rolling), start=True)
    assert await rig.wait_finished(job_id) == RunStatus.ABNORMAL_STATE
    assert await host_statuses(rig, step_id) == dict.fromkeys((1, 2, 3),
                                                               HostStatus.UNKNOWN_ERROR)
    assert [m["reason"] for m in links[1].sent if m["t"] == protocol.KILL] == ["terminate"]


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_resumed_staggered_rollout_in_mode_3_goes_on_where_it_was(rig: Rig) -> None:
    """The node driving a staggered rollout in mode 3 restarts: a batch already started
    does not start again, and a transition an operator confirmed is not asked again."""
    links = {h: rig.agents.connect(h) for h in (1, 2, 3)}
    rolling = {"size": 1, "config": {"expression": "1", "mode": 3, "execution_mode": 2,
                                     "batch_start_wait_fixed_ms": 100}}
    job_id, (step_id,) = await rig.engine.submit(
        script_job([1, 2, 3], "sleep 60", rolling=rolling), start=True)

    def runs(host: int) -> int:
        return sum(1 for m in links[host].sent if m["t"] == protocol.RUN)

    async def parked() -> bool:
        step = await rig.store.step(step_id)
        return step is not None and step.status == RunStatus.WAITING_USER

    async def restart() -> None:
        await rig.engine.runner.stop()
        rig.engine.runner.launch(job_id, recovering=True)

    async def confirm() -> None:
        assert await rig.store.update_step_if(step_id, int(RunStatus.WAITING_USER),
                                              status=int(RunStatus.RUNNING))
        rig.engine.wake_step(step_id)

    # parked before batch 2, batch 1 running: the node restarts, then the operator says go
    await _until(parked)
    await restart()
    await asyncio.sleep(0.3)
    assert await parked()
    await confirm()
    await _until(lambda: _is(runs(2) == 1))
    # parked before batch 3; the operator says go while no node drives the job
    await _until(parked)
    await rig.engine.runner.stop()
    await confirm()
    rig.engine.runner.launch(job_id, recovering=True)
    await _until(lambda: _is(runs(3) == 1))
    job = await rig.store.job(job_id)
    assert job is not None and job.status == RunStatus.RUNNING
    # and once more while every batch runs: nothing starts again, nothing waits
    await restart()
    await asyncio.sleep(0.5)
    step = await rig.store.step(step_id)
    assert step is not None and (step.status, step.current_batch) == (RunStatus.RUNNING, 3)
    assert [runs(h) for h in (1, 2, 3)] == [1, 1, 1]
    # every confirmed batch goes on to its end, and the job with it
    for h in (1, 2, 3):
        (task,) = [m["id"] for m in links[h].sent if m["t"] == protocol.RUN]
        links[h]._finish(task, 0)
    assert await rig.wait_finished(job_id) == RunStatus.SUCCESS
    assert set((await host_statuses(rig, step_id)).values()) == {HostStatus.SUCCESS}


async def _is(value: bool) -> bool:
    return value


async def test_a_resumed_serial_rollout_in_mode_3_asks_once_per_batch(rig: Rig) -> None:
    """Serial: the node restarts after batch 1 ended but before the step parked: the
    next batch still waits for its confirmation; it restarts again while the batch an
    operator let start runs: that batch is not started again."""
    gate = asyncio.Event()

    def when_told(message: dict[str, Any]) -> int | None:
        return 0 if gate.is_set() else None

    links = {h: rig.agents.connect(h, behaviour=when_told) for h in (1, 2)}
    gate.set()
    rolling = {"size": 1, "config": {"expression": "1", "mode": 3}}
    job_id, (step_id,) = await rig.engine.submit(
        script_job([1, 2, 3], "echo", rolling=rolling), start=True)
    await _until(lambda: _wait_status(rig, step_id, RunStatus.WAITING_USER))
    gate.clear()
    await rig.engine.runner.stop()
    # the store as a node that died just before parking left it
    await rig.store.update_step(step_id, status=int(RunStatus.RUNNING), current_batch=1)
    rig.engine.runner.launch(job_id, recovering=True)
    await _until(lambda: _wait_status(rig, step_id, RunStatus.WAITING_USER))
    await asyncio.sleep(0.3)
    assert not [m for m in links[2].sent if m["t"] == protocol.RUN]
    assert await rig.store.update_step_if(step_id, int(RunStatus.WAITING_USER),
                                          status=int(RunStatus.RUNNING))
    rig.engine.wake_step(step_id)
    await _until(lambda: _is(any(m["t"] == protocol.RUN for m in links[2].sent)))
    await rig.engine.runner.stop()
    rig.engine.runner.launch(job_id, recovering=True)
    await asyncio.sleep(0.5)
    step = await rig.store.step(step_id)
    assert step is not None and (step.status, step.current_batch) == (RunStatus.RUNNING, 2)
    assert sum(1 for m in links[2].sent if m["t"] == protocol.RUN) == 1
    await rig.engine.terminate(job_id)
    assert await rig.wait_finished(job_id) == RunStatus.STOP_SUCCESS


async def _wait_status(rig: Rig, step_id: int, status: RunStatus) -> bool:
    step = await rig.store.step(step_id)
    return step is not None and step.status == status


async def test_a_terminated_job_taken_over_ends_the_step_it_was_in(rig: Rig) -> None:
    """The node driving a job dies after the job was marked terminating but before its
    step ended: the node that takes the job over kills the task its host runs and ends
    the step stopped, not left running under a job that says it stopped."""
    link = rig.agents.connect(1)
    job_id, (step_id,) = await rig.engine.submit(script_job([1], "sleep 60"), start=True)
    await _until(lambda: _is(any(m["t"] == protocol.RUN for m in link.sent)))
    await rig.engine.runner.stop()
    assert await rig.store.mark_stopping(job_id)
    rig.engine.runner.launch(job_id, recovering=True)
    assert await rig.wait_finished(job_id) == RunStatus.STOP_SUCCESS
    step = await rig.store.step(step_id)
    assert step is not None and step.status == RunStatus.STOP_SUCCESS
    assert await host_statuses(rig, step_id) == {1: HostStatus.GSE_TASK_TERMINATE_SUCCESS}
    assert [m["reason"] for m in link.sent if m["t"] == protocol.KILL] == ["terminate"]
    # the task was not sent again to be killed
    assert sum(1 for m in link.sent if m["t"] == protocol.RUN) == 1


async def test_a_rollout_terminated_while_parked_does_not_show_the_waiting_batch(
        rig: Rig) -> None:
    """Mode 3, staggered: terminated while parked before batch 2, the step names
    batch 1 as its current one; batch 2's host never started."""
    links = {h: rig.agents.connect(h) for h in (1, 2)}
    rolling = {"size": 1, "config": {"expression": "1", "mode": 3, "execution_mode": 2,
                                     "batch_start_wait_fixed_ms": 100}}
    job_id, (step_id,) = await rig.engine.submit(
        script_job([1, 2], "sleep 60", rolling=rolling), start=True)
    await _until(lambda: _wait_status(rig, step_id, RunStatus.WAITING_USER))
    await rig.engine.terminate(job_id)
    assert await rig.wait_finished(job_id) == RunStatus.STOP_SUCCESS
    step = await rig.store.step(step_id)
    assert step is not None and (step.status, step.current_batch) == (
        RunStatus.STOP_SUCCESS, 1)
    assert await host_statuses(rig, step_id) == {
        1: HostStatus.GSE_TASK_TERMINATE_SUCCESS, 2: HostStatus.WAITING}
    assert not [m for m in links[2].sent if m["t"] == protocol.RUN]


async def test_a_rollout_parked_by_an_earlier_release_is_confirmed_once(rig: Rig) -> None:
    """An earlier release parked a mode 3 step with ``current_batch`` naming the batch
    that had started, not the one waiting: after an upgrade one go-ahead starts it."""
    links = {h: rig.agents.connect(h) for h in (1, 2, 3)}
    rolling = {"size": 1, "config": {"expression": "1", "mode": 3, "execution_mode": 2,
                                     "batch_start_wait_fixed_ms": 100}}
    job_id, (step_id,) = await rig.engine.submit(
        script_job([1, 2, 3], "sleep 60", rolling=rolling), start=True)
    await _until(lambda: _wait_status(rig, step_id, RunStatus.WAITING_USER))
    await rig.engine.runner.stop()
    await rig.store.update_step(step_id, current_batch=1)
    rig.engine.runner.launch(job_id, recovering=True)
    await asyncio.sleep(0.3)
    assert await rig.store.update_step_if(step_id, int(RunStatus.WAITING_USER),
                                          status=int(RunStatus.RUNNING))
    rig.engine.wake_step(step_id)
    await _until(lambda: _is(any(m["t"] == protocol.RUN for m in links[2].sent)))
    step = await rig.store.step(step_id)
    assert step is not None and step.current_batch == 2
    assert sum(1 for m in links[1].sent if m["t"] == protocol.RUN) == 1
    await rig.engine.terminate(job_id)
    assert await rig.wait_finished(job_id) == RunStatus.STOP_SUCCESS


async def test_a_resumed_rollout_keeps_the_deadline_of_the_batch_under_way(rig: Rig) -> None:
    """The batch under way started long ago (as stored): resumed, it is past its
    deadline at once rather than given the whole timeout again from the resume."""
    link = rig.agents.connect(1)
    rig.agents.connect(2)
    rolling = {"size": 1, "config": {"expression": "1", "execution_mode": 1}}
    job_id, (step_id,) = await rig.engine.submit(
        script_job([1, 2], "sleep 60", timeout=60, rolling=rolling), start=True)
    await _until(lambda: _is(any(m["t"] == protocol.RUN for m in link.sent)))
    await rig.engine.runner.stop()
    async with rig.db.begin() as conn:
        await conn.execute(text(
            "UPDATE step_hosts SET start_time = start_time - 3600000 WHERE bk_host_id = 1"))
    rig.engine.runner.launch(job_id, recovering=True)

    async def timed_out() -> bool:
        return (await host_statuses(rig, step_id)).get(1) == HostStatus.TASK_TIMEOUT
    await _until(timed_out)
    assert (await rig.wait_finished(job_id)).finished


async def test_a_skip_sent_over_the_bus_by_a_node_of_an_earlier_release_is_taken(
        rig: Rig) -> None:
    """Mid-upgrade, a node of an earlier release that takes a skip of a termination
    (operation 12) asks the driving node over the bus: the driving node ends the wait."""
    link = rig.agents.connect(1)
    job_id, (step_id,) = await rig.engine.submit(script_job([1], "sleep 60"), start=True)
    await _until(lambda: _is(any(m["t"] == protocol.RUN for m in link.sent)))
    link.known.clear()  # the agent no longer answers a kill
    await rig.engine.terminate(job_id)
    await _until(lambda: _wait_status(rig, step_id, RunStatus.STOPPING))
    rig.engine.signals.bus.send("n1", {"k": "skip", "step": step_id})
    assert await rig.wait_finished(job_id) == RunStatus.STOP_SUCCESS
    async with rig.db.begin() as conn:
        notes = (await conn.execute(text(
            "SELECT content FROM log_chunks WHERE step_instance_id = :s"), {"s": step_id})).all()
    assert [n.content for n in notes] == ["jobfleet: the termination was skipped by an operator\n"]


async def test_a_terminate_taken_elsewhere_as_a_rollout_parks_is_not_overwritten(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node (no bus between them) marks the job terminating just as the driving
    node parks its rolling step: the job stays terminating, so the driving node finds
    the terminate in the store and ends the job, rather than waiting for a go-ahead."""
    rig.agents.connect(1)
    rig.agents.connect(2)
    rolling = {"size": 1, "config": {"expression": "1", "mode": 3}}
    job_id, (step_id,) = await rig.engine.submit(
        script_job([1, 2], "echo", rolling=rolling), start=True)
    _terminate_as_it_parks(rig, job_id, monkeypatch)
    assert await rig.wait_finished(job_id) == RunStatus.STOP_SUCCESS
    job = await rig.store.job(job_id)
    assert job is not None and job.status == RunStatus.STOP_SUCCESS
    step = await rig.store.step(step_id)
    assert step is not None and (step.status, step.current_batch) == (
        RunStatus.STOP_SUCCESS, 1)


def _terminate_as_it_parks(rig: Rig, job_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node marks the job terminating right after its driver parks a step."""
    parked = JobLease.update_step

    async def racing(lease: JobLease, step: int, **values: Any) -> None:
        await parked(lease, step, **values)
        if values.get("status") == RunStatus.WAITING_USER:
            assert await rig.store.mark_stopping(job_id)

    monkeypatch.setattr(JobLease, "update_step", racing)


async def test_a_terminate_taken_elsewhere_as_a_confirmation_parks_is_not_overwritten(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """As for a rolling step: a confirmation step that starts waiting just as another
    node marks the job terminating leaves the job terminating, and the job ends."""
    job = script_job([1])
    job.steps[0].type = int(StepType.MANUAL_CONFIRM)
    job.steps[0].hosts = []
    job_id, (step_id,) = await rig.engine.submit(job, start=False)
    _terminate_as_it_parks(rig, job_id, monkeypatch)
    assert await rig.engine.start_job(job_id)
    assert await rig.wait_finished(job_id) == RunStatus.STOP_SUCCESS
    step = await rig.store.step(step_id)
    assert step is not None and step.status == RunStatus.STOP_SUCCESS


async def test_a_driver_that_dies_with_the_database_is_resumed_by_its_node(
        rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database goes away under a job: its driver fails, and so does its attempt to
    end the job. The job stays leased to this node, which says so and resumes it once the
    database answers, to the job's true end."""
    rig.agents.connect(1)
    real_steps = rig.store.steps
    away = True

    async def steps(job_id: int) -> Any:
        if away:
            raise ConnectionRefusedError("the database is away")
        return await real_steps(job_id)
    monkeypatch.setattr(rig.store, "steps", steps)
    job_id, _ = await rig.engine.submit(script_job([1]), start=True)
    for _ in range(100):
        if not rig.engine.runner.running(job_id):
            break
        await asyncio.sleep(0.02)
    assert not rig.engine.runner.running(job_id)
    job = await rig.store.job(job_id)
    assert job is not None and job.status == RunStatus.RUNNING
    assert f"job_driver_died job={job_id}" in caplog.text
    away = False
    await rig.engine.recover()
    assert await rig.wait_finished(job_id) == RunStatus.SUCCESS


async def test_a_moment_without_the_database_does_not_end_a_job_abnormal(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database drops one connection as the job's steps are read at its end, and
    answers again at once: the job is not ended abnormal (9) for it, and nothing it ran
    is killed; its node resumes it to its true end."""
    rig.agents.connect(1)
    real_steps = rig.store.steps
    calls = 0

    async def steps(job_id: int) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # the read after the last step, before the job's end is written
            raise ConnectionResetError("the connection to the database was reset")
        return await real_steps(job_id)
    monkeypatch.setattr(rig.store, "steps", steps)
    job_id, _ = await rig.engine.submit(script_job([1]), start=True)
    for _ in range(200):
        if calls >= 2 and not rig.engine.runner.running(job_id):
            break
        await asyncio.sleep(0.02)
    job = await rig.store.job(job_id)
    assert job is not None and job.status == RunStatus.RUNNING
    await rig.engine.recover()
    assert await rig.wait_finished(job_id) == RunStatus.SUCCESS


async def test_a_step_waiting_through_a_database_outage_logs_it_once(
        rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiting step looks at the store every reconcile interval (0.2 s here): while the
    database is away that is one line when it starts and one when it ends, not a line
    per look."""
    link = rig.agents.connect(1, lambda message: None)
    job_id, _ = await rig.engine.submit(script_job([1]), start=True)
    for _ in range(200):
        if any(m["t"] == protocol.RUN for m in link.sent):
            break
        await asyncio.sleep(0.02)
    task = next(m["id"] for m in link.sent if m["t"] == protocol.RUN)
    real_hosts = rig.store.hosts
    away = True

    async def hosts(*args: Any, **kwargs: Any) -> Any:
        if away:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        return await real_hosts(*args, **kwargs)
    monkeypatch.setattr(rig.store, "hosts", hosts)
    with caplog.at_level("INFO", logger="jobfleet.engine.batches"):
        await asyncio.sleep(1.5)
        away = False
        await asyncio.sleep(0.6)
    link._finish(task, 0)
    assert await rig.wait_finished(job_id) == RunStatus.SUCCESS
    lines = [r.getMessage() for r in caplog.records if "step_check_failed" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("step_check_failed step=") and (
        "reason=database_unreachable error=ConnectionRefusedError" in lines[0]), lines
    assert lines[1].startswith("database_back loop=step_check_failed after="), lines


async def test_a_staggered_pause_is_not_a_stalled_driver(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A staggered rollout waits up to an hour between batches: the driver says so, and
    the lease keeper does not take the wait for a driver stuck on an await."""
    # the keeper judges a driver stalled after 0.6 s without a turn, three
    # reconcile_intervals: the pause below is far longer
    monkeypatch.setattr(rig.engine.leases, "settings", replace(FAST, driver_stall=0.6))
    links = {h: rig.agents.connect(h) for h in (1, 2)}
    # an hour, as a real rollout may wait: the checks fall inside it however slowly a
    # loaded machine runs this test, which a pause of a second or two did not
    rolling = {"size": 1, "config": {"expression": "1", "execution_mode": 2,
                                     "batch_start_wait_fixed_ms": 3_600_000}}
    job_id, _ = await rig.engine.submit(script_job([1, 2], rolling=rolling), start=True)
    await _until(lambda: _is(any(m["t"] == protocol.RUN for m in links[1].sent)))
    # past several reconcile_intervals without a turn, and several rounds of the keeper
    await asyncio.sleep(1.5)
    assert rig.engine.runner.stalled(0.6) == {}
    assert rig.engine.runner.running(job_id), "the lease keeper abandoned a paused driver"
    assert not links[2].sent
    # the driver still answers in its pause: a terminate ends the job there
    await rig.engine.terminate(job_id)
    assert await rig.wait_finished(job_id) == RunStatus.STOP_SUCCESS
    assert not links[2].sent


def _disk_full(rig: Rig, monkeypatch: pytest.MonkeyPatch, what: str) -> Callable[[], None]:
    """``rig.store.<what>`` refused as a full disk refuses a write; the result frees it."""
    real = getattr(rig.store, what)
    full = True

    async def refused(*args: Any, **kw: Any) -> Any:
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return await real(*args, **kw)
    monkeypatch.setattr(rig.store, what, refused)

    def free() -> None:
        nonlocal full
        full = False
    return free


async def test_jobs_timed_out_while_the_disk_is_full_are_not_each_taken_for_stalled(
        rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Their hosts' timeout waits in the writer with every result until space is freed:
    the drivers wait alive, no line and no lapsed lease per job, and every job ends
    once the disk takes writes again."""
    rig.agents.connect(1)
    # a turn of a driver that waits on its hosts includes a read of the store, which 20
    # drivers and a writer retrying its writes make take over a second on a loaded
    # machine: driver_stall leaves room for that
    monkeypatch.setattr(rig.engine.leases, "settings", replace(FAST, driver_stall=3.0))
    free = _disk_full(rig, monkeypatch, "ingest")
    ids = [(await rig.engine.submit(script_job([1], "sleep", timeout=1), start=True))[0]
           for _ in range(20)]
    # the timeout, its slack and twice driver_stall
    await asyncio.sleep(7.5)
    stalled = [r.getMessage() for r in caplog.records if "job_driver_stalled" in r.getMessage()]
    assert not stalled, stalled
    free()
    # the writer tries again after a backoff that grew through the outage, then writes
    # the results of all 20 at once
    for job_id in ids:
        assert await rig.wait_finished(job_id, timeout=30) == RunStatus.FAIL


async def test_drivers_whose_writes_a_full_disk_refuses_are_one_line_and_all_resumed(
        rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """One line for them all, the jobs resumed once the disk takes writes, and a line
    when it is over."""
    caplog.set_level(logging.INFO, logger="jobfleet.engine.runner")
    rig.agents.connect(1)
    free = _disk_full(rig, monkeypatch, "steps")
    ids = [(await rig.engine.submit(script_job([1]), start=True))[0] for _ in range(50)]
    for _ in range(200):
        if not any(rig.engine.runner.running(j) for j in ids):
            break
        await asyncio.sleep(0.02)
    died = [r.getMessage() for r in caplog.records if "job_driver_died" in r.getMessage()]
    assert len(died) == 1 and "disk=ENOSPC" in died[0], died
    free()
    await rig.engine.recover()
    for job_id in ids:
        assert await rig.wait_finished(job_id) == RunStatus.SUCCESS
    back = [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("database_back loop=job_driver_died")]
    # the lease keeper may have launched some again meanwhile, to die again
    assert len(back) == 1 and int(back[0].split("failures=")[1]) >= len(ids), back


async def test_a_terminate_in_the_store_when_a_step_ends_keeps_the_next_from_starting(
        rig: Rig) -> None:
    """A terminate taken while a step's last host answers is in the store before its
    driver is told (another node took it, or the same node's signal comes a moment
    later): the next step does not start."""
    held: list[str] = []

    def hold(message: dict[str, Any]) -> int | None:
        held.append(message["id"])
        return None

    link = rig.agents.connect(1, behaviour=hold)
    job_id, (_first, second) = await rig.engine.submit(script_job([1], steps=2), start=True)
    await _until(lambda: _is(bool(held)))
    assert await rig.store.mark_stopping(job_id)
    link._done(held[0], HostStatus.SUCCESS, 0)
    assert await rig.wait_finished(job_id) == RunStatus.STOP_SUCCESS
    later = await rig.store.step(second)
    assert later is not None and later.status == RunStatus.BLANK
    assert len(held) == 1
