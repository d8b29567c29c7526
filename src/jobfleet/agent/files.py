"""The host side of a file transfer: listing sources, and streaming bytes through the server.

A file step moves data source agent → server → target agent over HTTP. The source
agent lists what the step's patterns name (:func:`expand_sources`) and streams each
file's bytes to the server (:func:`upload`); every target agent streams them back into
place (:func:`download`) and recreates directory entries (:func:`make_dir`). The
connection code calls these and turns :class:`TransferError` into host statuses.

Accounts. Everything happens with the rights of the step's account. An agent running
as an ordinary user acts only as itself (anything else is an ``AccountError``, status
311) and the kernel enforces its rights. A root agent acting for another account
does each listing, read and write in a thread that has taken the account's file-system
identity (:mod:`jobfleet.agent.credentials`), so the kernel resolves every path as the
account: a symlink at any component, or ``..``, leads only where the account may go.
It also judges the account's rights itself first, from the account's uid, primary gid
and supplementary groups against each inode's owner and permission bits — including
the search bit of every directory above the path and above where its symlinks lead,
and the sticky-directory rule on replace — to refuse with a clear message before
touching anything; on a machine where threads cannot take an identity, that judgement
is the only one (and ACLs are then not consulted).

Durability. A downloaded file is written beside its destination under a hidden
temporary name, checked against the expected size and sha256, fsynced, given its mode
and owner, and renamed over the destination; the directory is fsynced after the
rename. A partial or corrupt download never replaces a good file, and every failure
removes the temporary file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import functools
import hashlib
import logging
import os
import re
import secrets
import stat
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import httpx

from jobfleet.agent import credentials
from jobfleet.agent.accounts import (
    READ,
    SEARCH,
    WRITE,
    Account,
    AccountError,
    lookup_account,
    permits,
)
from jobfleet.domain.status import HostStatus

logger = logging.getLogger(__name__)

T = TypeVar("T")

REGEX_MARK = "REGEX:"
# at most this many progress reports a second (besides the final one)
REPORT_INTERVAL = 0.25
# idle time a rate-limited transfer may catch up on in one burst
BURST_SECONDS = 0.1
# a rate-limited transfer moves at most this many seconds' worth of bytes per chunk,
# so the limit shows as a steady rate rather than bursts and pauses
PACE_SLICE = 0.125
MIN_CHUNK = 16 * 1024
# chunks a download may have queued for the disk while more arrive
WRITE_AHEAD = 4
TEMP_MARK = ".jobfleet-"
_NAME_MAX = 255
_GLOB_MAGIC = re.compile(r"[*?\[]")


class TransferError(Exception):
    """A transfer failed; ``status`` is the host status to report (``HostStatus``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class MissingSource(str):
    """A source pattern (or a file under it) that yields nothing, with the reason."""

    reason: str

    def __new__(cls, value: str, reason: str) -> MissingSource:
        missing = super().__new__(cls, value)
        missing.reason = reason
        return missing


@dataclass
class SourceFile:
    path: str  # absolute path on the source host
    rel: str  # relative path the file gets under the target directory
    size: int
    mode: int  # permission bits (st_mode & 0o7777)
    is_dir: bool  # an (empty or not) directory entry to recreate


@dataclass
class Progress:
    done: int
    total: int
    bytes_per_second: float


# --- rights -------------------------------------------------------------------------


class _Rights:
    """What one account may do here, with the answers about directories remembered."""

    def __init__(self, account: Account) -> None:
        self.account = account
        # a root agent acting for another account must judge that account's rights
        self.judged = account.is_other
        self._root = os.geteuid() == 0
        self._searchable: dict[str, bool] = {}

    def may(self, path: str, st: os.stat_result, want: int) -> bool:
        """``want`` on ``path`` (whose stat is ``st``), the way there included."""
        if self.judged:
            return permits(self.account, st, want) and self.reachable(path)
        return self._root or os.access(path, _access_mode(want))

    def allows(self, path: str, st: os.stat_result, want: int) -> bool:
        """``want`` on ``path``, in a directory already known to be reachable."""
        if self.judged:
            return permits(self.account, st, want)
        return self._root or os.access(path, _access_mode(want))

    def reachable(self, path: str) -> bool:
        """Every directory above ``path`` is searchable, by its name and where it lives."""
        if not self.judged:
            return True
        parent = os.path.dirname(os.path.normpath(path))
        # where the path leads once every symlink in it, the last one too, is followed
        real = os.path.dirname(os.path.realpath(path))
        return all(self._search(d) for d in {*_lineage(parent), *_lineage(real)})

    def _search(self, directory: str) -> bool:
        known = self._searchable.get(directory)
        if known is None:
            try:
                known = permits(self.account, os.stat(directory), SEARCH)
            except OSError:
                known = False
            self._searchable[directory] = known
        return known


def _access_mode(want: int) -> int:
    mode = os.R_OK if want & READ else 0
    mode |= os.W_OK if want & WRITE else 0
    return mode | (os.X_OK if want & SEARCH else 0)


def _lineage(directory: str) -> list[str]:
    """``directory`` and every directory above it."""
    chain = [directory]
    while True:
        parent = os.path.dirname(directory)
        if parent == directory:
            return chain
        chain.append(parent)
        directory = parent


# --- listing sources ----------------------------------------------------------------


def expand_sources(patterns: list[str], account: str) -> tuple[list[SourceFile], list[str]]:
    """The files and directory entries ``patterns`` name, listed as ``account``.

    A pattern is an absolute path to a file or a directory (copied with everything in
    it, under its own name), a glob (``*``, ``?``, ``[a-z]``; ``rel`` starts at the
    last directory before the first wildcard), or ``<dir>/REGEX:<expr>`` (entries of
    ``<dir>`` whose name fully matches ``expr``). Directory entries come before what
    they contain. Symlinks named by a pattern are followed; inside a directory,
    symlinked files are copied as files and symlinked directories are skipped. Sockets,
    fifos and devices are skipped.

    Returns ``(found, missing)``: every item of ``missing`` is a :class:`MissingSource`
    (a ``str`` equal to the pattern, or to a file under it that ``account`` may not
    read) whose ``reason`` says why. Raises ``AccountError`` (status 311) if this agent
    cannot act as ``account``. Blocking: run it with ``asyncio.to_thread``.
    """
    rights = _Rights(lookup_account(account))
    lister = _Lister(rights)

    def expand_all() -> None:
        for pattern in patterns:
            lister.expand(pattern)

    credentials.run_as(rights.account, expand_all)
    logger.info(
        "sources listed account=%s patterns=%d found=%d missing=%d",
        account,
        len(patterns),
        len(lister.found),
        len(lister.missing),
    )
    return lister.found, lister.missing


class _Lister:
    def __init__(self, rights: _Rights) -> None:
        self.rights = rights
        self.found: list[SourceFile] = []
        self.missing: list[str] = []
        self._seen: set[tuple[str, str]] = set()
        # entries matched so far, an earlier pattern's duplicates included
        self._matched = 0

    def expand(self, pattern: str) -> None:
        before = (self._matched, len(self.missing))
        reason = "no such file or directory"
        if not os.path.isabs(pattern):
            reason = "not an absolute path"
        elif REGEX_MARK in pattern:
            reason = self._regex(pattern) or reason
        elif _GLOB_MAGIC.search(pattern):
            reason = self._glob(pattern) or "no match"
        else:
            reason = self._plain(pattern) or reason
        if (self._matched, len(self.missing)) == before:
            self.missing.append(MissingSource(pattern, reason))

    # each form returns a reason when it finds nothing for a reason better than "absent"

    def _plain(self, pattern: str) -> str | None:
        path = os.path.normpath(pattern)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return _reason(exc)
        return self._top(path, os.path.basename(path), st)

    def _glob(self, pattern: str) -> str | None:
        parts = pattern.split("/")
        first = next(i for i, part in enumerate(parts) if _GLOB_MAGIC.search(part))
        base = "/".join(parts[:first]) or "/"
        level = [os.path.normpath(base)]
        denied = False
        rest = [part for part in parts[first:] if part]
        for depth, part in enumerate(rest):
            last = depth == len(rest) - 1
            matched: list[str] = []
            for directory in level:
                if _GLOB_MAGIC.search(part):
                    names = self._names(directory)
                    if names is None:
                        denied = True
                        continue
                    matched.extend(
                        os.path.join(directory, name) for name in names if _glob_match(name, part)
                    )
                elif os.path.lexists(os.path.join(directory, part)):
                    matched.append(os.path.join(directory, part))
            level = matched if last else [path for path in matched if os.path.isdir(path)]
        if pattern.endswith("/"):
            level = [path for path in level if os.path.isdir(path)]
        base = os.path.normpath(base)
        for path in level:
            try:
                st = os.stat(path)
            except OSError:
                continue  # a dangling symlink matched
            self._top(path, os.path.relpath(path, base), st, skip_special=True)
        return "permission denied" if denied else None

    def _regex(self, pattern: str) -> str | None:
        head, _, expr = pattern.partition(REGEX_MARK)
        if not head.endswith("/"):
            return f"{REGEX_MARK} must follow a '/'"
        try:
            regex = re.compile(expr)
        except re.error as exc:
            return f"invalid regular expression: {exc}"
        directory = os.path.normpath(head)
        try:
            if not os.path.isdir(directory):
                return None
        except OSError as exc:
            return _reason(exc)
        names = self._names(directory)
        if names is None:
            return "permission denied"
        for name in names:
            if regex.fullmatch(name) is None:
                continue
            path = os.path.join(directory, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            self._top(path, name, st, skip_special=True)
        return None

    def _names(self, directory: str) -> list[str] | None:
        """The sorted entry names of ``directory``, or None if the account cannot list it."""
        try:
            if not self.rights.may(directory, os.stat(directory), READ | SEARCH):
                return None
            return sorted(os.listdir(directory))
        except OSError:
            return None

    def _top(
        self, path: str, rel: str, st: os.stat_result, *, skip_special: bool = False
    ) -> str | None:
        """Add what a pattern named directly: a file, or a directory and its contents."""
        if stat.S_ISDIR(st.st_mode):
            if path == "/":
                return "will not copy the root directory"
            if not self.rights.may(path, st, READ | SEARCH):
                self._deny(path)
                return None
            self._add(path, rel, st, is_dir=True)
            self._walk(path, rel)
        elif stat.S_ISREG(st.st_mode):
            if self.rights.may(path, st, READ):
                self._add(path, rel, st, is_dir=False)
            else:
                self._deny(path)
        elif not skip_special:
            return "not a regular file or directory"
        return None

    def _walk(self, top: str, top_rel: str) -> None:
        # an explicit stack: trees deeper than the recursion limit exist
        stack = [(top, top_rel)]
        while stack:
            directory, rel = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = sorted(it, key=lambda entry: entry.name)
            except OSError as exc:
                self.missing.append(MissingSource(directory, _reason(exc)))
                continue
            below: list[tuple[str, str]] = []
            for entry in entries:
                path, entry_rel = entry.path, f"{rel}/{entry.name}"
                try:
                    link = entry.is_symlink()
                    st = os.stat(path) if link else entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    logger.debug("skipped vanished or dangling entry path=%s", path)
                    continue
                except OSError as exc:
                    self.missing.append(MissingSource(path, _reason(exc)))
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if link:
                        # following links to directories could loop or leave the tree
                        logger.debug("skipped symlinked directory path=%s", path)
                    elif self.rights.allows(path, st, READ | SEARCH):
                        self._add(path, entry_rel, st, is_dir=True)
                        below.append((path, entry_rel))
                    else:
                        self._deny(path)
                elif stat.S_ISREG(st.st_mode):
                    # a link's target lives elsewhere: check the way there too
                    ok = (
                        self.rights.may(path, st, READ)
                        if link
                        else self.rights.allows(path, st, READ)
                    )
                    if ok:
                        self._add(path, entry_rel, st, is_dir=False)
                    else:
                        self._deny(path)
                else:
                    logger.debug("skipped special file path=%s", path)
            stack.extend(reversed(below))

    def _add(self, path: str, rel: str, st: os.stat_result, *, is_dir: bool) -> None:
        self._matched += 1
        if (path, rel) in self._seen:
            return
        self._seen.add((path, rel))
        size = 0 if is_dir else st.st_size
        self.found.append(SourceFile(path, rel, size, st.st_mode & 0o7777, is_dir))

    def _deny(self, path: str) -> None:
        reason = f"permission denied for account {self.rights.account.name}"
        self.missing.append(MissingSource(path, reason))


def _glob_match(name: str, part: str) -> bool:
    # like the shell and glob.glob: a wildcard does not match a leading dot
    if name.startswith(".") and not part.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, part)


def _reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)


