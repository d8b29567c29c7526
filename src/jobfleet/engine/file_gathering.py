"""The first half of a file step: the source files, made ready on the server.

Files that operators uploaded, or that ``push_config_file`` carried, are blobs
already. For a source host, its agent is asked to list what the patterns name
(``file_list``), then to upload those files as blobs (``file_upload``); every file
gets an upload row in the step's file log. One source that fails fails the step
(``SourceFailure``): nothing is sent half-way.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Row

from jobfleet.domain import protocol
from jobfleet.domain.paths import LOCAL_SOURCE, source_label
from jobfleet.domain.status import HostStatus
from jobfleet.engine.rpc import AgentRpc, AgentUnavailable
from jobfleet.store.blobs import COMPLETE, BlobStore
from jobfleet.store.filelogs import FAILED, SUCCESS, UPLOAD, UPLOADING, FileLogStore, update_row
from jobfleet.store.inventory import Inventory

log = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass
class Prepared:
    """A file (or directory entry) ready on the server for the targets."""

    label: str
    src_host_id: int | None
    src_ip: str | None
    src_cloud_id: int | None
    src_path: str
    rel: str
    is_dir: bool
    mode: int
    blob_id: str | None = None
    size: int | None = None
    sha256: str | None = None


@dataclass
class Gathered:
    """What one source host produced: files, or the status that failed it."""

    host_id: int | None
    files: list[Prepared] = field(default_factory=list)
    status: int | None = None
    message: str = ""


class ThirdPartyDownloads(Protocol):
    """Fetches the files of a third-party source (``engine.file_sources``)."""

    async def download(
        self,
        step: Row[Any],
        source: dict[str, Any],
        host_ids: list[int],
        first_seq: int,
        deadline: float,
    ) -> Gathered: ...


# the file log rows of third-party downloads, on each target, come after a host's own
THIRD_PARTY_SEQ = 500_000


class SourceFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def speed_limit(mb_per_second: Any) -> int | None:
    if isinstance(mb_per_second, int | float) and mb_per_second > 0:
        return int(mb_per_second * MB)
    return None


class SourceGathering:
    def __init__(
        self,
        rpc: AgentRpc,
        blobs: BlobStore,
        file_logs: FileLogStore,
        inventory: Inventory,
        max_file_size: int,
        third_party: ThirdPartyDownloads | None = None,
    ) -> None:
        self.rpc = rpc
        self.blobs = blobs
        self.file_logs = file_logs
        self.inventory = inventory
        self.max_file_size = max_file_size
        self.third_party = third_party

    async def gather(
        self,
        job: Row[Any],
        step: Row[Any],
        cfg: dict[str, Any],
        deadline: float,
        targets: list[int] | None = None,
    ) -> list[Prepared]:
        """The step's source files on the server; third-party downloads show in the file
        logs of ``targets``."""
        jobs = []
        seq = THIRD_PARTY_SEQ
        for source in cfg.get("sources") or []:
            if source.get("kind") == "blob":
                jobs.append(self._blob_source(source))
            elif source.get("kind") == "third_party":
                jobs.append(self._third_party(step, source, targets or [], seq, deadline))
                seq += len(source.get("files") or [])
            else:
                for host_id in source.get("host_ids") or []:
                    jobs.append(self.host_source(job, step, host_id, source, cfg, deadline))
        gathered = await asyncio.gather(*jobs)
        for item in gathered:
            if item.status is not None:
                raise SourceFailure(item.status, item.message)
        return [f for item in gathered for f in item.files]

    async def _third_party(
        self,
        step: Row[Any],
        source: dict[str, Any],
        targets: list[int],
        seq: int,
        deadline: float,
    ) -> Gathered:
        if self.third_party is None:
            return Gathered(
                None,
                status=int(HostStatus.GSE_FILE_ERROR),
                message="third-party file sources are not set up on this server",
            )
        return await self.third_party.download(step, source, targets, seq, deadline)

    async def _blob_source(self, source: dict[str, Any]) -> Gathered:
        blob = await self.blobs.get(str(source.get("blob_id")))
        if blob is None or blob.state != COMPLETE:
            return Gathered(
                None,
                status=int(HostStatus.COPYFILE_SOURCE_FILE_NOT_EXIST),
                message=f"uploaded file {source.get('name')} does not exist",
            )
        name = str(source.get("name") or blob.name)
        return Gathered(
            None,
            [
                Prepared(
                    LOCAL_SOURCE,
                    None,
                    None,
                    None,
                    name,
                    name,
                    False,
                    int(source.get("mode") or 0o644),
                    blob.id,
                    blob.size,
                    blob.sha256,
                )
            ],
        )

    async def host_source(
        self,
        job: Row[Any],
        step: Row[Any],
        host_id: int,
        source: dict[str, Any],
        cfg: dict[str, Any],
        deadline: float,
    ) -> Gathered:
        hosts = await self.inventory.by_ids([host_id])
        if not hosts:
            return Gathered(
                host_id,
                status=int(HostStatus.GSE_FILE_ERROR),
                message=f"source host {host_id} no longer exists",
            )
        host = hosts[0]
        where = f"{host.bk_cloud_id}:{host.ip}"
        try:
            listing = await self.rpc.call(
                host_id,
                dict(
                    protocol.file_list(
                        "", list(source.get("files") or []), source.get("account") or ""
                    )
                ),
                max(1.0, deadline - time.monotonic()),
            )
        except (AgentUnavailable, TimeoutError) as exc:
            return Gathered(
                host_id,
                status=int(HostStatus.GSE_FILE_ERROR),
                message=f"cannot reach the agent of source host {where}: {exc}",
            )
        if listing.get("status"):
            return Gathered(
                host_id,
                status=int(listing["status"]),
                message=f"source host {where}: {listing.get('error')}",
            )
        missing = listing.get("missing") or []
        if missing:
            shown = ", ".join(str(m) for m in missing[:10])
            return Gathered(
                host_id,
                status=int(HostStatus.COPYFILE_SOURCE_FILE_NOT_EXIST),
                message=f"source files missing on {where}: {shown}",
            )
        label = source_label(host.bk_cloud_id, host.ip)
        files: list[Prepared] = []
        uploads: list[protocol.UploadItem] = []
        log_rows: list[dict[str, Any]] = []
        for entry in listing.get("files") or []:
            item = Prepared(
                label,
                host_id,
                host.ip,
                host.bk_cloud_id,
                str(entry["path"]),
                str(entry["rel"]),
                bool(entry.get("is_dir")),
                int(entry.get("mode") or 0o644),
                size=entry.get("size"),
            )
            if not item.is_dir:
                uploads.append({"n": len(log_rows), "path": item.src_path, "blob": ""})
                log_rows.append(
                    {
                        "step_instance_id": step.id,
                        "execute_count": step.execute_count,
                        "bk_host_id": host_id,
                        "mode": UPLOAD,
                        "seq": len(log_rows),
                        "src_host_id": host_id,
                        "src_ip": host.ip,
                        "src_cloud_id": host.bk_cloud_id,
                        "src_path": item.src_path,
                        "is_dir": False,
                        "file_mode": item.mode,
                        "status": UPLOADING,
                        "size": item.size,
                        "progress": 0,
                        "log_content": "",
                    }
                )
            files.append(item)
        to_send = [f for f in files if not f.is_dir]
        blob_ids = await self.blobs.create_many(
            [posixpath.basename(f.src_path) for f in to_send],
            kind="agent",
            writer_host_id=host_id,
            bk_biz_id=job.bk_biz_id,
        )
        for item, upload, log_row, blob_id in zip(
            to_send, uploads, log_rows, blob_ids, strict=True
        ):
            item.blob_id = upload["blob"] = log_row["blob_id"] = blob_id
        await self.file_logs.add(log_rows)
        if not uploads:
            return Gathered(host_id, files)
        try:
            reply = await self.rpc.call(
                host_id,
                dict(
                    protocol.file_upload(
                        "",
                        uploads,
                        source.get("account") or "",
                        speed_limit(cfg.get("upload_speed_limit")),
                        self.max_file_size,
                    )
                ),
                max(1.0, deadline - time.monotonic()),
            )
        except (AgentUnavailable, TimeoutError) as exc:
            await self._upload_logs(step, host_id, uploads, {}, f"upload interrupted: {exc}")
            return Gathered(
                host_id,
                status=int(HostStatus.GSE_FILE_ERROR),
                message=f"source host {where} stopped answering: {exc}",
            )
        results = {str(r.get("blob")): r for r in reply.get("results") or []}
        await self._upload_logs(step, host_id, uploads, results, "")
        by_blob = {f.blob_id: f for f in files if f.blob_id}
        stored = await self.blobs.get_many(list(by_blob))
        for blob_id, item in by_blob.items():
            result = results.get(str(blob_id)) or {}
            if result.get("status"):
                return Gathered(
                    host_id,
                    status=int(result["status"]),
                    message=f"upload of {item.src_path} from {where} failed: {result.get('error')}",
                )
            blob = stored.get(str(blob_id))
            if blob is None or blob.state != COMPLETE:
                return Gathered(
                    host_id,
                    status=int(HostStatus.GSE_FILE_ERROR),
                    message=f"{item.src_path} from {where} never arrived",
                )
            if result.get("sha256") != blob.sha256:
                return Gathered(
                    host_id,
                    status=int(HostStatus.GSE_FILE_TASK_ERROR),
                    message=f"checksum mismatch for {item.src_path} from {where}",
                )
            item.size, item.sha256 = blob.size, blob.sha256
        return Gathered(host_id, files)

    async def _upload_logs(
        self,
        step: Row[Any],
        host_id: int,
        uploads: list[protocol.UploadItem],
        results: dict[str, dict[str, Any]],
        note: str,
    ) -> None:
        updates = []
        for upload in uploads:
            result = results.get(str(upload["blob"])) or {}
            ok = bool(result) and not result.get("status")
            updates.append(
                update_row(
                    step.id,
                    step.execute_count,
                    host_id,
                    UPLOAD,
                    upload["n"],
                    status=SUCCESS if ok else FAILED,
                    size=result.get("size"),
                    speed=result.get("speed"),
                    progress=100 if ok else 0,
                    log=note or str(result.get("error") or ""),
                )
            )
        await self.file_logs.update(updates)

    # targets ----------------------------------------------------------------
