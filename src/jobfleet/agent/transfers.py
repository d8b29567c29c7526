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
import os
import ssl
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypeVar, cast

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
# a download or upload item, cut into bundles alike
_Item = TypeVar("_Item")

BLOB_PATH = "/api/jobfleet/v1/agents/blobs/"
# a server restart or a dropped connection is worth waiting out, a real refusal is not
FETCH_FAILED = frozenset({int(HostStatus.GSE_FILE_ERROR)})
# an upload cut by a server restart surfaces as a transfer error
UPLOAD_RETRY = frozenset({int(HostStatus.GSE_FILE_ERROR), int(HostStatus.GSE_FILE_TASK_ERROR)})
RETRY_FOR = 60.0
# requests a download task has in flight (a bundle of small files counts as one)
DOWNLOAD_LANES = 4
# files a source agent sends at once
UPLOAD_LANES = 4
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

    async def _server_range(
        self, blob: str, offset: int, length: int, into: bytearray
    ) -> memoryview:
        from jobfleet.agent.files.swarm import server_range

        # the node's address is read for each piece: the agent may have moved
        url = self.base + blob
        return await server_range(self.client, url, self.headers(), offset, length, into)

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
        """Send each item's file to the server, ``UPLOAD_LANES`` requests at a time; small
        files go many to a request (bundles, ``domain.protocol``). Under a speed limit the files
        go one at a time, each alone. Each item gets its own result, in order."""
        from jobfleet.agent.files import TransferError, upload

        limit = message.get("speed_limit")
        items = message.get("items") or []
        account = str(message.get("account") or "")
        max_size = message.get("max_size")
        limited = isinstance(limit, int)
        lanes = asyncio.Semaphore(UPLOAD_LANES if not limited else 1)
        results: dict[str, protocol.UploadResult] = {}

        async def alone(item: protocol.UploadItem) -> None:
            blob, path = str(item["blob"]), str(item["path"])
            started = time.monotonic()
            try:
                size, digest = await self._retrying(
                    lambda: upload(
                        self.client,
                        # read at each attempt: after its node died, to the node it moved to
                        self.base + blob,
                        self.headers(),
                        path,
                        speed_limit=limit if isinstance(limit, int) else None,
                        max_size=max_size,
                        account=account,
                    ),
                    UPLOAD_RETRY,
                )
            except (TransferError, AccountError) as exc:
                status = exc.status if isinstance(exc, TransferError) else 311
                results[blob] = {"blob": blob, "status": status, "error": str(exc)}
                return
            elapsed = max(time.monotonic() - started, 1e-6)
            results[blob] = {
                "blob": blob,
                "size": size,
                "sha256": digest,
                "speed": _mb(size / elapsed),
            }

        async def in_lane(work: Awaitable[None]) -> None:
            async with lanes:
                await work

        sizes = (
            await asyncio.to_thread(_sizes, [str(i["path"]) for i in items])
            if not limited
            else [None] * len(items)
        )
        size_of = {str(i["blob"]): size for i, size in zip(items, sizes, strict=True)}
        small = [i for i in items if _small(size_of[str(i["blob"])])]
        async with asyncio.TaskGroup() as group:
            for bundle in _bundles(small, lambda item: size_of.get(str(item["blob"])) or 0):
                group.create_task(
                    in_lane(self._upload_bundle(bundle, account, max_size, alone, results))
                )
            for item in items:
                if not _small(size_of[str(item["blob"])]):
                    group.create_task(in_lane(alone(item)))
        ordered = [results[str(i["blob"])] for i in items]
        seeded = message.get("seed_transfer")
        if seeded and self.peers is not None:
            # the server holds the files now: targets that still want pieces get them
            # from it once this agent stops serving them
            self.peers.finished(str(seeded))
        return protocol.reply(request, results=ordered)

    async def _upload_bundle(
        self,
        items: list[protocol.UploadItem],
        account: str,
        max_size: int | None,
        alone: Callable[[protocol.UploadItem], Awaitable[None]],
        results: dict[str, protocol.UploadResult],
    ) -> None:
        """Small files in one request; what the bundle could not send goes alone."""
        from jobfleet.agent.files import TransferError
        from jobfleet.agent.files.pacing import FileThread
        from jobfleet.agent.files.upload import read_small, upload_bundle

        def read_all() -> list[bytes | TransferError | AccountError | None]:
            out: list[bytes | TransferError | AccountError | None] = []
            for item in items:
                try:
                    out.append(read_small(str(item["path"]), account, max_size))
                except (TransferError, AccountError) as exc:
                    out.append(exc)
            return out

        started = time.monotonic()
        io = FileThread()
        try:
            # the file thread takes the account's identity to read as it would
            read = await io.run(read_all)
        finally:
            await io.close()
        sending: list[tuple[str, str, bytes]] = []
        later: list[protocol.UploadItem] = []
        for item, got in zip(items, read, strict=True):
            blob = str(item["blob"])
            if isinstance(got, TransferError | AccountError):
                status = got.status if isinstance(got, TransferError) else 311
                results[blob] = {"blob": blob, "status": status, "error": str(got)}
            elif got is None:
                later.append(item)
            else:
                sending.append((blob, str(item["path"]), got))
        outcomes = (
            await upload_bundle(
                self.client, self.base + protocol.BUNDLE_PATH, self.headers(), sending
            )
            if sending
            else {}
        )
        elapsed = max(time.monotonic() - started, 1e-6)
        speed = _mb(sum(len(d) for _, _, d in sending) / elapsed)
        by_blob = {str(i["blob"]): i for i in items}
        for blob, _, _ in sending:
            outcome = outcomes.get(blob)
            if outcome is None:
                later.append(by_blob[blob])
            elif isinstance(outcome, TransferError):
                results[blob] = {"blob": blob, "status": outcome.status, "error": str(outcome)}
            else:
                results[blob] = {
                    "blob": blob,
                    "size": outcome[0],
                    "sha256": outcome[1],
                    "speed": speed,
                }
        for item in later:
            await alone(item)

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
        """Fetch every item of a download task; the failure of the first item that fails
        decides the host status. ``finals`` collects each item's final state as it ends
        (what a caller that cancels the download reports for the items already done).

        Directory entries are made first, in order (each before what it holds). Files
        are then fetched ``DOWNLOAD_LANES`` at a time, small ones many to a request
        (``agent.files.bundle``); a task with a speed limit, or naming one destination
        twice, is fetched one item at a time, in order."""
        start = int(time.time() * 1000)
        account = str(task.get("account") or "")
        create = bool(task.get("create_dirs", True))
        limit = task.get("speed_limit") if isinstance(task.get("speed_limit"), int) else None
        finals = [] if finals is None else finals
        failures: dict[int, TransferError] = {}
        swarm = task.get("swarm") if self.peers is not None and limit is None else None
        items = list(task.get("items") or [])
        first_piece: dict[int, int] = {}
        pieces_before = 0
        for item in items:
            first_piece[int(item["n"])] = pieces_before
            if swarm is not None and item.get("pieces"):
                pieces_before += protocol.piece_count(
                    int(item.get("size") or 0), swarm["piece_size"]
                )

        async def one(item: protocol.DownloadItem) -> None:
            error = await self._download_item(
                item,
                swarm,
                first_piece[int(item["n"])],
                account,
                create,
                limit,
                task,
                (emit, report),
                finals,
            )
            if error is not None:
                failures[int(item["n"])] = error

        try:
            dests = [str(i["dest"]) for i in items]
            if limit is not None or len(set(dests)) != len(dests):
                for item in items:
                    await one(item)
            else:
                for item in items:
                    if item.get("is_dir"):
                        await one(item)
                await self._download_files(
                    [i for i in items if not i.get("is_dir")],
                    swarm,
                    one,
                    account,
                    create,
                    task,
                    emit,
                    finals,
                    failures,
                )
        finally:
            if swarm is not None and self.peers is not None:
                self.peers.finished(swarm["transfer"])
        end = int(time.time() * 1000)
        if not failures:
            return TaskResult(int(HostStatus.SUCCESS), 0, start, end), finals
        return TaskResult(failures[min(failures)].status, 1, start, end), finals

    async def _download_files(
        self,
        items: list[protocol.DownloadItem],
        swarm: protocol.Swarm | None,
        one: Callable[[protocol.DownloadItem], Awaitable[None]],
        account: str,
        create: bool,
        task: protocol.DownloadRun,
        emit: Emit,
        finals: list[protocol.FileItem],
        failures: dict[int, TransferError],
    ) -> None:
        """The files of a task, ``DOWNLOAD_LANES`` requests at a time; swarm downloads
        (large files shared between peers) one at a time, as before."""
        max_size = task.get("max_size")
        small = [i for i in items if _bundled(i, swarm, max_size)]
        alone = [i for i in items if not _bundled(i, swarm, max_size)]
        lanes = asyncio.Semaphore(DOWNLOAD_LANES)
        swarming = asyncio.Lock()

        async def in_lane(work: Awaitable[None], item: protocol.DownloadItem | None) -> None:
            async with lanes:
                if item is not None and swarm is not None and item.get("pieces"):
                    async with swarming:
                        await work
                else:
                    await work

        async with asyncio.TaskGroup() as group:
            for bundle in _bundles(small, lambda item: int(item.get("size") or 0)):
                group.create_task(
                    in_lane(
                        self._download_bundle(bundle, one, account, create, emit, finals, failures),
                        None,
                    )
                )
            for item in alone:
                group.create_task(in_lane(one(item), item))

    async def _download_bundle(
        self,
        items: list[protocol.DownloadItem],
        one: Callable[[protocol.DownloadItem], Awaitable[None]],
        account: str,
        create: bool,
        emit: Emit,
        finals: list[protocol.FileItem],
        failures: dict[int, TransferError],
    ) -> None:
        """Small files in one request; what the bundle could not settle is fetched alone."""
        from jobfleet.agent.files.bundle import Wanted, fetch_bundle

        began = time.monotonic()
        outcomes = await fetch_bundle(
            self.client,
            self.base + protocol.BUNDLE_PATH,
            self.headers(),
            [
                Wanted(
                    int(i["n"]),
                    str(i["blob"]),
                    str(i["dest"]),
                    int(i.get("size") or 0),
                    str(i.get("sha256") or ""),
                    int(i.get("mode") or 0o644),
                    _root(i),
                )
                for i in items
            ],
            account=account,
            create_dirs=create,
        )
        total = sum(int(i.get("size") or 0) for i in items)
        speed = _mb(total / max(time.monotonic() - began, 1e-6))
        lines = []
        for item in items:
            n, dest = int(item["n"]), str(item["dest"])
            if n not in outcomes:
                await one(item)
                continue
            error = outcomes[n]
            if error is None:
                size = int(item.get("size") or 0)
                finals.append(
                    {"n": n, "status": SUCCESS, "size": size, "speed": speed, "progress": 100}
                )
                lines.append(f"[{item.get('src')}] -> {dest}: {size} bytes, {speed} MB/s\n")
            else:
                failures[n] = error
                finals.append({"n": n, "status": FAILED, "progress": 0, "log": error.message})
                lines.append(f"[{item.get('src')}] -> {dest}: failed: {error.message}\n")
        if lines:
            await emit("".join(lines))

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
    ) -> TransferError | None:
        """One item of a download task; returns its failure, if it failed."""
        from jobfleet.agent.files import TransferError, download, make_dir
        from jobfleet.agent.files.swarm import swarm_download

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
                    root=_root(item),
                )
                finals.append({"n": n, "status": SUCCESS, "size": 0, "progress": 100})
                return None
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

            blob = str(item["blob"])
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
                        server=functools.partial(self._server_range, blob),
                        peers=self.peers,
                        on_progress=progress,
                        seed=item.get("seed"),
                        root=_root(item),
                    )
                )
                self.swarm_bytes["server"] += from_server
                self.swarm_bytes["peers"] += from_peers
            else:
                await self._retrying(
                    lambda: download(
                        self.client,
                        # read at each attempt: after its node died, the agent fetches
                        # from the node it moved to (the bytes are in the database)
                        self.base + blob,
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
                        root=_root(item),
                    )
                )
        except (TransferError, AccountError) as exc:
            error = exc if isinstance(exc, TransferError) else TransferError(311, str(exc))
            finals.append({"n": n, "status": FAILED, "progress": 0, "log": error.message})
            await emit(f"[{item.get('src')}] -> {dest}: failed: {error.message}\n")
            return error
        speed = _mb(size / max(time.monotonic() - began, 1e-6))
        finals.append({"n": n, "status": SUCCESS, "size": size, "speed": speed, "progress": 100})
        await emit(f"[{item.get('src')}] -> {dest}: {size} bytes, {speed} MB/s\n")
        return None

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