# --- pacing and progress ------------------------------------------------------------


class _Pacer:
    """A token bucket kept as a schedule: n bytes may go once the clock passes ``due``.

    The bucket starts empty, so a limited transfer never starts with a burst, and holds
    at most ``BURST_SECONDS`` of idle time, so a slow network does not earn a later
    burst above the limit."""

    def __init__(self, rate: int | None) -> None:
        self.rate = rate if rate is not None and rate > 0 else None
        self._due: float | None = None

    def chunk(self, chunk_size: int) -> int:
        if self.rate is None:
            return chunk_size
        return max(1, min(chunk_size, max(MIN_CHUNK, int(self.rate * PACE_SLICE))))

    async def take(self, n: int) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        due = now if self._due is None else max(self._due, now - BURST_SECONDS)
        self._due = due + n / self.rate
        if self._due > now:
            await asyncio.sleep(self._due - now)


class _Meter:
    def __init__(self, total: int, callback: Callable[[Progress], None] | None) -> None:
        self._total = total
        self._callback = callback
        self._start = self._last = time.monotonic()
        self._last_done = 0

    def update(self, done: int) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        if now - self._last < REPORT_INTERVAL:
            return
        speed = max(0.0, (done - self._last_done) / (now - self._last))
        self._last, self._last_done = now, done
        self._callback(Progress(done, self._total, speed))

    def finish(self, done: int) -> None:
        if self._callback is None:
            return
        elapsed = time.monotonic() - self._start
        self._callback(Progress(done, self._total, done / elapsed if elapsed > 0 else 0.0))


