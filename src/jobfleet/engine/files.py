"""File steps: gather the source files on the server (``file_gathering``), then let
every target fetch them.

Each target host gets one ``download`` task through the same machinery as
a script (dispatch, timeout, agent loss, terminate), which writes every file
under the target path and reports each file's outcome.

A fetch step (``direction: fetch``) stops after the uploads: its hosts are the
sources, and each host's status is the outcome of its own uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import posixpath
import time
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Row

from jobfleet.domain import protocol
from jobfleet.domain.paths import (
    LOCAL_SOURCE,
    MAX_PATH,
    expand_path,
    host_source_files,
    source_label,
)
from jobfleet.domain.status import HostStatus, RunStatus
from jobfleet.engine.batches import StepTasks
from jobfleet.engine.dispatch import Dispatcher
from jobfleet.engine.file_gathering import (
    MAX_FILE_TASKS,
    AgentWait,
    Prepared,
    SeededUpload,
    SourceFailure,
    SourceGathering,
    ThirdPartyDownloads,
    cancel_uploads,
    speed_limit,
)
from jobfleet.engine.rpc import AgentRpc
from jobfleet.engine.seeding import Seeding
from jobfleet.engine.swarms import Swarms
from jobfleet.engine.tracking import REFUSED
from jobfleet.store.blobs import BlobStore
from jobfleet.store.database import now_ms
from jobfleet.store.filelogs import (
    DOWNLOAD,
    FAILED,
    UPLOAD,
    WAITING,
    FileLogStore,
)
from jobfleet.store.inventory import Inventory
from jobfleet.store.jobs import JobLease

log = logging.getLogger(__name__)
T = TypeVar("T")

# a failure row sorts after the file rows of a host
FAILURE_SEQ = 1_000_000


def target_file(
    target_path: str, item: Prepared, target_name: str | None, when: datetime, single: bool
) -> str:
    return _file_at(TargetBases(target_path, when), item, target_name, single)


def target_root(target_path: str, item: Prepared, dest: str, when: datetime) -> str:
    """The operator's target path ``dest`` is below, as the agent follows it: symlinks
    in it are followed, none below it (``agent.files.rights.open_parent``).

    An item planned before a restart (no label: ``dest`` is what its file log kept)
    has its source's label made again from the log; should the path not lead to
    ``dest`` that way, ``dest``'s own directory is the root, as it was before roots."""
    return _root_at(TargetBases(target_path, when), item, dest)


class TargetBases:
    """The target path as expanded for each source; a step's items share a few sources,
    so each is expanded once rather than once or twice per item."""

    def __init__(self, target_path: str, when: datetime) -> None:
        self.target_path = target_path
        self.when = when
        self._bases: dict[str, str] = {}

    def of(self, label: str) -> str:
        base = self._bases.get(label)
        if base is None:
            expanded = expand_path(self.target_path, source=label, when=self.when)
            base = self._bases[label] = posixpath.normpath(expanded)
        return base


def _file_at(bases: TargetBases, item: Prepared, target_name: str | None, single: bool) -> str:
    rel = target_name if (target_name and single and not item.is_dir) else item.rel
    return posixpath.normpath(posixpath.join(bases.of(item.label), rel))


