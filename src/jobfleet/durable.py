"""Making many small files durable at once (the server's blob store and the agent's
downloads both do; it imports nothing of jobfleet).

One ``syncfs`` of their filesystem costs about what one fsync does, where an fsync of
each file costs a journal commit apiece; where ``syncfs`` is not available (or the
files span filesystems) each file is fsynced.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Callable
from typing import cast


def flush(fds: list[int]) -> None:
    """Make the data of the files open at ``fds`` durable (raises ``OSError``)."""
    if not fds:
        return
    syncfs = _syncfs()
    if len(fds) > 1 and syncfs is not None and len({os.fstat(fd).st_dev for fd in fds}) == 1:
        if syncfs(fds[0]) == 0:
            return
        err = ctypes.get_errno()
        if err != errno.ENOSYS:
            raise OSError(err, os.strerror(err))
    for fd in fds:
        os.fsync(fd)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return cast(Callable[[int], int], fn)