class _FileThread:
    """The one thread that does a transfer's file I/O, in order.

    Ordering is the point: after a cancellation the cleanup queued here runs only once
    the read or write in flight has finished, so a descriptor is never closed (and its
    number reused) under a thread still using it."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobfleet-file")

    async def run(self, fn: Callable[[], T]) -> T:
        return await self.submit(fn)

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def close(self, cleanup: Callable[[], None] | None = None) -> None:
        """Run ``cleanup`` after whatever is in flight, then let the thread go.

        A cancellation while waiting does not stop ``cleanup``; it still runs."""
        try:
            if cleanup is not None:
                queued = self._pool.submit(_logged, cleanup)
                await asyncio.shield(asyncio.wrap_future(queued))
        finally:
            self._pool.shutdown(wait=False)


def _logged(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        logger.exception("file cleanup failed")


# --- upload -------------------------------------------------------------------------


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
    io = _FileThread()
    try:
        handle, size = await io.run(lambda: _open_source(path, account))
    except BaseException:
        await io.close()
        raise
    try:
        if max_size is not None and size > max_size:
            raise TransferError(
                HostStatus.GSE_FILE_SIZE_EXCEED,
                f"{path} is {size} bytes, over the limit of {max_size}",
            )
        return await _send(
            client, url, headers, path, handle, size, io, speed_limit, on_progress, chunk_size
        )
    except TransferError as exc:
        logger.warning("upload failed path=%s status=%d error=%s", path, exc.status, exc)
        raise
    finally:
        await io.close(handle.close)


def _open_source(path: str, account: str | None) -> tuple[_Reader, int]:
    rights = _Rights(_account(account)) if account is not None else None
    if rights is not None:
        _assume(rights.account)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
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
            HostStatus.GSE_FILE_TASK_ERROR, f"cannot open {path}: {_reason(exc)}"
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
    return _Reader(fd), st.st_size


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
    io: _FileThread,
    speed_limit: int | None,
    on_progress: Callable[[Progress], None] | None,
    chunk_size: int,
) -> tuple[int, str]:
    pacer = _Pacer(speed_limit)
    meter = _Meter(size, on_progress)
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
                    HostStatus.GSE_FILE_TASK_ERROR, f"cannot read {path}: {_reason(exc)}"
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
            HostStatus.GSE_FILE_TASK_ERROR, f"upload of {path} failed: {_describe(exc)}"
        ) from exc
    if not response.is_success:
        status = (
            HostStatus.GSE_FILE_SIZE_EXCEED
            if response.status_code == httpx.codes.REQUEST_ENTITY_TOO_LARGE
            else HostStatus.GSE_FILE_TASK_ERROR
        )
        raise TransferError(
            status, f"upload of {path} refused: HTTP {response.status_code} {response.text[:200]}"
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


def _describe(exc: httpx.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --- download -----------------------------------------------------------------------


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
) -> None:
    """Stream ``url`` into ``dest`` as ``account``, replacing it only once the bytes check out.

    ``create_dirs=False`` is bk-job's strict mode (the parent directory must exist);
    ``True`` creates missing parents, owned by the account. A connection dropped
    mid-stream is resumed once from the byte reached. Raises :class:`TransferError`:
    202 a target-side problem (directory missing in strict mode, permission denied,
    ``dest`` is a directory), 311 the account, 320 the bytes cannot be fetched,
    321 ``size`` is over ``max_size``, 329 the bytes are wrong (size or checksum).
    """
    if max_size is not None and size > max_size:
        raise TransferError(
            HostStatus.GSE_FILE_SIZE_EXCEED, f"{dest}: {size} bytes is over the limit of {max_size}"
        )
    io = _FileThread()
    target: _Target | None = None
    try:
        target = await io.run(lambda: _open_target(dest, account, create_dirs))
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
        await io.close(target.discard if target is not None else None)
        raise
    await io.close()


def make_dir(dest: str, *, mode: int, account: str, create_dirs: bool) -> None:
    """Recreate a directory entry at ``dest`` as ``account``.

    A new directory gets ``mode`` with the owner's rwx added, so that the files copied
    into it can be written; an existing directory is left as it is. Raises
    :class:`TransferError` as :func:`download` does. Blocking: run it with
    ``asyncio.to_thread``.
    """
    rights = _Rights(_account(account))
    credentials.run_as(
        rights.account, functools.partial(_make_dir, dest, mode, rights, create_dirs)
    )


def _make_dir(dest: str, mode: int, rights: _Rights, create_dirs: bool) -> None:
    dest = _absolute(dest)
    name = os.path.basename(dest)
    parent = _open_parent(dest, rights, create_dirs)
    try:
        existing = parent.entry(name, follow=True)
        if existing is not None:
            if not stat.S_ISDIR(existing.st_mode):
                raise TransferError(
                    HostStatus.COPYFILE_FAILED, f"target {dest} exists and is not a directory"
                )
            return
        parent.check_writable(rights)
        parent.make_child(name, rights, (mode & 0o7777) | stat.S_IRWXU).close()
    finally:
        parent.close()


def _account(name: str) -> Account:
    try:
        return lookup_account(name)
    except AccountError as exc:
        raise TransferError(HostStatus.GSE_USER_ERROR, str(exc)) from None


def _assume(account: Account) -> None:
    """Give this transfer's own thread the account's file access (see ``credentials``)."""
    try:
        credentials.assume(account)
    except OSError as exc:
        raise TransferError(
            HostStatus.GSE_USER_ERROR, f"cannot act as account {account.name}: {exc}"
        ) from None


def _absolute(dest: str) -> str:
    if not os.path.isabs(dest):
        raise TransferError(HostStatus.COPYFILE_FAILED, f"target path {dest} is not absolute")
    normal = os.path.normpath(dest)
    if normal == "/" or normal == "//":
        raise TransferError(HostStatus.COPYFILE_FAILED, "target path / names no file")
    return normal


def _target_error(path: str, exc: OSError) -> TransferError:
    if isinstance(exc, PermissionError):
        return TransferError(HostStatus.COPYFILE_FAILED, f"{path}: permission denied")
    return TransferError(HostStatus.COPYFILE_FAILED, f"{path}: {exc.strerror or exc}")


def _umask() -> int:
    # reading the umask means setting it; set it straight back
    current = os.umask(0o022)
    os.umask(current)
    return current


class _Dir:
    """An open directory on the target side.

    Checks and changes go through the descriptor (``*at`` calls), so the directory whose
    permissions were judged is the one written to, even if the account renames or
    swaps a path component for a symlink in between — otherwise a root agent could be
    steered into writing, as root, somewhere the account may not."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def entry(self, name: str, *, follow: bool) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=follow)
        except FileNotFoundError:
            return None  # absent, or a dangling symlink
        except OSError as exc:
            raise _target_error(os.path.join(self.path, name), exc) from None

    def check_writable(self, rights: _Rights, replacing: os.stat_result | None = None) -> None:
        """Refuse unless the account may create (and replace ``replacing``) entries here."""
        st = os.fstat(self.fd)
        account = rights.account
        allowed = rights.may(self.path, st, WRITE | SEARCH)
        if allowed and rights.judged and replacing is not None and st.st_mode & stat.S_ISVTX:
            # in a sticky directory (/tmp) only the file's or the directory's owner may replace
            allowed = account.uid in (replacing.st_uid, st.st_uid)
        if not allowed:
            raise TransferError(
                HostStatus.COPYFILE_FAILED,
                f"permission denied: account {account.name} cannot write to {self.path}",
            )

    def owner_for(self, rights: _Rights) -> tuple[int, int] | None:
        """(uid, gid) a new entry here must get, or None to keep the agent's own."""
        if os.geteuid() != 0 or credentials.acting():
            # acting as the account, the kernel already makes new entries its own
            return None
        st = os.fstat(self.fd)
        # a set-group-ID directory hands its group to new entries, as it would for the user
        gid = st.st_gid if st.st_mode & stat.S_ISGID else rights.account.gid
        return rights.account.uid, gid

    def make_child(self, name: str, rights: _Rights, mode: int) -> _Dir:
        """The directory ``name`` in here, created for the account if absent."""
        path = os.path.join(self.path, name)
        try:
            os.mkdir(name, 0o700, dir_fd=self.fd)
            created = True
        except FileExistsError:
            created = False  # made meanwhile, by another transfer perhaps
        except OSError as exc:
            raise _target_error(path, exc) from None
        # fchown and fchmod need a readable descriptor; one just made is ours to read
        access = os.O_RDONLY if created else _dir_access()
        try:
            fd = os.open(name, _DIR_FLAGS | access | os.O_NOFOLLOW, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise TransferError(
                    HostStatus.COPYFILE_FAILED, f"target {path} exists and is not a directory"
                ) from None
            raise _target_error(path, exc) from None
        child = _Dir(path, fd)
        if created:
            try:
                owner = self.owner_for(rights)
                if owner is not None:
                    os.fchown(fd, *owner)
                os.fchmod(fd, mode)
            except OSError as exc:
                child.close()
                raise _target_error(path, exc) from None
        return child

    def fsync(self) -> None:
        try:
            fd = os.open(".", os.O_RDONLY | _DIR_FLAGS, dir_fd=self.fd)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            # some filesystems refuse fsync on a directory; the file itself is safe
            logger.debug("directory fsync failed dir=%s error=%s", self.path, exc)
        finally:
            os.close(fd)


_DIR_FLAGS = os.O_DIRECTORY | os.O_CLOEXEC


def _dir_access() -> int:
    # O_PATH opens a directory the agent may write to but not list; root lists anything
    # and needs a readable descriptor for fchown and fchmod
    # (a root agent acting as an account has only the account's rights to read)
    full = os.geteuid() == 0 and not credentials.acting()
    return os.O_RDONLY if full else getattr(os, "O_PATH", os.O_RDONLY)


def _open_dir(path: str) -> int:
    return os.open(path, _dir_access() | _DIR_FLAGS)


def _open_parent(dest: str, rights: _Rights, create_dirs: bool) -> _Dir:
    """The directory ``dest`` goes in, created first when ``create_dirs`` allows."""
    parent = os.path.dirname(dest)
    try:
        return _Dir(parent, _open_dir(parent))
    except FileNotFoundError:
        if not create_dirs:
            raise TransferError(
                HostStatus.COPYFILE_FAILED, f"target directory {parent} does not exist"
            ) from None
    except NotADirectoryError:
        raise TransferError(
            HostStatus.COPYFILE_FAILED, f"target directory {parent} is not a directory"
        ) from None
    except OSError as exc:
        raise _target_error(parent, exc) from None
    return _make_parents(parent, rights)


def _make_parents(directory: str, rights: _Rights) -> _Dir:
    missing: list[str] = []
    path = directory
    while True:
        try:
            current = _Dir(path, _open_dir(path))
            break
        except FileNotFoundError:
            missing.append(os.path.basename(path))
            path = os.path.dirname(path)
        except NotADirectoryError:
            raise TransferError(
                HostStatus.COPYFILE_FAILED, f"target directory {directory} is not a directory"
            ) from None
        except OSError as exc:
            raise _target_error(path, exc) from None
    mode = 0o755 & ~_umask()
    try:
        for name in reversed(missing):
            current.check_writable(rights)
            child = current.make_child(name, rights, mode)
            current.close()
            current = child
    except BaseException:
        current.close()
        raise
    return current


def _open_target(dest: str, account: str, create_dirs: bool) -> _Target:
    rights = _Rights(_account(account))
    _assume(rights.account)
    dest = _absolute(dest)
    name = os.path.basename(dest)
    parent = _open_parent(dest, rights, create_dirs)
    try:
        followed = parent.entry(name, follow=True)
        if followed is not None and stat.S_ISDIR(followed.st_mode):
            raise TransferError(HostStatus.COPYFILE_FAILED, f"target {dest} is a directory")
        parent.check_writable(rights, parent.entry(name, follow=False))
        temp = _temp_name(name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temp, flags, 0o600, dir_fd=parent.fd)
        except OSError as exc:
            raise _target_error(parent.path, exc) from None
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
        raise _target_error(dest, exc) from None
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

    def __init__(self, parent: _Dir, name: str, temp: str, fd: int) -> None:
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
            # after the chown done at creation, which would clear set-user-ID bits
            os.fchmod(self.fd, mode & 0o7777)
        except OSError as exc:
            raise _target_error(self.dest, exc) from None
        self._close()
        parent = self.parent.fd
        try:
            os.rename(self.temp, self.name, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise TransferError(
                    HostStatus.COPYFILE_FAILED, f"target {self.dest} is a directory"
                ) from None
            raise _target_error(self.dest, exc) from None
        self.temp = ""
        self.parent.fsync()
        self.parent.close()

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
    io: _FileThread,
    speed_limit: int | None,
    on_progress: Callable[[Progress], None] | None,
    chunk_size: int,
) -> None:
    pacer = _Pacer(speed_limit)
    meter = _Meter(size, on_progress)
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
                    HostStatus.GSE_FILE_ERROR, f"fetch failed for {target.dest}: {_describe(exc)}"
                ) from exc
            except OSError as exc:
                raise _target_error(target.dest, exc) from None
            meter.finish(received)
            return
    finally:
        writes.abandon()


class _WriteAhead:
    """Writes queued on the file thread while the next chunks arrive from the network.

    Waiting for each write before reading on serialises disk and network; a few
    chunks in flight overlap them and still bound memory to ``depth`` chunks."""

    def __init__(self, io: _FileThread, depth: int = WRITE_AHEAD) -> None:
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
    if response.status_code == httpx.codes.PARTIAL_CONTENT and received:
        first = _range_start(response.headers.get("Content-Range", ""))
        if first != received:
            raise TransferError(
                HostStatus.GSE_FILE_ERROR,
                f"fetch failed for {target.dest}: asked for byte {received}, "
                f"got range {response.headers.get('Content-Range')!r}",
            )
        return False
    if response.status_code == httpx.codes.OK:
        # a server that ignores Range sends the whole file again
        return received > 0
    raise TransferError(
        HostStatus.GSE_FILE_ERROR, f"fetch failed for {target.dest}: HTTP {response.status_code}"
    )


def _range_start(content_range: str) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", content_range)
    return int(match.group(1)) if match else None
