"""A running script's output: capture from its pipe, chunking, and text decoding."""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Callable
from typing import cast

from jobfleet.domain import protocol
from jobfleet.domain.protocol import clean_text

TRUNCATED_NOTICE = "\n[jobfleet-agent: output truncated at {limit} bytes]\n"


# --- output -------------------------------------------------------------------------


class Output:
    """Output bytes waiting to be delivered, capped at ``limit`` bytes in total."""

    def __init__(self, limit: int, chunk_bytes: int, interval: float) -> None:
        self._limit = limit if limit > 0 else None
        self._chunk_bytes = chunk_bytes
        self._interval = interval
        self._chunks: list[bytes] = []
        self._accepted = 0
        self._first_at = 0.0
        self._truncated = False
        self._notice_due = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = 0

    def feed(self, data: bytes, now: float) -> bool:
        """Buffer ``data``; True when the supervisor has a new reason to wake."""
        if self._truncated:
            return False
        if self._limit is not None and self._accepted + len(data) > self._limit:
            data = data[: self._limit - self._accepted]
            self._truncated = self._notice_due = True
        was_empty = self.pending == 0
        if data:
            self._chunks.append(data)
            self.pending += len(data)
            self._accepted += len(data)
            if was_empty:
                self._first_at = now
        return was_empty or self._notice_due or self.pending >= self._chunk_bytes

    def due(self, now: float) -> bool:
        if self._notice_due or self.pending >= self._chunk_bytes:
            return True
        return self.pending > 0 and now >= self._first_at + self._interval

    def next_due(self) -> float | None:
        return self._first_at + self._interval if self.pending else None

    def take(self, final: bool) -> str:
        data = b"".join(self._chunks)
        self._chunks.clear()
        self.pending = 0
        # at the cut, a split character becomes U+FFFD before the notice, not after;
        # a character split across two reads is decoded whole (the decoder keeps the
        # first bytes); bytes that are not UTF-8 become U+FFFD and NUL becomes U+2400
        text = clean_text(self._decoder.decode(data, final=final or self._notice_due))
        if self._notice_due:
            self._notice_due = False
            text += TRUNCATED_NOTICE.format(limit=self._limit)
        return text


class Pipe(asyncio.SubprocessProtocol):
    """Collects a script's merged output and notices its exit."""

    def __init__(self, output: Output, wake: Callable[[], None], high_water: int) -> None:
        self._output = output
        self._wake = wake
        self._high_water = high_water
        self._loop = asyncio.get_running_loop()
        self._paused = False
        self.transport: asyncio.SubprocessTransport | None = None
        self.eof = False
        self.exited = False
        self.exit_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.SubprocessTransport, transport)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if self._output.feed(data, self._loop.time()):
            self._wake()
        # backpressure while a slow consumer catches up: the script blocks on write
        if not self._paused and self._output.pending >= self._high_water:
            self._paused = self._set_reading(False)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.eof = True
        self._wake()

    def process_exited(self) -> None:
        self.exited = True
        self.exit_at = self._loop.time()
        self._wake()

    def resume(self) -> None:
        if self._paused:
            self._paused = not self._set_reading(True)

    def _set_reading(self, on: bool) -> bool:
        pipe = self.transport.get_pipe_transport(1) if self.transport else None
        if not isinstance(pipe, asyncio.ReadTransport) or pipe.is_closing():
            return False
        if on:
            pipe.resume_reading()
        else:
            pipe.pause_reading()
        return True


def split_text(text: str, size: int = protocol.AGENT_CHUNK_CHARS) -> list[str]:
    """``text`` in pieces the server takes (at most ``size`` characters each)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
