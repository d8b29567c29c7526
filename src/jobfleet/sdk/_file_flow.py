"""The I/O-free steps of uploads, downloads and transfers: local files, checks of what
was sent or received, the transfer request and byte counts across polls."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobfleet.domain.status import FileLogMode
from jobfleet.sdk._errors import JobApiError
from jobfleet.sdk._flow import StepLogs, parse_host, target_server
from jobfleet.sdk._models import (
    ExecutionResult,
    FileLog,
    HostResult,
    JobProgress,
    Target,
    TransferProgress,
    TransferResult,
)


@dataclass(frozen=True)
class LocalFile:
    """A file on this machine about to be uploaded, as ``name`` on the server."""

    path: Path
    name: str
    size: int


def local_file(path: str | os.PathLike[str], name: str | None = None) -> LocalFile:
    source = Path(path)
    info = source.stat()
    if source.is_dir():
        raise IsADirectoryError(f"{source} is a directory; upload files one by one")
    return LocalFile(source, name or source.name, info.st_size)


def local_files(paths: Sequence[str | os.PathLike[str]]) -> list[LocalFile]:
    """The files to upload, checked before any byte is sent: they exist, and no two
    share a name (they would land on the same target path)."""
    files = [local_file(p) for p in paths]
    seen: dict[str, Path] = {}
    for item in files:
        if item.name in seen:
            raise ValueError(
                f"{seen[item.name]} and {item.path} have the same name {item.name!r}: "
                "on the target one would overwrite the other"
            )
        seen[item.name] = item.path
    return files


def upload_query(name: str, biz: int | str | None) -> tuple[tuple[str, str], ...]:
    query = [("name", name)]
    if biz is not None:
        query.append(("bk_biz_id", str(biz)))
    return tuple(query)


def shrunk(item: LocalFile) -> JobApiError:
    return JobApiError(-1, f"upload of {item.path}: the file shrank while it was sent")


def checked_upload(
    answer: dict[str, Any], item: LocalFile, sent: int, sha256: str
) -> dict[str, Any]:
    """The server's answer to an upload, once it agrees with what was sent."""
    if not answer.get("path") or not answer.get("file_id"):
        raise JobApiError(-1, f"upload of {item.path}: the answer names no file: {answer!r}")
    if sent != item.size:
        raise shrunk(item)
    if answer.get("size") not in (None, sent) or answer.get("sha256") not in (None, sha256):
        raise JobApiError(
            -1, f"upload of {item.path}: the server stored different bytes than were sent"
        )
    return answer


# what a download may write when no max_bytes is given: a server that sends a file
# chunked, with no length, could otherwise fill the disk
MAX_DOWNLOAD_BYTES = 16 * 1024**3


def too_large(file_id: str, max_bytes: int) -> JobApiError:
    return JobApiError(
        -1,
        f"download of file {file_id}: the file is larger than {max_bytes} bytes "
        f"(download_file's max_bytes)",
    )


def check_download(file_id: str, expected: str | None, actual: str) -> None:
    if expected and expected.lower() != actual:
        raise JobApiError(
            -1,
            f"download of file {file_id}: checksum mismatch (sha256 {actual}, expected {expected})",
        )


def temp_path(dest: Path) -> Path:
    """A fresh name beside ``dest``, so the final rename stays on one file system."""
    return dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")


