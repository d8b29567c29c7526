"""The agent's part of file steps: list sources, upload them, download targets.

The byte-moving and permission rules live in ``files``; this module speaks the
protocol: it turns requests into calls and results into replies, file-log
updates and a task's final ``done``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, cast

from jobfleet.agent.accounts import AccountError
from jobfleet.agent.task import TaskResult
from jobfleet.domain import protocol
from jobfleet.domain.status import FileLogStatus, HostStatus

if TYPE_CHECKING:
    import httpx

    from jobfleet.agent.files import Progress, TransferError
    from jobfleet.agent.peers import PeerServer

# The file movers (jobfleet.agent.files: hashing, rights, pacing threads, the swarm)
# are imported by the methods that move files: an idle agent does not hold them.

log = logging.getLogger(__name__)

BLOB_PATH = "/api/jobfleet/v1/agents/blobs/"
# a server restart or a dropped connection is worth waiting out, a real refusal is not
FETCH_FAILED = frozenset({int(HostStatus.GSE_FILE_ERROR)})
# an upload cut by a server restart surfaces as a transfer error
UPLOAD_RETRY = frozenset({int(HostStatus.GSE_FILE_ERROR), int(HostStatus.GSE_FILE_TASK_ERROR)})
RETRY_FOR = 60.0
DOWNLOADING = int(FileLogStatus.DOWNLOADING)
SUCCESS = int(FileLogStatus.SUCCESS)
FAILED = int(FileLogStatus.FAILED)

Emit = Callable[[str], Awaitable[None]]
Report = Callable[[list[protocol.FileItem]], None]


def _mb(bytes_per_second: float) -> float:
    return round(bytes_per_second / (1024 * 1024), 2)


class FileWork:
    def __init__(
        self,
        server: Callable[[], str],
        headers: Callable[[], dict[str, str]],
        tls: Callable[[], ssl.SSLContext | None],
        client: httpx.AsyncClient | None = None,
        peers: PeerServer | None = None,
    ) -> None:
        self._server = server
        # the inbound peer port (opt-in): with it, downloads may come from a swarm
        self.peers = peers
        # bytes of swarm downloads, by where they came from
        self.swarm_bytes = {"server": 0, "peers": 0}
        self.headers = headers
        self._tls = tls
        self._client = client
        self._owned = client is None

    @property
    def base(self) -> str:
        # asked each time: the agent channel's address may change after a reconnect
        return self._server().rstrip("/") + BLOB_PATH

    @property
    def client(self) -> httpx.AsyncClient:
        # built on first use: most agents never move a file, and a client with
        # its SSL context costs ~20 ms of CPU and ~0.7 MiB
        if self._client is None:
            # imported here too: an idle agent never loads an HTTP client
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(60.0, connect=10.0),
                trust_env=False,
                verify=self._tls() or True,
            )
        return self._client

    async def close(self) -> None:
        if self._owned and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def list_sources(self, request: str, message: protocol.FileList) -> protocol.Reply:
        from jobfleet.agent.files import expand_sources

        patterns = [str(p) for p in message.get("patterns") or []]
        try:
            files, missing = await asyncio.to_thread(
                expand_sources, patterns, str(message.get("account") or "")
            )
        except AccountError as exc:
            return protocol.reply(request, status=int(HostStatus.GSE_USER_ERROR), error=str(exc))
        return protocol.reply(
            request,
            files=[cast(protocol.ListedFile, asdict(f)) for f in files],
            missing=[f"{m} ({getattr(m, 'reason', 'not found')})" for m in missing],
        )

    async def upload(self, request: str, message: protocol.FileUpload) -> protocol.Reply:
        from jobfleet.agent.files import TransferError, upload

        results: list[protocol.UploadResult] = []
        limit = message.get("speed_limit")
        for item in message.get("items") or []:
            blob, path = str(item["blob"]), str(item["path"])
            started = time.monotonic()
            try:
                size, digest = await self._retrying(
                    functools.partial(
                        upload,
                        self.client,
                        self.base + blob,
                        self.headers(),
                        path,
                        speed_limit=limit if isinstance(limit, int) else None,
                        max_size=message.get("max_size"),
                        account=str(message.get("account") or ""),
                    ),
                    UPLOAD_RETRY,
                )
            except (TransferError, AccountError) as exc:
                status = exc.status if isinstance(exc, TransferError) else 311
                results.append({"blob": blob, "status": status, "error": str(exc)})
                continue
            elapsed = max(time.monotonic() - started, 1e-6)
            results.append(
                {"blob": blob, "size": size, "sha256": digest, "speed": _mb(size / elapsed)}
            )
        seeded = message.get("seed_transfer")
        if seeded and self.peers is not None:
            # the server holds the files now: targets that still want pieces get them
            # from it once this agent stops serving them
            self.peers.finished(str(seeded))
        return protocol.reply(request, results=results)

    async def seed(self, request: str, message: protocol.FileSeed) -> protocol.Reply:
        """Hash each file's pieces and serve them on the peer port (``agent.files.seeding``)."""
        if self.peers is None:
            return protocol.reply(
                request, status=int(HostStatus.GSE_FILE_ERROR), error="no peer port to serve on"
            )
        from jobfleet.agent.files.seeding import seed_file
        from jobfleet.agent.peers import ItemShare

        offer = message["seed"]
        piece_size = int(offer["piece_size"])
        results: list[protocol.UploadResult] = []
        for item in message.get("items") or []:
            blob, path = str(item["blob"]), str(item["path"])
            try:
                fd, size, digests = await seed_file(
                    path, str(message.get("account") or ""), message.get("max_size"), piece_size
                )
            except (TransferError, AccountError) as exc:
                status = exc.status if isinstance(exc, TransferError) else 311
                results.append({"blob": blob, "status": status, "error": str(exc)})
                continue
            have = bytearray(b"\x01" * len(digests))
            self.peers.offer(
                str(offer["transfer"]),
                str(offer["token"]),
                float(offer["expires"]),
                int(item["n"]),
                ItemShare(fd, size, piece_size, have),
            )
            results.append(
                {"blob": blob, "size": size, "pieces": base64.b64encode(b"".join(digests)).decode()}
            )
        return protocol.reply(request, results=results)

    async def download(
        self,
        task: protocol.DownloadRun,
        emit: Emit,
        report: Report,
        finals: list[protocol.FileItem] | None = None,
    ) -> tuple[TaskResult, list[protocol.FileItem]]:
        """Fetch every item of a download task; the first failure decides the host status.
        ``finals`` collects each item's final state as it ends (what a caller that
        cancels the download reports for the items already done)."""
        start = int(time.time() * 1000)
        account = str(task.get("account") or "")
        create = bool(task.get("create_dirs", True))
        limit = task.get("speed_limit") if isinstance(task.get("speed_limit"), int) else None
        finals = [] if finals is None else finals
        failure: TransferError | None = None
        swarm = task.get("swarm") if self.peers is not None and limit is None else None
        first_piece = 0
        try:
            for item in task.get("items") or []:
                failure = await self._download_item(
                    item,
                    swarm,
                    first_piece,
                    account,
                    create,
                    limit,
                    task,
                    (emit, report),
                    finals,
                    failure,
                )
                if swarm is not None and item.get("pieces"):
                    first_piece += protocol.piece_count(
                        int(item.get("size") or 0), swarm["piece_size"]
                    )
        finally:
            if swarm is not None and self.peers is not None:
                self.peers.finished(swarm["transfer"])
        end = int(time.time() * 1000)
        if failure is None:
            return TaskResult(int(HostStatus.SUCCESS), 0, start, end), finals
        return TaskResult(failure.status, 1, start, end), finals

    async def _download_item(
        self,
        item: protocol.DownloadItem,
        swarm: protocol.Swarm | None,
        first_piece: int,
        account: str,
        create: bool,
        limit: int | None,
        task: protocol.DownloadRun,
        out: tuple[Emit, Report],
        finals: list[protocol.FileItem],
        failure: TransferError | None,
    ) -> TransferError | None:
        """One item of a download task; returns the task's first failure so far."""
        from jobfleet.agent.files import TransferError, download, make_dir
        from jobfleet.agent.files.swarm import server_range, swarm_download

        emit, report = out
        n, dest = int(item["n"]), str(item["dest"])
        began = time.monotonic()
        size = int(item.get("size") or 0)
        try:
            if item.get("is_dir"):
                await asyncio.to_thread(
                    make_dir,
                    dest,
                    mode=int(item.get("mode") or 0o755),
                    account=account,
                    create_dirs=create,
                )
                finals.append({"n": n, "status": SUCCESS, "size": 0, "progress": 100})
                return failure
            last = [0.0]

            def progress(p: Progress) -> None:
                now = time.monotonic()
                if now - last[0] >= 1.0:
                    last[0] = now
                    pct = int(100 * p.done / p.total) if p.total else 100
                    report(
                        [
                            {
                                "n": n,
                                "status": DOWNLOADING,
                                "size": p.total,
                                "speed": _mb(p.bytes_per_second),
                                "progress": pct,
                            }
                        ]
                    )

            url = self.base + str(item["blob"])
            pieces = str(item.get("pieces") or "")
            max_size = task.get("max_size")
            if swarm is not None and self.peers is not None and pieces and size > 0:
                if max_size is not None and size > max_size:
                    raise TransferError(
                        HostStatus.GSE_FILE_SIZE_EXCEED,
                        f"{dest}: {size} bytes is over the limit of {max_size}",
                    )
                from_server, from_peers = await self._retrying(
                    functools.partial(
                        swarm_download,
                        swarm,
                        n,
                        first_piece,
                        dest,
                        size=size,
                        pieces=pieces,
                        mode=int(item.get("mode") or 0o644),
                        account=account,
                        create_dirs=create,
                        server=functools.partial(server_range, self.client, url, self.headers()),
                        peers=self.peers,
                        on_progress=progress,
                        seed=item.get("seed"),
                    )
                )
                self.swarm_bytes["server"] += from_server
                self.swarm_bytes["peers"] += from_peers
            else:
                await self._retrying(
                    functools.partial(
                        download,
                        self.client,
                        url,
                        self.headers(),
                        dest,
                        size=size,
                        sha256=str(item.get("sha256") or ""),
                        mode=int(item.get("mode") or 0o644),
                        account=account,
                        create_dirs=create,
                        speed_limit=limit,
                        on_progress=progress,
                        max_size=max_size,
                    )
                )
        except (TransferError, AccountError) as exc:
            error = exc if isinstance(exc, TransferError) else TransferError(311, str(exc))
            finals.append({"n": n, "status": FAILED, "progress": 0, "log": error.message})
            await emit(f"[{item.get('src')}] -> {dest}: failed: {error.message}\n")
            return failure or error
        speed = _mb(size / max(time.monotonic() - began, 1e-6))
        finals.append({"n": n, "status": SUCCESS, "size": size, "speed": speed, "progress": 100})
        await emit(f"[{item.get('src')}] -> {dest}: {size} bytes, {speed} MB/s\n")
        return failure

    async def _retrying(
        self, attempt: Callable[[], Awaitable[Any]], statuses: frozenset[int] = FETCH_FAILED
    ) -> Any:
        from jobfleet.agent.files import TransferError
        from jobfleet.agent.files.rights import ServerRefused

        deadline = time.monotonic() + RETRY_FOR
        delay = 0.5
        while True:
            try:
                return await attempt()
            except TransferError as exc:
                if (
                    exc.status not in statuses
                    or (isinstance(exc, ServerRefused) and exc.gone)
                    or time.monotonic() + delay > deadline
                ):
                    raise
                log.info("transfer_retry status=%s in=%.1fs", exc.status, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