def _root(item: protocol.DownloadItem) -> str | None:
    """The operator's target path the item's ``dest`` is below; None from a server of an
    earlier release, whose items name none."""
    root = item.get("root")
    return root if isinstance(root, str) else None


def _bundled(item: protocol.DownloadItem, swarm: protocol.Swarm | None, max_size: Any) -> bool:
    """Whether a file is fetched with others in one request (bundles, ``domain.protocol``)."""
    size = item.get("size")
    return (
        isinstance(size, int)
        and 0 <= size <= protocol.BUNDLE_MAX_FILE_BYTES
        and (not isinstance(max_size, int) or size <= max_size)
        and bool(item.get("sha256"))
        and bool(item.get("blob"))
        and not (swarm is not None and item.get("pieces") and size > 0)
    )


def _bundles(items: list[_Item], size: Callable[[_Item], int]) -> list[list[_Item]]:
    """``items`` in order, cut into bundles within the server's limits."""
    out: list[list[_Item]] = []
    held = 0
    for item in items:
        bytes_ = size(item)
        if (
            not out
            or len(out[-1]) >= protocol.BUNDLE_MAX_FILES
            or held + bytes_ > protocol.BUNDLE_MAX_BYTES
        ):
            out.append([])
            held = 0
        out[-1].append(item)
        held += bytes_
    return out


def _small(size: int | None) -> bool:
    return size is not None and size <= protocol.BUNDLE_MAX_FILE_BYTES


def _sizes(paths: list[str]) -> list[int | None]:
    """Each file's size as this agent sees it (None: not a regular file it can see):
    only which files go in a bundle depends on it, each is read as the account."""
    out: list[int | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append(st.st_size if stat.S_ISREG(st.st_mode) else None)
    return out