def transfer_request(
    *,
    local: bool,
    remote_files: Sequence[tuple[Sequence[str], Sequence[str]]] | None,
    hosts: Sequence[str] | None,
    host_ids: Sequence[int] | None,
    bk_cloud_id: int,
    target_path: str,
    account: str,
    transfer_mode: int,
    upload_speed_limit: int | None,
    download_speed_limit: int | None,
    timeout: int,
    task_name: str | None,
    target: Target | None = None,
) -> dict[str, Any]:
    """``fast_transfer_file`` parameters with the host sources; the uploaded files are
    added by ``with_uploads`` once they are on the server."""
    if transfer_mode not in (1, 2):
        raise ValueError(f"transfer_mode {transfer_mode}: use 1 (strict) or 2 (force)")
    sources: list[dict[str, Any]] = []
    for paths, ips in remote_files or ():
        if not paths or not ips or isinstance(paths, str) or isinstance(ips, str):
            raise ValueError("each remote source is (list of file paths, list of source host IPs)")
        sources.append(
            {
                "file_list": list(paths),
                "account": {"alias": account},
                "server": {"ip_list": [parse_host(ip, bk_cloud_id) for ip in ips]},
                "file_type": 1,
            }
        )
    if not sources and not local:
        raise ValueError("nothing to transfer: give local files or remote_files")
    return {
        "file_source_list": sources,
        "file_target_path": target_path,
        "account_alias": account,
        "target_server": target_server(hosts, host_ids, bk_cloud_id, target),
        "transfer_mode": transfer_mode,
        "upload_speed_limit": upload_speed_limit,
        "download_speed_limit": download_speed_limit,
        "timeout": timeout,
        "task_name": task_name,
    }


def with_uploads(request: dict[str, Any], uploads: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if not uploads:
        return request
    source = {"file_list": [str(u["path"]) for u in uploads], "file_type": 2}
    return {**request, "file_source_list": [*request["file_source_list"], source]}


def source_ips(
    remote_files: Sequence[tuple[Sequence[str], Sequence[str]]] | None, bk_cloud_id: int
) -> list[dict[str, Any]]:
    """The distinct source hosts of ``remote_files`` as bk-job ``ip`` objects."""
    seen: dict[tuple[int, str], dict[str, Any]] = {}
    for _paths, ips in remote_files or ():
        for ip in ips:
            host = parse_host(ip, bk_cloud_id)
            seen.setdefault((host["bk_cloud_id"], host["ip"]), host)
    return list(seen.values())


def upload_logs(logs: StepLogs) -> list[FileLog]:
    return [f for files in logs.files.values() for f in files if f.mode == FileLogMode.UPLOAD]


class ByteTally:
    """Bytes written by the targets of a file step, across polls.

    A host's file logs stop changing once the host is finished, so each poll asks only
    for the hosts that were still going at the previous one.
    """

    def __init__(self) -> None:
        self._final: dict[int, list[FileLog]] = {}
        self._live: dict[int, list[FileLog]] = {}

    def pending(self, hosts: Sequence[HostResult]) -> list[int]:
        return [
            h.bk_host_id
            for h in hosts
            if h.bk_host_id is not None and h.bk_host_id not in self._final
        ]

    def record(self, hosts: Sequence[HostResult], logs: StepLogs) -> None:
        """Take the file logs read after the status that ``hosts`` come from."""
        finished = {h.bk_host_id for h in hosts if h.finished}
        for host_id, files in logs.files.items():
            downloads = [f for f in files if f.mode == FileLogMode.DOWNLOAD]
            if host_id in finished:
                self._final[host_id] = downloads
                self._live.pop(host_id, None)
            else:
                self._live[host_id] = downloads

    def progress(self, base: JobProgress) -> TransferProgress:
        rows = [f for group in (self._final, self._live) for files in group.values() for f in files]
        return TransferProgress(
            **vars(base),
            bytes_done=sum(f.bytes_done for f in rows),
            bytes_total=sum(f.size for f in rows),
        )


def transfer_result(
    result: ExecutionResult, uploads: list[dict[str, Any]], source_logs: list[FileLog]
) -> TransferResult:
    return TransferResult(**vars(result), uploads=uploads, source_logs=source_logs)


def fetch_request(
    paths: Sequence[str],
    *,
    hosts: Sequence[str] | None,
    host_ids: Sequence[int] | None,
    bk_cloud_id: int,
    account: str,
    timeout: int | None,
    biz: int | str | None,
    target: Target | None = None,
) -> dict[str, Any]:
    if isinstance(paths, str) or not paths:
        raise ValueError("give a list of absolute file paths to fetch")
    return {
        "file_list": list(paths),
        "account_alias": account,
        "target_server": target_server(hosts, host_ids, bk_cloud_id, target),
        "timeout": timeout,
        "bk_biz_id": biz,
    }
