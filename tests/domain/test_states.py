from jobfleet.domain.states import (
    job_status_from_steps,
    normalize_host_status,
    step_status_from_hosts,
)
from jobfleet.domain.status import HostStatus, RunStatus


def test_step_succeeds_only_when_every_host_succeeded() -> None:
    assert step_status_from_hosts([9, 9, 3]) is RunStatus.SUCCESS
    assert step_status_from_hosts([9, 104]) is RunStatus.FAIL
    assert step_status_from_hosts([9, 310], ignore_error=True) is RunStatus.IGNORE_ERROR
    assert step_status_from_hosts([9, 777]) is RunStatus.FAIL


def test_job_status_follows_the_first_step_that_did_not_pass() -> None:
    assert job_status_from_steps([3, 6, 5]) is RunStatus.SUCCESS
    assert job_status_from_steps([3, 4, 1]) is RunStatus.FAIL
    assert job_status_from_steps([3, 2, 1]) is RunStatus.RUNNING
    assert job_status_from_steps([3, 7]) is RunStatus.WAITING_USER
    assert job_status_from_steps([11, 1]) is RunStatus.STOP_SUCCESS


def test_finished_sets_match_the_reference() -> None:
    finished = {s for s in RunStatus if s.finished}
    assert {int(s) for s in finished} == {3, 4, 5, 6, 8, 9, 11, 13, 14}
    assert not HostStatus.WAITING.finished and not HostStatus.RUNNING.finished
    assert HostStatus.GSE_AGENT_ERROR.finished


def test_unknown_host_status_maps_to_zero() -> None:
    assert normalize_host_status(12345) is HostStatus.UNKNOWN_ERROR
    assert normalize_host_status(104) is HostStatus.SCRIPT_NOT_ZERO_EXIT_CODE
