"""Streaming a file from the server into place, and recreating directory entries.

A downloaded file is written beside its destination under a hidden temporary name,
checked, fsynced and renamed over the destination (see the package's notes).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import logging
import os
import re
import secrets
import stat
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

from jobfleet.agent import credentials
from jobfleet.agent.files.pacing import FileThread, Meter, Pacer, Progress
from jobfleet.agent.files.rights import (
    Dir,
    Rights,
    TransferError,
    absolute,
    account_for,
    assume,
    open_parent,
    target_error,
)
from jobfleet.agent.files.upload import describe_http_error
from jobfleet.domain.protocol import transferred_mode
from jobfleet.domain.status import HostStatus

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

# chunks a download may have queued for the disk while more arrive
WRITE_AHEAD = 4
TEMP_MARK = ".jobfleet-"
_NAME_MAX = 255


async def download(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    dest: str,
    *,
    size: int,
    sha256: str,
    mode: int,
    account: str,
    create_dirs: bool,
    speed_limit: int | None,
    on_progress: Callable[[Progress], None] | None = None,
    chunk_size: int = 1 << 20,
    max_size: int | None = None,
    root: str | None = None,
) -> None:
    """Stream ``url`` into ``dest`` as ``account``, replacing it only once the bytes check out.

    ``create_dirs=False`` is bk-job's strict mode (the parent directory must exist);
    ``True`` creates missing parents, owned by the account. ``root`` is the operator's
    target path ``dest`` is below: no symlink below it is followed (``open_parent``).
    A connection dropped
    mid-stream is resumed once from the byte reached. Raises :class:`TransferError`:
    202 a target-side problem (directory missing in strict mode, permission denied,
    ``dest`` is a directory), 311 the account, 320 the bytes cannot be fetched,
    321 ``size`` is over ``max_size``, 329 the bytes are wrong (size or checksum).
    """
    if max_size is not None and size > max_size:
        raise TransferError(
            HostStatus.GSE_FILE_SIZE_EXCEED, f"{dest}: {size} bytes is over the limit of {max_size}"
        )
    io = FileThread()
    opened = _Opened()
    try:
        target = await io.run(lambda: opened.open(dest, account, create_dirs, root))
        started = time.monotonic()
        await _fetch(client, url, headers, target, size, io, speed_limit, on_progress, chunk_size)
        digest = target.sha.hexdigest()
        if target.written != size or digest != sha256.lower():
            raise TransferError(
                HostStatus.GSE_FILE_TASK_ERROR,
                f"checksum mismatch for {dest}: expected {size} bytes sha256 {sha256.lower()}, "
                f"received {target.written} bytes sha256 {digest}",
            )
        committed = target
        await io.run(lambda: committed.commit(mode))
        logger.info(
            "downloaded dest=%s size=%d account=%s seconds=%.3f",
            dest,
            size,
            account,
            time.monotonic() - started,
        )
    except BaseException as exc:
        if isinstance(exc, TransferError):
            logger.warning("download failed dest=%s status=%d error=%s", dest, exc.status, exc)
        await io.close(opened.discard)
        raise
    await io.close()


class _Opened:
    """The target a file thread opened, known to the cleanup queued after it even when
    the download was cancelled while the thread was still making the file."""

    def __init__(self) -> None:
        self.target: _Target | None = None

    def open(self, dest: str, account: str, create_dirs: bool, root: str | None) -> _Target:
        self.target = _open_target(dest, account, create_dirs, root)
        return self.target

    def discard(self) -> None:
        if self.target is not None:
            self.target.discard()


def make_dir(
    dest: str, *, mode: int, account: str, create_dirs: bool, root: str | None = None
) -> None:
    """Recreate a directory entry at ``dest`` as ``account``.

    A new directory gets ``mode`` with the owner's rwx added, so that the files copied
    into it can be written, and without set-ID bits; an existing directory is left as
    it is. Below ``root`` no symlink is followed, ``dest`` itself included. Raises
    :class:`TransferError` as :func:`download` does. Blocking: run it with
    ``asyncio.to_thread``.
    """
    rights = Rights(account_for(account))
    credentials.run_as(
        rights.account, functools.partial(_make_dir, dest, mode, rights, create_dirs, root)
    )


def _make_dir(
    dest: str, mode: int, rights: Rights, create_dirs: bool, root: str | None = None
) -> None:
    dest = absolute(dest)
    name = os.path.basename(dest)
    parent = open_parent(dest, rights, create_dirs, root)
    try:
        existing = parent.entry(name, follow=True)
        if existing is not None:
            if not stat.S_ISDIR(existing.st_mode):
                raise TransferError(
                    HostStatus.COPYFILE_FAILED, f"target {dest} exists and is not a directory"
                )
            return
        parent.check_writable(rights)
        kept = transferred_mode(mode, is_dir=True)
        parent.make_child(name, rights, kept | stat.S_IRWXU).close()
    finally:
        parent.close()


def _open_target(
    dest: str, account: str, create_dirs: bool, root: str | None = None
) -> _Target:
    rights = Rights(account_for(account))
    assume(rights.account)
    dest = absolute(dest)
    name = os.path.basename(dest)
    parent = open_parent(dest, rights, create_dirs, root)
    try:
        # below the target path a symlink is refused here (``Dir.entry``): the rename
        # would replace it rather than write through it, refused all the same, as the
        # symlinks above it are, for the operator to see
        followed = parent.entry(name, follow=True)
        if followed is not None and stat.S_ISDIR(followed.st_mode):
            raise TransferError(HostStatus.COPYFILE_FAILED, f"target {dest} is a directory")
        parent.check_writable(rights, parent.entry(name, follow=False))
        temp = _temp_name(name)
        # read too: a swarm download serves the pieces it has to its peers
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temp, flags, 0o600, dir_fd=parent.fd)
        except OSError as exc:
            raise target_error(parent.path, exc) from None
    except BaseException:
        parent.close()
        raise
    target = _Target(parent, name, temp, fd)
    try:
        owner = parent.owner_for(rights)
        if owner is not None:
            os.fchown(fd, *owner)
    except OSError as exc:
        target.discard()
        raise target_error(dest, exc) from None
    return target


def _temp_name(name: str) -> str:
    suffix = TEMP_MARK + secrets.token_hex(4)
    encoded = os.fsencode(name)
    room = _NAME_MAX - 1 - len(suffix)
    if len(encoded) > room:
        name = os.fsdecode(encoded[:room])
    return f".{name}{suffix}"


class _Target:
    """The temporary file a download writes, beside the file it will replace."""

    def __init__(self, parent: Dir, name: str, temp: str, fd: int) -> None:
        self.parent = parent
        self.name = name
        self.dest = os.path.join(parent.path, name)
        self.temp = temp
        self.fd: int | None = fd
        self.sha = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.sha.update(data)
        self.written += len(data)

    def restart(self) -> None:
        """Throw away what was written; the server is sending the whole file again."""
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.sha = hashlib.sha256()
        self.written = 0

    def commit(self, mode: int) -> None:
        assert self.fd is not None
        try:
            # data first, then the name: after a crash dest is the old file or the new,
            # never a new name over unwritten blocks
            os.fsync(self.fd)
        except OSError as exc:
            raise target_error(self.dest, exc) from None
        self.place(mode)
        self.parent.fsync()
        self.parent.close()

    def place(self, mode: int) -> None:
        """Give the file its mode and rename it over the destination; its data must be
        durable already, and its directory is fsynced after (by the caller)."""
        assert self.fd is not None
        try:
            # set-ID bits are dropped here too: a server of an earlier release passes on
            # whatever a source host listed
            os.fchmod(self.fd, transferred_mode(mode, is_dir=False))
        except OSError as exc:
            raise target_error(self.dest, exc) from None
        self._close()
        parent = self.parent.fd
        try:
            os.rename(self.temp, self.name, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise TransferError(
                    HostStatus.COPYFILE_FAILED, f"target {self.dest} is a directory"
                ) from None
            raise target_error(self.dest, exc) from None
        self.temp = ""

    def discard(self) -> None:
        self._close()
        if self.temp and self.parent.fd >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp, dir_fd=self.parent.fd)
        self.temp = ""
        self.parent.close()

    def _close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


class _Dropped(Exception):
    """The stream ended before the whole file arrived."""


async def _fetch(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    target: _Target,
    size: int,
    io: FileThread,
    speed_limit: int | None,
    on_progress: Callable[[Progress], None] | None,
    chunk_size: int,
) -> None:
    # loaded by the first transfer, not by every idle agent
    import httpx

    pacer = Pacer(speed_limit)
    meter = Meter(size, on_progress)
    chunk = pacer.chunk(max(1, chunk_size))
    writes = _WriteAhead(io)
    received = 0
    resumed = False
    try:
        while True:
            streaming = False
            request_headers = {**headers, "Accept-Encoding": "identity"}
            if received:
                request_headers["Range"] = f"bytes={received}-"
            try:
                async with client.stream("GET", url, headers=request_headers) as response:
                    if _accept(response, target, received):
                        await writes.drain()
                        await io.run(target.restart)
                        received = 0
                    streaming = True
                    async for data in response.aiter_raw(chunk):
                        if received + len(data) > size:
                            raise TransferError(
                                HostStatus.GSE_FILE_TASK_ERROR,
                                f"the server sent more than the {size} bytes expected for "
                                f"{target.dest}",
                            )
                        received += len(data)
                        await writes.put(functools.partial(target.write, data))
                        meter.update(received)
                        await pacer.take(len(data))
                if received < size:
                    raise _Dropped(f"stream ended at byte {received} of {size}")
                await writes.drain()
            except (httpx.TransportError, _Dropped) as exc:
                if streaming and not resumed:
                    resumed = True
                    logger.info(
                        "download resuming dest=%s from=%d error=%s", target.dest, received, exc
                    )
                    continue
                if isinstance(exc, _Dropped):
                    raise TransferError(
                        HostStatus.GSE_FILE_TASK_ERROR, f"truncated stream for {target.dest}: {exc}"
                    ) from None
                raise TransferError(
                    HostStatus.GSE_FILE_ERROR,
                    f"fetch failed for {target.dest}: {describe_http_error(exc)}",
                ) from exc
            except OSError as exc:
                raise target_error(target.dest, exc) from None
            meter.finish(received)
            return
    finally:
        writes.abandon()


class _WriteAhead:
    """Writes queued on the file thread while the next chunks arrive from the network.

    Waiting for each write before reading on serialises disk and network; a few
    chunks in flight overlap them and still bound memory to ``depth`` chunks."""

    def __init__(self, io: FileThread, depth: int = WRITE_AHEAD) -> None:
        self._io = io
        self._depth = depth
        self._pending: deque[asyncio.Future[None]] = deque()

    async def put(self, write: Callable[[], None]) -> None:
        self._pending.append(self._io.submit(write))
        while len(self._pending) > self._depth:
            await self._pending.popleft()

    async def drain(self) -> None:
        """Wait for every queued write; raises the first write's error."""
        while self._pending:
            await self._pending.popleft()

    def abandon(self) -> None:
        # the transfer failed anyway; keep unread write errors out of the loop's log
        for pending in self._pending:
            pending.add_done_callback(_consume)
        self._pending.clear()


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _accept(response: httpx.Response, target: _Target, received: int) -> bool:
    """Check the response fits what was asked; True if it restarts from byte 0."""
    if response.status_code == HTTPStatus.PARTIAL_CONTENT and received:
        first = _range_start(response.headers.get("Content-Range", ""))
        if first != received:
            raise TransferError(
                HostStatus.GSE_FILE_ERROR,
                f"fetch failed for {target.dest}: asked for byte {received}, "
                f"got range {response.headers.get('Content-Range')!r}",
            )
        return False
    if response.status_code == HTTPStatus.OK:
        # a server that ignores Range sends the whole file again
        return received > 0
    raise TransferError(
        HostStatus.GSE_FILE_ERROR, f"fetch failed for {target.dest}: HTTP {response.status_code}"
    )


def _range_start(content_range: str) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", content_range)
    return int(match.group(1)) if match else None