def _root_at(bases: TargetBases, item: Prepared, dest: str) -> str:
    label = item.label
    if not label:
        label = (
            LOCAL_SOURCE
            if item.src_host_id is None
            else source_label(item.src_cloud_id or 0, item.src_ip or "")
        )
    root = bases.of(label)
    if protocol.at_or_below(dest, root):
        return root
    return posixpath.dirname(dest)


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
        third_party: ThirdPartyDownloads | None = None,
    ) -> None:
        self.tasks = tasks
        self.dispatcher = dispatcher
        self.rpc = rpc
        self.blobs = blobs
        self.file_logs = file_logs
        self.inventory = inventory
        self.max_file_size = max_file_size
        self.sources = SourceGathering(
            rpc, blobs, file_logs, inventory, max_file_size, third_party
        )
        self.swarms = Swarms(dispatcher.agents, blobs, inventory)
        self.seeding = Seeding(dispatcher.agents, inventory, self.swarms)

    async def run(
        self,
        lease: JobLease,
        job: Row[Any],
        step: Row[Any],
        stop: asyncio.Event,
        recovering: bool,
    ) -> RunStatus:
        cfg: dict[str, Any] = step.config or {}
        started = await self.tasks.start_step(lease, step)
        deadline = time.monotonic() + step.timeout
        # the sources are gathered (and seeded uploads settled) within the step's timeout,
        # with no turn of a wait to show meanwhile
        self.tasks.decisions.progress.expect(
            job.id, step.timeout + self.dispatcher.settings.timeout_slack
        )
        count = step.execute_count
        rows = await self.dispatcher.store.hosts(step.id, count)
        pending = [r for r in rows if r.status in (HostStatus.WAITING, HostStatus.RUNNING)]
        if not pending:
            return await self.tasks.end_step(lease, step, started, stop.is_set())
        if cfg.get(REFUSED):
            # a value a host set would have led a path elsewhere (``engine.variables``)
            await self._fail_all(
                step, pending, SourceFailure(int(HostStatus.SUBMIT_FAILED), str(cfg[REFUSED]))
            )
            return await self.tasks.end_step(lease, step, started, stop.is_set())
        # a source's agent may come back as long as a target's would (after a restart)
        within = functools.partial(self.dispatcher.agent_wait, recovering=recovering)
        if cfg.get("direction") == "fetch":
            await self._fetch(job, step, cfg, pending, deadline, within)
            return await self.tasks.end_step(lease, step, started, stop.is_set())
        downloads_started = any(r.status == HostStatus.RUNNING for r in pending)
        files: list[Prepared] = []
        try:
            if downloads_started:
                # files their sources served (``engine.seeding``) are on the server first;
                # a terminate does not wait for a source to come back and upload
                await _unless_stopped(
                    self.sources.upload_after_restart(
                        step,
                        cfg,
                        deadline,
                        # downloads under way when it starts: a step taken over
                        functools.partial(self.dispatcher.agent_wait, recovering=True),
                    ),
                    stop,
                )
                files = await self._prepared_from_logs(step, pending[0].bk_host_id)
            else:
                gathered = await self._gather_until_stopped(
                    job, step, cfg, deadline, stop, pending, within
                )
                files = gathered or []
                if gathered is not None:
                    if len(files) * len(rows) > MAX_FILE_TASKS:
                        cancel_uploads(files)
                        raise SourceFailure(
                            int(HostStatus.GSE_FILE_TASK_ERROR),
                            f"{len(files)} files to {len(rows)} hosts exceed the "
                            f"limit of {MAX_FILE_TASKS} file tasks",
                        )
                    await self._plan_downloads(step, cfg, files, [r.bk_host_id for r in pending])
        except SourceFailure as failure:
            await self._fail_all(step, pending, failure)
            return await self.tasks.end_step(lease, step, started, stop.is_set())
        if stop.is_set() and not downloads_started:
            # terminated while the sources were gathered: send nothing to the targets
            # (downloads under way before a restart are killed by the step's run below)
            cancel_uploads(files)
            await self.dispatcher.conclude_hosts(
                step.id,
                step.execute_count,
                [r.bk_host_id for r in pending],
                HostStatus.GSE_TASK_TERMINATE_SUCCESS,
                "",
            )
            return await self.tasks.end_step(lease, step, started, True)
        template = self._download_template(step, cfg, files)
        per_host = await self.swarms.plan(
            f"{step.id}.{step.execute_count}",
            template["items"],
            [r.bk_host_id for r in pending],
            int(step.timeout),
            {r.bk_host_id: r.batch for r in pending} if step.rolling_config else None,
        )
        uploads = list({id(f.upload): f.upload for f in files if f.upload is not None}.values())
        try:
            return await self.tasks.run(
                lease,
                step,
                stop,
                recovering,
                template,
                timeout_status=HostStatus.GSE_TIMEOUT,
                per_host=per_host,
                before_end=functools.partial(self._uploads_in, uploads, stop) if uploads else None,
            )
        finally:
            cancel_uploads(files)

    async def _uploads_in(self, uploads: list[SeededUpload], stop: asyncio.Event) -> None:
        """The seeding sources' uploads (``engine.seeding``) settled before the step ends;
        a failed one is in its upload rows (the targets checked every piece they took). A
        terminated step does not wait for an upload under way."""
        for seeded in uploads:
            done = await self.sources.settle(seeded, stop.is_set())
            if done is not None and done.status is not None:
                log.warning(
                    "seeded_source_not_stored host=%s reason=%s", done.host_id, done.message
                )

    async def _gather_until_stopped(
        self,
        job: Row[Any],
        step: Row[Any],
        cfg: dict[str, Any],
        deadline: float,
        stop: asyncio.Event,
        pending: list[Row[Any]],
        within: AgentWait,
    ) -> list[Prepared] | None:
        """The source files, or None when the step is terminated first (what was being
        gathered, such as a download from a file source, is stopped). ``within``: how long
        a source's agent may take to come back."""
        targets = [r.bk_host_id for r in pending]
        seeds = await self.seeding.plan(step, cfg, targets)
        return await _unless_stopped(
            self.sources.gather(job, step, cfg, deadline, targets, seeds, within=within), stop
        )

    async def _plan_downloads(
        self, step: Row[Any], cfg: dict[str, Any], files: list[Prepared], host_ids: list[int]
    ) -> None:
        when = datetime.fromtimestamp((step.start_time or now_ms()) / 1000)
        single = len(files) == 1
        bases = TargetBases(cfg["target_path"], when)
        dests = [_file_at(bases, f, cfg.get("target_name"), single) for f in files]
        too_long = next((d for d in dests if len(d) > MAX_PATH), None)
        if too_long is not None:
            # the variables of the target path ([DATEFMT:…], ${name}) made it longer than
            # any file system takes, or a file log keeps
            cancel_uploads(files)
            raise SourceFailure(
                int(HostStatus.COPYFILE_FAILED),
                f"target path {too_long[:200]}… is longer than {MAX_PATH} characters",
            )
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
                        "dest_path": dests[n],
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
        bases = TargetBases(cfg["target_path"], when)
        items: list[protocol.DownloadItem] = []
        for n, item in enumerate(files):
            dest = (
                item.rel
                if not item.label
                else _file_at(bases, item, cfg.get("target_name"), single)
            )
            items.append(
                {
                    "n": n,
                    # every file to download was stored as a blob by now
                    "blob": item.blob_id or "",
                    "dest": dest,
                    "root": _root_at(bases, item, dest),
                    "size": item.size,
                    "sha256": item.sha256,
                    "mode": item.mode,
                    "is_dir": item.is_dir,
                    "src": f"{item.src_ip or '0.0.0.0'}:{item.src_path}",
                }
            )
            if item.seed is not None and item.pieces:
                items[-1]["pieces"] = item.pieces
                items[-1]["seed"] = item.seed
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
        source: dict[str, Any] = {}
        if failure.host_id is not None:
            for host in await self.inventory.by_ids([failure.host_id]):
                source = {
                    "src_host_id": host.bk_host_id,
                    "src_cloud_id": host.bk_cloud_id,
                    "src_ip": host.ip,
                }
        failed = [
            {
                "step_instance_id": step.id,
                "execute_count": step.execute_count,
                "bk_host_id": r.bk_host_id,
                "mode": mode,
                "seq": FAILURE_SEQ,
                **source,
                "src_path": "",
                "status": FAILED,
                "progress": 0,
                "log_content": failure.message[:4000],
            }
            for r in rows
        ]
        if (
            source
            and mode == DOWNLOAD
            and not await self.file_logs.rows(
                step.id, step.execute_count, host_ids=[source["src_host_id"]], mode=UPLOAD
            )
        ):
            # a source that failed before its upload began (files missing, agent away)
            # shows, as in bk-job, each of its files' upload failed with the reason
            failed.extend(
                {
                    "step_instance_id": step.id,
                    "execute_count": step.execute_count,
                    "bk_host_id": source["src_host_id"],
                    "mode": UPLOAD,
                    "seq": FAILURE_SEQ + n,
                    **source,
                    "src_path": path[:4096],
                    "status": FAILED,
                    "progress": 0,
                    "log_content": failure.message[:4000],
                }
                for n, path in enumerate(
                    host_source_files(step.config).get(source["src_host_id"], [])
                )
            )
        await self.file_logs.add(failed)
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
        within: AgentWait,
    ) -> None:
        source = {"files": cfg.get("files") or [], "account": step.account_name}
        results = await asyncio.gather(
            *(
                self.sources.host_source(
                    job, step, r.bk_host_id, source, cfg, deadline, within=within
                )
                for r in rows
            )
        )
        failed = [
            {
                "step_instance_id": step.id,
                "execute_count": step.execute_count,
                "bk_host_id": row.bk_host_id,
                "mode": UPLOAD,
                "seq": FAILURE_SEQ,
                # the host is the source of a fetch: its failure names it as one
                "src_host_id": row.bk_host_id,
                "src_cloud_id": row.bk_cloud_id,
                "src_ip": row.ip,
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


async def _unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """``work``'s result, or None when ``stop`` is set first (``work`` is then cancelled
    and has ended)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return None
    return task.result()
