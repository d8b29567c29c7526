"""Pieces of a file for peer-to-peer distribution: fixed size, one SHA-256 each.

The server computes the digests once, as a file is stored, and hands them to the
targets of a transfer with the file; a target checks every piece it receives,
from the server or from a peer, against them before it keeps it or serves it.
"""

from __future__ import annotations

import hashlib

from jobfleet.domain.protocol import DIGEST_SIZE, PIECE_SIZE, piece_count

__all__ = ["DIGEST_SIZE", "PIECE_SIZE", "PieceHasher", "piece_count", "piece_span"]


def piece_span(index: int, size: int, piece_size: int = PIECE_SIZE) -> tuple[int, int]:
    """(offset, length) of piece ``index`` of a file of ``size`` bytes."""
    offset = index * piece_size
    return offset, max(0, min(piece_size, size - offset))


class PieceHasher:
    """Feeds a stream of any chunking into one SHA-256 per piece."""

    def __init__(self, piece_size: int = PIECE_SIZE) -> None:
        self.piece_size = piece_size
        self.digests: list[bytes] = []
        self._current = hashlib.sha256()
        self._filled = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            room = self.piece_size - self._filled
            part = view[:room]
            self._current.update(part)
            self._filled += len(part)
            view = view[len(part) :]
            if self._filled == self.piece_size:
                self.digests.append(self._current.digest())
                self._current = hashlib.sha256()
                self._filled = 0

    def finish(self) -> list[bytes]:
        if self._filled:
            self.digests.append(self._current.digest())
            self._current = hashlib.sha256()
            self._filled = 0
        return self.digests
