"""Which agents still run: each holds a lock named for its key for as long as it lives.

A starting agent removes the cgroups that agents now gone left empty
(:mod:`jobfleet.agent.processes`). An empty cgroup says nothing of its agent, whose
own processes live elsewhere; a lock the kernel drops when its holder dies, however
it dies, does. An agent holds its key's lock shared (two agents given the same work
directory do not shut each other out); a remover takes it exclusive, without waiting,
and removes only while it holds it.

The lock files live in a directory only root may write (an agent that makes cgroups
is root), so no other user can hold an agent's lock or plant a link where root opens
one. A remover that removed a key's cgroup unlinks its lock file too; an agent that
waited on a file since unlinked takes the new one.

Only the standard library: the watchdog imports :mod:`jobfleet.agent.processes`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

RUN_DIR = Path("/run/jobfleet")
_OPEN = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


class UnsafeDirectory(OSError):
    """The lock directory is not one only this (root) user may write."""


def hold(key: str, directory: Path = RUN_DIR) -> int:
    """A descriptor holding ``key``'s lock shared until it is closed or the process
    ends. Waits while a remover is at work on that key (a moment)."""
    path = _path(directory, key)
    while True:
        fd = os.open(path, _OPEN, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if _current(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # unlinked by the remover we waited for: take the file now there


def seize(key: str, directory: Path = RUN_DIR) -> int | None:
    """A descriptor holding ``key``'s lock exclusively, or None while an agent holds it
    (or the lock cannot be had: then nothing of that key is to be removed)."""
    try:
        path = _path(directory, key)
        fd = os.open(path, _OPEN, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _current(fd, path):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def let_go(fd: int, key: str, directory: Path = RUN_DIR, *, forget: bool) -> None:
    """Close a descriptor from :func:`seize`; ``forget``: the key's cgroup is gone, so
    its lock file goes too (unlinked while still held)."""
    try:
        if forget:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_path(directory, key))
    finally:
        os.close(fd)


def keys(prefix: str, directory: Path = RUN_DIR) -> set[str]:
    """The keys starting with ``prefix`` that have a lock file, held or not."""
    try:
        names = os.listdir(directory)
    except OSError:
        return set()
    return {n[: -len(".lock")] for n in names if n.startswith(prefix) and n.endswith(".lock")}


def _path(directory: Path, key: str) -> Path:
    if not key or "/" in key or key.startswith("."):
        raise ValueError(f"not an agent key: {key!r}")
    _ensure(directory)
    return directory / f"{key}.lock"


def _ensure(directory: Path) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    info = os.lstat(directory)
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_mode & 0o077
    ):
        raise UnsafeDirectory(
            f"{directory} must be a directory of uid {os.geteuid()} with mode 0700"
        )


def _current(fd: int, path: Path) -> bool:
    """The file ``fd`` holds is still the one at ``path`` (no remover unlinked it)."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)
