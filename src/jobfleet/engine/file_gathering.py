"""The first half of a file step: the source files, made ready on the server.

Files that operators uploaded, or that ``push_config_file`` carried, are blobs
already. For a source host, its agent is asked to list what the patterns name
(``file_list``), then to upload those files as blobs (``file_upload``); every file
gets an upload row in the step's file log. One source that fails fails the step
(``SourceFailure``): nothing is sent half-way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Row

from jobfleet.domain import protocol
from jobfleet.domain.paths import LOCAL_SOURCE, listed_as_asked, source_label, stays_below
from jobfleet.domain.pieces import PIECE_SIZE
from jobfleet.domain.plans import MAX_SPEED_LIMIT
from jobfleet.domain.status import HostStatus
from jobfleet.engine.rpc import AgentRpc, AgentUnavailable
from jobfleet.engine.seeding import SeedTicket, seed_transfer
from jobfleet.store.blobs import COMPLETE, BlobStore
from jobfleet.store.filelogs import FAILED, SUCCESS, UPLOAD, UPLOADING, FileLogStore, update_row
from jobfleet.store.inventory import Inventory

log = logging.getLogger(__name__)

MB = 1024 * 1024
# files (and directory entries) times target hosts, in one file step
MAX_FILE_TASKS = 100_000

# how long a host's absent agent may still take to connect (``Dispatcher.agent_wait``)
AgentWait = Callable[[int], float]


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
    # served by its source agent while it is uploaded (``engine.seeding``): the pieces'
    # digests (base64), where to take them, and the upload still under way
    pieces: str | None = None
    seed: protocol.ItemSeed | None = None
    upload: SeededUpload | None = None


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


@dataclass
class Sending:
    """One source host's files on their way to the server."""

    step: Row[Any]
    host_id: int
    where: str
    files: list[Prepared]
    uploads: list[protocol.UploadItem]
    source: dict[str, Any]
    cfg: dict[str, Any]
    deadline: float


@dataclass
class SeededUpload:
    """A seeding source's files: uploaded only if a target asks the server for one."""

    sending: Sending
    seed: SeedTicket
    task: asyncio.Future[Gathered] | None = None
    started: bool = False


SEED_BASE_SECONDS = 30.0
SEED_BYTES_PER_SECOND = 50 * MB


def _listing_refused(host_id: int, event: str, name: str, value: str, message: str) -> Gathered:
    """A source whose listing names what an honest agent would not: logged as ``event``
    with the ``name`` it listed, and failed with ``message``."""
    log.warning("%s host=%s %s=%r", event, host_id, name, value[:200])
    return Gathered(host_id, status=int(HostStatus.GSE_FILE_TASK_ERROR), message=message)


def seed_timeout(files: list[Prepared]) -> float:
    """How long a source may take to hash ``files`` (sizes as listed)."""
    total = sum(f.size or 0 for f in files if not f.is_dir)
    return SEED_BASE_SECONDS + total / SEED_BYTES_PER_SECOND


def cancel_uploads(files: list[Prepared]) -> None:
    """Stop waiting for uploads under way (the step ends without them)."""
    for item in files:
        if item.upload is not None and item.upload.task is not None:
            item.upload.task.cancel()


