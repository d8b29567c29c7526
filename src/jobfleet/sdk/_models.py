"""The plain values the SDK hands back: credentials, per-host results, job results, progress."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from jobfleet.domain.status import (
    HOST_STATUS_DESC,
    FileLogMode,
    FileLogStatus,
    HostStatus,
    RunStatus,
)


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


@dataclass(frozen=True)
class Target:
    """Hosts named other than by IP or id, for a bk-job ``target_server``: dynamic
    groups by id, and topology nodes as ``(node_type, id)`` with node_type ``module``,
    ``set`` or ``biz``. Give it as ``target=`` next to (or instead of) hosts/host_ids."""

    dynamic_groups: tuple[str, ...] = ()
    topo_nodes: tuple[tuple[str, int], ...] = ()
    host_ids: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.dynamic_groups or self.topo_nodes or self.host_ids)

    def target_server(self) -> dict[str, Any]:
        server: dict[str, Any] = {}
        if self.host_ids:
            server["host_id_list"] = list(dict.fromkeys(int(h) for h in self.host_ids))
        if self.dynamic_groups:
            server["dynamic_group_list"] = [{"id": g} for g in dict.fromkeys(self.dynamic_groups)]
        if self.topo_nodes:
            server["topo_node_list"] = [
                {"node_type": t, "id": int(i)} for t, i in dict.fromkeys(self.topo_nodes)
            ]
        return server


@dataclass
class FileLog:
    """One file of a file step on one host (a ``file_logs`` entry).

    Mode 0 rows are a source host sending a file to the server, mode 1 rows a target
    host writing one. ``size`` and ``speed`` are bytes and bytes per second, read back
    from the server's rounded text ("1.5 MB"), so they are close, not exact.
    """

    mode: int
    src_ip: str
    src_cloud_id: int
    src_path: str
    status: int
    dest_ip: str | None = None
    dest_path: str | None = None
    log: str = ""
    size: int = 0
    speed: int = 0
    progress: int = 0

    @property
    def finished(self) -> bool:
        return self.status in (FileLogStatus.SUCCESS, FileLogStatus.FAILED)

    @property
    def succeeded(self) -> bool:
        return self.status == FileLogStatus.SUCCESS

    @property
    def bytes_done(self) -> int:
        return self.size if self.succeeded else self.size * min(self.progress, 100) // 100


@dataclass
class HostResult:
    """One host's outcome in a step (a ``step_ip_result_list`` entry plus its log).

    For file steps ``file_logs`` holds the host's files; ``log`` joins their messages.
    """

    bk_host_id: int | None
    ip: str
    bk_cloud_id: int
    status: int
    exit_code: int | None
    tag: str = ""
    log: str = ""
    file_logs: list[FileLog] = field(default_factory=list)

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


@dataclass(frozen=True)
class TransferProgress(JobProgress):
    """``JobProgress`` of a file step plus the bytes the target hosts have written.

    ``bytes_total`` is the size of every file times the hosts receiving it, known once
    the server has gathered the sources; until then it is 0.
    """

    bytes_done: int = 0
    bytes_total: int = 0


@dataclass
class TransferResult(ExecutionResult):
    """``ExecutionResult`` of a file transfer: ``hosts`` are the targets.

    ``uploads`` are the server's answers for the local files sent first
    (``{file_id, name, size, sha256, path}``); ``source_logs`` are the host sources'
    mode 0 file logs, which tell why a source failed.
    """

    uploads: list[dict[str, Any]] = field(default_factory=list)
    source_logs: list[FileLog] = field(default_factory=list)

    @property
    def bytes_total(self) -> int:
        return sum(
            f.size for h in self.hosts for f in h.file_logs if f.mode == FileLogMode.DOWNLOAD
        )

    @property
    def bytes_done(self) -> int:
        return sum(
            f.bytes_done for h in self.hosts for f in h.file_logs if f.mode == FileLogMode.DOWNLOAD
        )
