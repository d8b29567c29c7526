"""The plain values the SDK hands back: credentials, per-host results, job results, progress."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from jobfleet.domain.status import HOST_STATUS_DESC, HostStatus, RunStatus


@dataclass(frozen=True)
class Credentials:
    """An app acting for a user, as sent in the ``X-Bkapi-Authorization`` header."""

    app_code: str
    app_secret: str = field(repr=False)
    username: str

    def header_value(self) -> str:
        return json.dumps(
            {
                "bk_app_code": self.app_code,
                "bk_app_secret": self.app_secret,
                "bk_username": self.username,
            },
            separators=(",", ":"),
        )


@dataclass
class HostResult:
    """One host's outcome in a step (a ``step_ip_result_list`` entry plus its log)."""

    bk_host_id: int | None
    ip: str
    bk_cloud_id: int
    status: int
    exit_code: int | None
    tag: str = ""
    log: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status in (HostStatus.SUCCESS, HostStatus.LAST_SUCCESS)

    @property
    def finished(self) -> bool:
        return self.status not in (HostStatus.WAITING, HostStatus.RUNNING)

    @property
    def status_name(self) -> str:
        # bk-job maps numbers it does not know to "unknown error" (0)
        return HOST_STATUS_DESC.get(self.status, HOST_STATUS_DESC[0])


@dataclass
class ExecutionResult:
    """A job's final (or current) state and every host's result and log for one step."""

    job_instance_id: int
    step_instance_id: int
    status: int
    finished: bool
    hosts: list[HostResult]
    name: str = ""

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.SUCCESS

    @property
    def failed_hosts(self) -> list[HostResult]:
        return [h for h in self.hosts if h.finished and not h.succeeded]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


@dataclass(frozen=True)
class JobProgress:
    """Host counts of the watched step after one poll.

    ``done`` counts hosts in a final state (succeeded or not), ``failed`` the finished
    ones that did not succeed, ``running`` those executing now; the rest are waiting.
    """

    job_instance_id: int
    status: int
    total: int
    done: int
    failed: int
    running: int
    elapsed: float
    finished: bool

    @property
    def waiting(self) -> int:
        return self.total - self.done - self.running