class SourceFailure(Exception):
    """``host_id``: the source host that failed, when one did (the targets' file logs
    name it as their source, not the server's local files)."""

    def __init__(self, status: int, message: str, host_id: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.host_id = host_id


def speed_limit(mb_per_second: Any) -> int | None:
    """Bytes a second; a limit stored before limits were bounded is held to the bound,
    so that the agent's message still encodes."""
    if isinstance(mb_per_second, int | float) and mb_per_second > 0:
        return int(min(mb_per_second, MAX_SPEED_LIMIT) * MB)
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
        seeds: dict[int, SeedTicket] | None = None,
        *,
        within: AgentWait,
    ) -> list[Prepared]:
        """The step's source files on the server; third-party downloads show in the file
        logs of ``targets``. Files of the sources in ``seeds`` are served by their agents
        and may still be on their way to the server (``Prepared.upload``). ``within``:
        how long a source's agent may take to come back (after a restart, the recovery
        window: its agent reconnects on its own schedule)."""
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
                    seed = (seeds or {}).get(int(host_id))
                    jobs.append(
                        self.host_source(
                            job,
                            step,
                            host_id,
                            source,
                            cfg,
                            deadline,
                            seed,
                            max_entries=MAX_FILE_TASKS // max(1, len(targets or [])),
                            within=within,
                        )
                    )
        gathered = await asyncio.gather(*jobs)
        files = [f for item in gathered for f in item.files]
        for item in gathered:
            if item.status is not None:
                cancel_uploads(files)
                raise SourceFailure(item.status, item.message, item.host_id)
        return files

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
                    protocol.transferred_mode(int(source.get("mode") or 0o644), is_dir=False),
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
        seed: SeedTicket | None = None,
        *,
        max_entries: int | None = None,
        within: AgentWait,
    ) -> Gathered:
        """One source host's files on the server. ``max_entries``: more listed entries
        than this fail the step before anything is uploaded (the file-task limit).
        ``within``: how long its agent may take to connect."""
        hosts = await self.inventory.by_ids([host_id])
        if not hosts:
            return Gathered(
                host_id,
                status=int(HostStatus.GSE_FILE_ERROR),
                message=f"source host {host_id} no longer exists",
            )
        host = hosts[0]
        where = f"{host.bk_cloud_id}:{host.ip}"
        absent = await self._agent_back(host_id, where, deadline, within)
        if absent is not None:
            return absent
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
        listed = listing.get("files") or []
        unnamed = next(
            (
                str(e[k])
                for e in listed
                for k in ("path", "rel")
                if not protocol.is_file_name(str(e[k]))
            ),
            None,
        )
        if unnamed is not None:
            return _listing_refused(
                host_id, "unusable_source_name", "name", unnamed,
                f"source host {where} listed a name no file system holds: {unnamed[:200]!a}",
            )
        unsafe = next((str(e["rel"]) for e in listed if not stays_below(str(e["rel"]))), None)
        if unsafe is not None:
            return _listing_refused(
                host_id, "unsafe_source_name", "rel", unsafe,
                f"source host {where} listed a file name that leaves the target "
                f"path: {unsafe[:200]!r}",
            )
        patterns = [str(f) for f in source.get("files") or []]
        unasked = next(
            (
                str(e["path"])
                for e in listed
                if not listed_as_asked(patterns, str(e["path"]), str(e["rel"]))
            ),
            None,
        )
        if unasked is not None:
            return _listing_refused(
                host_id, "unasked_source_file", "path", unasked,
                f"source host {where} listed a file the step did not ask for: "
                f"{unasked[:200]!r}",
            )
        if max_entries is not None and len(listed) > max_entries:
            return Gathered(
                host_id,
                status=int(HostStatus.GSE_FILE_TASK_ERROR),
                message=f"source host {where} lists {len(listed)} files; to the step's hosts "
                f"that exceeds the limit of {MAX_FILE_TASKS} file tasks",
            )
        label = source_label(host.bk_cloud_id, host.ip)
        files: list[Prepared] = []
        uploads: list[protocol.UploadItem] = []
        log_rows: list[dict[str, Any]] = []
        for entry in listed:
            item = Prepared(
                label,
                host_id,
                host.ip,
                host.bk_cloud_id,
                str(entry["path"]),
                str(entry["rel"]),
                bool(entry.get("is_dir")),
                # an agent of an earlier release, or a hostile one, may list set-ID bits
                protocol.transferred_mode(
                    int(entry.get("mode") or 0o644), is_dir=bool(entry.get("is_dir"))
                ),
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
        sending = Sending(step, host_id, where, files, uploads, source, cfg, deadline)
        if seed is not None and await self._seed(sending, seed):
            seeded = SeededUpload(sending, seed)
            seeded.task = asyncio.ensure_future(self._upload_on_demand(seeded))
            for item in files:
                item.upload = seeded if item.seed is not None else None
            return Gathered(host_id, files)
        # an agent that offered some files before one failed stops serving them after this
        return await self._upload(sending, seed.transfer if seed is not None else None)

    async def _seed(self, sending: Sending, seed: SeedTicket) -> bool:
        """Ask the source to serve its files' pieces; False: upload them first instead
        (its answer names no failure here: the upload gives each its own)."""
        offer: protocol.SeedOffer = {
            "transfer": seed.transfer,
            "token": seed.token,
            "expires": seed.expires,
            "piece_size": PIECE_SIZE,
        }
        try:
            reply = await self.rpc.call(
                sending.host_id,
                dict(
                    protocol.file_seed(
                        "",
                        sending.uploads,
                        sending.source.get("account") or "",
                        self.max_file_size,
                        offer,
                    )
                ),
                # hashing reads each file once; an agent that does not answer (one of
                # an older version ignores the request) costs this long, then uploads
                max(1.0, min(sending.deadline - time.monotonic(), seed_timeout(sending.files))),
            )
        except (AgentUnavailable, TimeoutError) as exc:
            log.info("seed_refused host=%s reason=%s", sending.host_id, exc)
            return False
        results = {str(r.get("blob")): r for r in reply.get("results") or []}
        by_blob = {f.blob_id: f for f in sending.files if f.blob_id}
        answered = [results.get(str(b)) or {} for b in by_blob]
        if reply.get("status") or any(r.get("status") or not r.get("pieces") for r in answered):
            log.info("seed_refused host=%s reason=%s", sending.host_id, reply.get("error") or "")
            return False
        for upload in sending.uploads:
            item = by_blob[upload["blob"]]
            result = results[upload["blob"]]
            item.size, item.pieces = int(result.get("size") or 0), str(result["pieces"])
            item.seed = {
                "peer": seed.peer,
                "transfer": seed.transfer,
                "token": seed.token,
                "n": upload["n"],
            }
        return True

    async def _upload_on_demand(self, seeded: SeededUpload) -> Gathered:
        """The files on the server once a target asks it for one (its source link failed)."""
        ids = [f.blob_id for f in seeded.sending.files if f.seed is not None and f.blob_id]
        waits = [asyncio.ensure_future(self.blobs.demand(b).wait()) for b in ids]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            for b in ids:
                self.blobs.forget_demand(b)
        seeded.started = True
        log.info("seeded_upload_wanted host=%s", seeded.sending.host_id)
        return await self._upload_seeded(seeded.sending, seeded.seed)

    async def settle(self, seeded: SeededUpload, stopped: bool = False) -> Gathered | None:
        """At the step's end: the upload a fallback started, in (not waited for when the
        step was terminated); or, when no target asked the server, the upload rows say
        where the files came from and the source stops serving them."""
        sending = seeded.sending
        if seeded.task is None:
            return None
        if seeded.started:
            if stopped:
                seeded.task.cancel()
            done = await asyncio.gather(seeded.task, return_exceptions=True)
            for item in sending.files:
                if item.blob_id:
                    self.blobs.forget_lost(item.blob_id)
            return done[0] if isinstance(done[0], Gathered) else None
        seeded.task.cancel()
        await asyncio.gather(seeded.task, return_exceptions=True)
        by_blob = {f.blob_id: f for f in sending.files if f.blob_id}
        await self.file_logs.update(
            [
                update_row(
                    sending.step.id,
                    sending.step.execute_count,
                    sending.host_id,
                    UPLOAD,
                    u["n"],
                    status=SUCCESS,
                    size=by_blob[u["blob"]].size,
                    progress=100,
                    log="served to the targets from the source's peer port",
                )
                for u in sending.uploads
            ]
        )
        with contextlib.suppress(AgentUnavailable, TimeoutError):
            # nothing to upload: the source only stops offering the files
            await self.rpc.call(
                sending.host_id,
                dict(
                    protocol.file_upload(
                        "",
                        [],
                        sending.source.get("account") or "",
                        None,
                        None,
                        seeded.seed.transfer,
                    )
                ),
                10.0,
            )
        return None

    async def _upload_seeded(self, sending: Sending, seed: SeedTicket) -> Gathered:
        """The upload for a fallback; the server's copy must hold the pieces the targets
        were given."""
        gathered = await self._upload(sending, seed.transfer)
        if gathered.status is not None:
            log.warning("seeded_upload_failed host=%s reason=%s", sending.host_id, gathered.message)
            # targets that lost the source would otherwise ask until their token expires
            for item in sending.files:
                if item.seed is not None and item.blob_id:
                    self.blobs.lost(item.blob_id, gathered.message)
            return gathered
        for item in gathered.files:
            if item.seed is None or not item.blob_id:
                continue
            stored = base64.b64encode(b"".join(await self.blobs.pieces(item.blob_id))).decode()
            if stored != item.pieces:
                log.warning("seeded_upload_differs host=%s path=%s", sending.host_id, item.src_path)
                return Gathered(
                    sending.host_id,
                    status=int(HostStatus.GSE_FILE_TASK_ERROR),
                    message=f"{item.src_path} changed on {sending.where} while it was sent",
                )
        return gathered

    async def upload_after_restart(
        self, step: Row[Any], cfg: dict[str, Any], deadline: float, within: AgentWait
    ) -> None:
        """After a restart mid-download: the files that seeding sources served and the
        server never stored are uploaded by their sources now (the server that handed
        out the swarm's token is gone, so targets that fall back find them here). A
        source still serving goes on doing so until its upload is in; a source that
        cannot upload marks its files lost, so the targets that need them are told so.
        ``within``: how long a source's agent may take to come back."""
        rows = await self.file_logs.rows(step.id, step.execute_count, mode=UPLOAD)
        rows = [r for r in rows if r.blob_id and not r.is_dir and r.bk_host_id is not None]
        stored = await self.blobs.get_many([r.blob_id for r in rows])
        by_source: dict[int, list[Row[Any]]] = {}
        for row in rows:
            blob = stored.get(row.blob_id)
            if blob is not None and blob.state != COMPLETE:
                by_source.setdefault(int(row.bk_host_id), []).append(row)
        if by_source:
            log.info("seeded_upload_after_restart step=%s sources=%d", step.id, len(by_source))
        await asyncio.gather(
            *(
                self._upload_source_again(step, cfg, host_id, held, deadline, within)
                for host_id, held in by_source.items()
            )
        )

    async def _upload_source_again(
        self,
        step: Row[Any],
        cfg: dict[str, Any],
        host_id: int,
        rows: list[Row[Any]],
        deadline: float,
        within: AgentWait,
    ) -> None:
        source: dict[str, Any] = next(
            (
                s
                for s in cfg.get("sources") or []
                if host_id in {int(h) for h in s.get("host_ids") or []}
            ),
            {},
        )
        files = [
            Prepared(
                "",
                host_id,
                r.src_ip,
                r.src_cloud_id,
                r.src_path,
                r.src_path,
                False,
                r.file_mode or 0o644,
                r.blob_id,
                r.size,
            )
            for r in rows
        ]
        uploads: list[protocol.UploadItem] = [
            {"n": int(r.seq), "path": r.src_path, "blob": r.blob_id} for r in rows
        ]
        where = f"{rows[0].src_cloud_id}:{rows[0].src_ip}"
        sending = Sending(step, host_id, where, files, uploads, source, cfg, deadline)
        gathered = await self._agent_back(host_id, where, deadline, within)
        if gathered is not None:
            await self._upload_logs(step, host_id, uploads, {}, gathered.message)
        else:
            gathered = await self._upload(sending, seed_transfer(step, host_id))
        if gathered.status is not None:
            log.warning("seeded_upload_failed host=%s reason=%s", host_id, gathered.message)
            for item in files:
                if item.blob_id:
                    self.blobs.lost(item.blob_id, gathered.message)

    async def _agent_back(
        self, host_id: int, where: str, deadline: float, within: AgentWait
    ) -> Gathered | None:
        """None once the source's agent is connected (or is not waited for), else the
        failure: asking it anyway would wait the grace of an agent that dropped on top
        of the window."""
        wait = min(within(host_id), deadline - time.monotonic())
        if wait > 0 and not await self.rpc.await_agent(host_id, wait):
            return Gathered(
                host_id,
                status=int(HostStatus.GSE_FILE_ERROR),
                message=f"the agent of source host {where} did not come back within "
                f"{wait:g}s (the recovery window after a server restart)",
            )
        return None

    async def _upload(self, sending: Sending, seed_transfer: str | None = None) -> Gathered:
        step, host_id, where = sending.step, sending.host_id, sending.where
        files, uploads, source = sending.files, sending.uploads, sending.source
        try:
            reply = await self.rpc.call(
                host_id,
                dict(
                    protocol.file_upload(
                        "",
                        uploads,
                        source.get("account") or "",
                        speed_limit(sending.cfg.get("upload_speed_limit")),
                        self.max_file_size,
                        seed_transfer,
                    )
                ),
                max(1.0, sending.deadline - time.monotonic()),
            )
        except (AgentUnavailable, TimeoutError) as exc:
            await self._upload_logs(step, host_id, uploads, {}, f"upload interrupted: {exc}")
            return Gathered(
                host_id,
                status=int(HostStatus.GSE_FILE_ERROR),
                message=f"source host {where} stopped answering: {exc}",
            )
        if reply.get("status"):
            # the request as a whole failed (refused by the server, or by the agent):
            # its reason, not "never arrived" for each file
            reason = f"upload from {where} failed: {reply.get('error')}"
            await self._upload_logs(step, host_id, uploads, {}, reason)
            return Gathered(host_id, status=int(reply["status"]), message=reason)
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
