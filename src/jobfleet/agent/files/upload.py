"""Streaming a source file's bytes to the server."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

from jobfleet.agent.accounts import (
    READ,
)
from jobfleet.agent.files.pacing import FileThread, Meter, Pacer, Progress
from jobfleet.agent.files.rights import Rights, TransferError, account_for, assume
from jobfleet.agent.files.sources import os_reason
from jobfleet.domain import protocol
from jobfleet.domain.status import HostStatus

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)


async def upload(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    path: str,
    *,
    speed_limit: int | None,
    on_progress: Callable[[Progress], None] | None = None,
    chunk_size: int = 1 << 20,
    max_size: int | None = None,
    account: str | None = None,
) -> tuple[int, str]:
    """Stream the file at ``path`` to ``url`` with a PUT; return (size, sha256 hex).

    With ``account``, the file must be readable by that account; a root agent checks
    this on the file it has opened, so a path swapped for a symlink since the listing
    cannot make it send a file the account may not read. The size is taken when the
    file is opened and sent as Content-Length; a file that grows meanwhile is sent up
    to that size, one that shrinks fails the upload. Raises :class:`TransferError`:
    203 the file is gone or not readable by ``account``, 311 the account, 321 the file
    is larger than ``max_size`` (or the server says so), 329 a read, network or HTTP
    failure.
    """
    io = FileThread()
    try:
        handle, size = await io.run(lambda: _open_source(path, account))
    except BaseException:
        await io.close()
        raise
    try:
        check_size(path, size, max_size)
        return await _send(
            client, url, headers, path, handle, size, io, speed_limit, on_progress, chunk_size
        )
    except TransferError as exc:
        logger.warning("upload failed path=%s status=%d error=%s", path, exc.status, exc)
        raise
    finally:
        await io.close(handle.close)


def _open_source(path: str, account: str | None) -> tuple[_Reader, int]:
    fd, size = open_source(path, account)
    return _Reader(fd), size


def check_size(path: str, size: int, max_size: int | None) -> None:
    """Refuse a source over the step's file size limit (321)."""
    if max_size is not None and size > max_size:
        raise TransferError(
            HostStatus.GSE_FILE_SIZE_EXCEED,
            f"{path} is {size} bytes, over the limit of {max_size}",
        )


def open_source(path: str, account: str | None) -> tuple[int, int]:
    """A descriptor on the regular file at ``path`` as ``account`` may read it, and its size."""
    rights = Rights(account_for(account)) if account is not None else None
    if rights is not None:
        assume(rights.account)
    try:
        # O_NONBLOCK: a FIFO put where the file was listed opens at once (and is then
        # refused as not a regular file) instead of holding the thread until a writer
        # comes; on a regular file it changes nothing
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TransferError(
            HostStatus.COPYFILE_SOURCE_FILE_NOT_EXIST, f"source file {path} does not exist"
        ) from None
    except PermissionError:
        # what the account cannot read counts as missing, as in expand_sources
        raise TransferError(
            HostStatus.COPYFILE_SOURCE_FILE_NOT_EXIST, f"{path}: permission denied"
        ) from None
    except OSError as exc:
        raise TransferError(
            HostStatus.GSE_FILE_TASK_ERROR, f"cannot open {path}: {os_reason(exc)}"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TransferError(
                HostStatus.COPYFILE_SOURCE_FILE_NOT_EXIST, f"{path} is not a regular file"
            )
        if rights is not None and not rights.may(path, st, READ):
            raise TransferError(
                HostStatus.COPYFILE_SOURCE_FILE_NOT_EXIST,
                f"{path}: permission denied for account {rights.account.name}",
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


class _Reader:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sha = hashlib.sha256()

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at end of file), hashed as read."""
        data = os.read(self.fd, n)
        while data and len(data) < n:
            more = os.read(self.fd, n - len(data))
            if not more:
                break
            data += more
        self.sha.update(data)
        return data

    def close(self) -> None:
        os.close(self.fd)


async def _send(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    path: str,
    reader: _Reader,
    size: int,
    io: FileThread,
    speed_limit: int | None,
    on_progress: Callable[[Progress], None] | None,
    chunk_size: int,
) -> tuple[int, str]:
    # loaded by the first transfer, not by every idle agent
    import httpx

    pacer = Pacer(speed_limit)
    meter = Meter(size, on_progress)
    chunk = pacer.chunk(max(1, chunk_size))
    started = time.monotonic()
    failure: TransferError | None = None

    async def body() -> AsyncIterator[bytes]:
        nonlocal failure
        sent = 0
        while sent < size:
            want = min(chunk, size - sent)
            try:
                data = await io.run(functools.partial(reader.read, want))
            except OSError as exc:
                failure = TransferError(
                    HostStatus.GSE_FILE_TASK_ERROR, f"cannot read {path}: {os_reason(exc)}"
                )
                raise failure from exc
            if not data:
                failure = TransferError(
                    HostStatus.GSE_FILE_TASK_ERROR,
                    f"{path} shrank to {sent} bytes while being sent ({size} expected)",
                )
                raise failure
            await pacer.take(len(data))
            yield data
            sent += len(data)
            meter.update(sent)

    request_headers = {
        **headers,
        "Content-Length": str(size),
        "Content-Type": "application/octet-stream",
    }
    try:
        response = await client.put(url, content=body(), headers=request_headers)
    except TransferError:
        raise
    except httpx.HTTPError as exc:
        if failure is not None:
            raise failure from exc
        raise TransferError(
            HostStatus.GSE_FILE_TASK_ERROR, f"upload of {path} failed: {describe_http_error(exc)}"
        ) from exc
    if not response.is_success:
        status = (
            HostStatus.GSE_FILE_SIZE_EXCEED
            if response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
            else HostStatus.GSE_FILE_TASK_ERROR
        )
        raise TransferError(
            status, f"upload of {path} refused: HTTP {response.status_code} {_why(response)}"
        )
    digest = reader.sha.hexdigest()
    _check_receipt(response, path, digest)
    meter.finish(size)
    logger.info(
        "uploaded path=%s size=%d sha256=%s seconds=%.3f",
        path,
        size,
        digest,
        time.monotonic() - started,
    )
    return size, digest


def _why(response: httpx.Response) -> str:
    """What the server said of a refusal: its envelope's message (a full disk, a file
    too large), else the start of the body."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return message[:300] if isinstance(message, str) and message else response.text[:200]


