"""A source agent serving its own files' pieces to a step's targets (``file_seed``).

When a source agent has a peer port, the server asks it to hash each file's pieces
(one read of the file, as the account reads it) and to offer them on the port under
a token for that step; the targets then take the pieces from it and from each
other while the same file is still on its way to the server, which keeps it for
targets that fall back and for later attempts. The file is opened once: what is
served is what was hashed, unless the file is changed in place meanwhile, and then
the targets' checks drop this agent and take the pieces from the server.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

from jobfleet.agent.files.pacing import FileThread
from jobfleet.agent.files.rights import TransferError
from jobfleet.agent.files.sources import os_reason
from jobfleet.agent.files.upload import check_size, open_source
from jobfleet.domain.status import HostStatus

HASH_WORKERS = 4


async def seed_file(
    path: str, account: str | None, max_size: int | None, piece_size: int
) -> tuple[int, int, list[bytes]]:
    """Open ``path`` as the upload would and hash its pieces: (descriptor, size, digests).

    The caller owns the descriptor. Raises :class:`TransferError` as ``upload`` does."""
    io = FileThread()
    try:
        return await io.run(lambda: _hash_pieces(path, account, max_size, piece_size))
    finally:
        await io.close()


def _hash_pieces(
    path: str, account: str | None, max_size: int | None, piece_size: int
) -> tuple[int, int, list[bytes]]:
    fd, size = open_source(path, account)
    try:
        check_size(path, size, max_size)
        count = (size + piece_size - 1) // piece_size
        # hashlib lets go of the GIL: the pieces are hashed on every core at once
        workers = max(1, min(HASH_WORKERS, os.cpu_count() or 1, count))
        with ThreadPoolExecutor(workers, thread_name_prefix="jobfleet-seed") as pool:
            digests = list(
                pool.map(
                    lambda i: _hash_piece(
                        fd, i * piece_size, min(piece_size, size - i * piece_size), path
                    ),
                    range(count),
                )
            )
        return fd, size, digests
    except BaseException:
        os.close(fd)
        raise


def _hash_piece(fd: int, offset: int, length: int, path: str) -> bytes:
    buffer = bytearray(length)
    view = memoryview(buffer)
    got = 0
    while got < length:
        step = _read(fd, view[got:], offset + got, path)
        if not step:
            raise TransferError(
                HostStatus.GSE_FILE_TASK_ERROR,
                f"{path} shrank to {offset + got} bytes while being read",
            )
        got += step
    return hashlib.sha256(view).digest()


def _read(fd: int, into: memoryview, offset: int, path: str) -> int:
    try:
        return os.preadv(fd, [into], offset)
    except OSError as exc:
        raise TransferError(
            HostStatus.GSE_FILE_TASK_ERROR, f"cannot read {path}: {os_reason(exc)}"
        ) from None
