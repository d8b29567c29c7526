"""The rules that move hosts, steps and jobs between statuses.

Every status change in jobfleet goes through one of these functions, so the
engine, the recovery path and the API agree on what a set of host results means.
"""

from __future__ import annotations

from collections.abc import Iterable

from jobfleet.domain.status import FINISHED_RUN_STATUSES, HostStatus, RunStatus

# Step statuses after which the job may go on to the next step.
STEP_PASSED = frozenset({RunStatus.SUCCESS, RunStatus.SKIPPED, RunStatus.IGNORE_ERROR})


def step_status_from_hosts(statuses: Iterable[int], *, ignore_error: bool = False) -> RunStatus:
    """The final status of a step whose hosts have all finished."""
    if all(normalize_host_status(s).succeeded for s in statuses):
        return RunStatus.SUCCESS
    return RunStatus.IGNORE_ERROR if ignore_error else RunStatus.FAIL


def job_status_from_steps(statuses: Iterable[int]) -> RunStatus:
    """The status of a job whose steps are as given (in order)."""
    seen = [RunStatus(s) for s in statuses]
    for s in seen:
        if s in (RunStatus.STOPPING, RunStatus.WAITING_USER, RunStatus.ROLLING_WAITING):
            return s
        if s in FINISHED_RUN_STATUSES and s not in STEP_PASSED:
            return s
        if s in (RunStatus.RUNNING, RunStatus.BLANK):
            return RunStatus.RUNNING if s is RunStatus.RUNNING else RunStatus.BLANK
    return RunStatus.SUCCESS


def normalize_host_status(value: int) -> HostStatus:
    """Unknown numbers map to 0, as bk-job does."""
    try:
        return HostStatus(value)
    except ValueError:
        return HostStatus.UNKNOWN_ERROR


def exit_status(exit_code: int) -> HostStatus:
    return HostStatus.SUCCESS if exit_code == 0 else HostStatus.SCRIPT_NOT_ZERO_EXIT_CODE
