"""File steps: gather the source files on the server, then let every target fetch them.

A step first asks each source agent to list what its patterns name
(``file_list``), then to upload those files as blobs (``file_upload``); files
that operators uploaded or that ``push_config_file`` carried are blobs already.
Then each target host gets one ``download`` task through the same machinery as
a script (dispatch, timeout, agent loss, terminate), which writes every file
under the target path and reports each file's outcome.

A fetch step (``direction: fetch``) stops after the uploads: its hosts are the
sources, and each host's status is the outcome of its own uploads.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from jobfleet.domain import protocol
from jobfleet.domain.paths import LOCAL_SOURCE, expand_path, source_label
from jobfleet.domain.status import HostStatus, RunStatus
from jobfleet.engine.batches import StepTasks
from jobfleet.engine.dispatch import Dispatcher
from jobfleet.engine.rpc import AgentRpc, AgentUnavailable
from jobfleet.store.blobs import COMPLETE, BlobStore
from jobfleet.store.database import now_ms
from jobfleet.store.filelogs import (
    DOWNLOAD,
    FAILED,
    SUCCESS,
    UPLOAD,
    UPLOADING,
    WAITING,
    FileLogStore,
    update_row,
)
from jobfleet.store.inventory import Inventory

log = logging.getLogger(__name__)

MAX_FILE_TASKS = 100_000
# a failure row sorts after the file rows of a host
FAILURE_SEQ = 1_000_000
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


class SourceFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def speed_limit(mb_per_second: Any) -> int | None:
    if isinstance(mb_per_second, int | float) and mb_per_second > 0:
        return int(mb_per_second * MB)
    return None


def target_file(
    target_path: str, item: Prepared, target_name: str | None, when: datetime, single: bool
) -> str:
    base = expand_path(target_path, source=item.label, when=when)
    rel = target_name if (target_name and single and not item.is_dir) else item.rel
    return posixpath.normpath(posixpath.join(base, rel))


class FileSteps:
    def __init__(
        self,
        tasks: StepTasks,
        dispatcher: Dispatcher,
        rpc: AgentRpc,
        blobs: BlobStore,
        file_logs: FileLogStore,
        inventory: Inventory,
        max_file_size: int,
    ) -> None:
        self.tasks = tasks
        self.dispatcher = dispatcher
        self.rpc = rpc
        self.blobs = blobs
        self.file_logs = file_logs
        self.inventory = inventory
        self.max_file_size = max_file_size

    async def run(
        self, job: Row[Any], step: Row[Any], stop: asyncio.Event, recovering: bool
    ) -> RunStatus:
        cfg: dict[str, Any] = step.config or {}
        started = await self.tasks.start_step(step)
        deadline = time.monotonic() + step.timeout
        count = step.execute_count
        rows = await self.dispatcher.store.hosts(step.id, count)
        pending = [r for r in rows if r.status in (HostStatus.WAITING, HostStatus.RUNNING)]
        if not pending:
            return await self.tasks.end_step(step, started, stop.is_set())
        if cfg.get("direction") == "fetch":
            await self._fetch(job, step, cfg, pending, deadline)
            return await self.tasks.end_step(step, started, stop.is_set())
        downloads_started = any(r.status == HostStatus.RUNNING for r in pending)
        try:
            if downloads_started:
                files = await self._prepared_from_logs(step, pending[0].bk_host_id)
            else:
                files = await self._gather(job, step, cfg, deadline)
                if len(files) * len(rows) > MAX_FILE_TASKS:
                    raise SourceFailure(
                        int(HostStatus.GSE_FILE_TASK_ERROR),
                        f"{len(files)} files to {len(rows)} hosts exceed the "
                        f"limit of {MAX_FILE_TASKS} file tasks",
                    )
                await self._plan_downloads(step, cfg, files, [r.bk_host_id for r in pending])
        except SourceFailure as failure:
            await self._fail_all(step, pending, failure)
            return await self.tasks.end_step(step, started, stop.is_set())
        if stop.is_set():
            # terminated while the sources were gathered: send nothing to the targets
            await self.dispatcher.conclude_hosts(
                step.id,
                step.execute_count,
                [r.bk_host_id for r in pending],
                HostStatus.GSE_TASK_TERMINATE_SUCCESS,
                "",
            )
            return await self.tasks.end_step(step, started, True)
        template = self._download_template(step, cfg, files)
        return await self.tasks.run(
            job, step, stop, recovering, template, timeout_status=HostStatus.GSE_TIMEOUT
        )

    # sources ----------------------------------------------------------------
    async def _gather(
        self, job: Row[Any], step: Row[Any], cfg: dict[str, Any], deadline: float
    ) -> list[Prepared]:
        jobs = []
        for source in cfg.get("sources") or []:
            if source.get("kind") == "blob":
                jobs.append(self._blob_source(source))
            else:
                for host_id in source.get("host_ids") or []:
                    jobs.append(self._host_source(job, step, host_id, source, cfg, deadline))
        gathered = await asyncio.gather(*jobs)
        for item in gathered:
            if item.status is not None:
                raise SourceFailure(item.status, item.message)
        return [f for item in gathered for f in item.files]

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

    async def _host_source(
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
    async def _plan_downloads(
        self, step: Row[Any], cfg: dict[str, Any], files: list[Prepared], host_ids: list[int]
    ) -> None:
        when = datetime.fromtimestamp((step.start_time or now_ms()) / 1000)
        single = len(files) == 1
        rows = []
        for host_id in host_ids:
            for n, item in enumerate(files):
                rows.append(
                    {
                        "step_instance_id": step.id,
                        "execute_count": step.execute_count,
                        "bk_host_id": host_id,
                        "mode": DOWNLOAD,
                        "seq": n,
                        "src_host_id": item.src_host_id,
                        "src_ip": item.src_ip,
                        "src_cloud_id": item.src_cloud_id,
                        "src_path": item.src_path,
                        "dest_path": target_file(
                            cfg["target_path"], item, cfg.get("target_name"), when, single
                        ),
                        "blob_id": item.blob_id,
                        "is_dir": item.is_dir,
                        "file_mode": item.mode,
                        "status": WAITING,
                        "size": item.size,
                        "progress": 0,
                        "log_content": "",
                    }
                )
        await self.file_logs.add(rows)
        await self.blobs.allow_readers([f.blob_id for f in files if f.blob_id], host_ids)

    async def _prepared_from_logs(self, step: Row[Any], host_id: int) -> list[Prepared]:
        """After a restart mid-download: the plan is in the targets' file logs."""
        out = []
        rows = await self.file_logs.rows(
            step.id, step.execute_count, host_ids=[host_id], mode=DOWNLOAD
        )
        stored = await self.blobs.get_many([r.blob_id for r in rows if r.blob_id])
        for row in rows:
            blob = stored.get(row.blob_id) if row.blob_id else None
            out.append(
                Prepared(
                    "",
                    row.src_host_id,
                    row.src_ip,
                    row.src_cloud_id,
                    row.src_path,
                    row.dest_path,
                    row.is_dir,
                    row.file_mode or 0o644,
                    row.blob_id,
                    blob.size if blob else row.size,
                    blob.sha256 if blob else None,
                )
            )
        return out

    def _download_template(
        self, step: Row[Any], cfg: dict[str, Any], files: list[Prepared]
    ) -> dict[str, Any]:
        when = datetime.fromtimestamp((step.start_time or now_ms()) / 1000)
        single = len(files) == 1
        items: list[protocol.DownloadItem] = []
        for n, item in enumerate(files):
            dest = (
                item.rel
                if not item.label
                else target_file(cfg["target_path"], item, cfg.get("target_name"), when, single)
            )
            items.append(
                {
                    "n": n,
                    # every file to download was stored as a blob by now
                    "blob": item.blob_id or "",
                    "dest": dest,
                    "size": item.size,
                    "sha256": item.sha256,
                    "mode": item.mode,
                    "is_dir": item.is_dir,
                    "src": f"{item.src_ip or '0.0.0.0'}:{item.src_path}",
                }
            )
        # the task id is each host's own (``StepRun.message``)
        return dict(
            protocol.download(
                "",
                items=items,
                account=step.account_name,
                create_dirs=int(cfg.get("transfer_mode") or 2) == 2,
                speed_limit=speed_limit(cfg.get("download_speed_limit")),
                timeout=step.timeout,
                max_size=self.max_file_size,
            )
        )

    async def _fail_all(self, step: Row[Any], rows: list[Row[Any]], failure: SourceFailure) -> None:
        """A source problem fails every target: nothing is sent half-way."""
        log.warning(
            "file_step_failed step=%s status=%s reason=%s", step.id, failure.status, failure.message
        )
        mode = UPLOAD if (step.config or {}).get("direction") == "fetch" else DOWNLOAD
        await self.file_logs.add(
            [
                {
                    "step_instance_id": step.id,
                    "execute_count": step.execute_count,
                    "bk_host_id": r.bk_host_id,
                    "mode": mode,
                    "seq": FAILURE_SEQ,
                    "src_path": "",
                    "status": FAILED,
                    "progress": 0,
                    "log_content": failure.message[:4000],
                }
                for r in rows
            ]
        )
        await self.dispatcher.conclude_hosts(
            step.id,
            step.execute_count,
            [r.bk_host_id for r in rows],
            failure.status,
            f"jobfleet: {failure.message}\n",
        )

    # fetch ------------------------------------------------------------------
    async def _fetch(
        self,
        job: Row[Any],
        step: Row[Any],
        cfg: dict[str, Any],
        rows: list[Row[Any]],
        deadline: float,
    ) -> None:
        source = {"files": cfg.get("files") or [], "account": step.account_name}
        results = await asyncio.gather(
            *(self._host_source(job, step, r.bk_host_id, source, cfg, deadline) for r in rows)
        )
        failed = [
            {
                "step_instance_id": step.id,
                "execute_count": step.execute_count,
                "bk_host_id": row.bk_host_id,
                "mode": UPLOAD,
                "seq": FAILURE_SEQ,
                "src_path": "",
                "status": FAILED,
                "progress": 0,
                "log_content": result.message[:4000],
            }
            for row, result in zip(rows, results, strict=True)
            if result.status
        ]
        if failed:
            await self.file_logs.add(failed)
        for row, result in zip(rows, results, strict=True):
            note = f"jobfleet: {result.message}\n" if result.message else ""
            await self.dispatcher.conclude_hosts(
                step.id,
                step.execute_count,
                [row.bk_host_id],
                result.status or int(HostStatus.SUCCESS),
                note,
            )