def _check_receipt(response: httpx.Response, path: str, digest: str) -> None:
    """Hold the server's answer, when it is a jobfleet envelope, against what was sent."""
    if "json" not in response.headers.get("content-type", ""):
        return
    try:
        body = response.json()
    except ValueError:
        return
    if not isinstance(body, dict):
        return
    if body.get("result") is False:
        raise TransferError(
            HostStatus.GSE_FILE_TASK_ERROR,
            f"upload of {path} refused: {body.get('code')} {body.get('message')}",
        )
    data = body.get("data")
    stored = data.get("sha256") if isinstance(data, dict) else None
    # the bytes were hashed on both ends; a difference means they changed in between
    if isinstance(stored, str) and stored and stored.lower() != digest:
        raise TransferError(
            HostStatus.GSE_FILE_TASK_ERROR,
            f"checksum mismatch for {path}: sent sha256 {digest}, server stored {stored}",
        )


def describe_http_error(exc: httpx.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def read_small(path: str, account: str | None, max_size: int | None) -> bytes | None:
    """The whole file at ``path`` as ``account`` may read it, for a bundle; None when it
    is larger than a bundle takes (it is sent alone). Raises :class:`TransferError` as
    :func:`upload` does. Blocking: run it in the transfer's :class:`FileThread`."""
    fd, size = open_source(path, account)
    try:
        check_size(path, size, max_size)
        if size > protocol.BUNDLE_MAX_FILE_BYTES:
            return None
        data = b""
        while len(data) < size:
            try:
                more = os.read(fd, size - len(data))
            except OSError as exc:
                raise TransferError(
                    HostStatus.GSE_FILE_TASK_ERROR, f"cannot read {path}: {os_reason(exc)}"
                ) from None
            if not more:
                raise TransferError(
                    HostStatus.GSE_FILE_TASK_ERROR,
                    f"{path} shrank to {len(data)} bytes while being sent ({size} expected)",
                )
            data += more
        return data
    finally:
        os.close(fd)


async def upload_bundle(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    files: list[tuple[str, str, bytes]],
) -> dict[str, tuple[int, str] | TransferError]:
    """Send ``files`` (blob id, path, bytes) in one request (bundles, ``domain.protocol``).

    Returns each file's (size, sha256) as the server stored it, or its own error; a
    file with no outcome (the request failed, or another writer of it won) is for the
    caller to send alone."""
    import httpx

    manifest = json.dumps({"files": [{"blob": b, "size": len(d)} for b, _, d in files]}).encode()
    length = 4 + len(manifest) + sum(len(d) for _, _, d in files)

    async def body() -> AsyncIterator[bytes]:
        # the files as they were read, not one more copy of them all
        yield len(manifest).to_bytes(4, "big") + manifest
        for _, _, data in files:
            yield data

    started = time.monotonic()
    try:
        response = await client.put(
            url,
            content=body(),
            headers={
                **headers,
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
            },
        )
    except httpx.HTTPError as exc:
        logger.info("bundle upload failed files=%d error=%s", len(files), describe_http_error(exc))
        return {}
    if not response.is_success:
        logger.info("bundle upload refused files=%d status=%d", len(files), response.status_code)
        return {}
    try:
        answered = response.json()["data"]["files"]
        stored = {str(f["file_id"]): f for f in answered}
    except (ValueError, KeyError, TypeError):
        logger.warning("bundle upload answer unreadable files=%d", len(files))
        return {}
    outcomes: dict[str, tuple[int, str] | TransferError] = {}
    for blob, path, data in files:
        result = stored.get(blob)
        if not isinstance(result, dict) or "sha256" not in result:
            continue
        digest = hashlib.sha256(data).hexdigest()
        # the bytes were hashed on both ends; a difference means they changed in between
        if str(result["sha256"]).lower() != digest:
            outcomes[blob] = TransferError(
                HostStatus.GSE_FILE_TASK_ERROR,
                f"checksum mismatch for {path}: sent sha256 {digest}, "
                f"server stored {result['sha256']}",
            )
            continue
        outcomes[blob] = (len(data), digest)
    logger.info(
        "uploaded bundle files=%d bytes=%d seconds=%.3f",
        len(files),
        length,
        time.monotonic() - started,
    )
    return outcomes
