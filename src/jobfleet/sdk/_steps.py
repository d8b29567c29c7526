"""What an operation asks its client to do: the steps a flow yields, and how a client
walks a flow.

An operation (``_ops``) is written once as a generator: it yields a step, the client
does it (blocking or awaited) and sends back the answer, or throws in what the step
raised. Only the doing differs between the two clients; every decision is the flow's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import httpx

from jobfleet.sdk import _file_flow, _flow

T = TypeVar("T")


class UploadBody:
    """The bytes of one upload as they are read: never more than announced, hashed."""

    def __init__(
        self, item: _file_flow.LocalFile, on_progress: Callable[[int], None] | None
    ) -> None:
        self.item = item
        self.sent = 0
        self.digest = hashlib.sha256()
        self._on_progress = on_progress

    @property
    def done(self) -> bool:
        # a growing file must not break the request
        return self.sent >= self.item.size

    def read(self, fh: IO[bytes]) -> bytes:
        """The next chunk from disk (blocking: the async client runs it in a thread)."""
        chunk = fh.read(min(_flow.CHUNK_SIZE, self.item.size - self.sent))
        self.digest.update(chunk)
        return chunk

    def took(self, chunk: bytes) -> bytes:
        if not chunk:
            raise _file_flow.shrunk(self.item)
        self.sent += len(chunk)
        if self._on_progress is not None:
            self._on_progress(self.sent)
        return chunk


class DownloadSink:
    """A download written to a temporary file beside ``dest``, renamed once complete
    and verified. ``open``, ``write``, ``finish`` and ``discard`` block on disk."""

    def __init__(
        self,
        file_id: str,
        dest: Path,
        on_progress: Callable[[int], None] | None,
        max_bytes: int = _file_flow.MAX_DOWNLOAD_BYTES,
    ) -> None:
        self.file_id = file_id
        self.dest = dest
        self.max_bytes = max_bytes
        self.expected: str | None = None
        self.received = 0
        self._on_progress = on_progress
        self._digest = hashlib.sha256()
        self._temp = _file_flow.temp_path(dest)
        self._fh: IO[bytes] | None = None

    def open(self) -> None:
        self._fh = self._temp.open("xb")

    def write(self, chunk: bytes) -> None:
        assert self._fh is not None
        if self.received + len(chunk) > self.max_bytes:
            raise _file_flow.too_large(self.file_id, self.max_bytes)
        self._fh.write(chunk)
        self._digest.update(chunk)

    def took(self, size: int) -> None:
        self.received += size
        if self._on_progress is not None:
            self._on_progress(self.received)

    def finish(self) -> None:
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        _file_flow.check_download(self.file_id, self.expected, self._digest.hexdigest())
        self._temp.replace(self.dest)

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._temp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Send:
    """Send a request; the answer is the ``httpx.Response`` (a transport failure comes
    back as ``JobApiError``). ``upload`` streams a file as the body."""

    method: str
    path: str
    params: Any = None
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] | None = None
    upload: UploadBody | None = None
    stream: bool = False

    def request(self, body: object = None) -> dict[str, Any]:
        """``build_request`` arguments; ``body`` is the client's stream of ``upload``."""
        return {
            "method": self.method,
            "url": self.path,
            "params": self.params,
            "json": self.json,
            "content": self.content if body is None else body,
            "headers": self.headers,
        }


@dataclass(frozen=True)
class Receive:
    """Pass a streamed response's body to ``sink`` chunk by chunk."""

    response: httpx.Response
    sink: DownloadSink


@dataclass(frozen=True)
class Read:
    """Read a streamed response's whole body."""

    response: httpx.Response


@dataclass(frozen=True)
class Close:
    response: httpx.Response


@dataclass(frozen=True)
class Blocking:
    """Call ``fn`` (disk work): directly in the sync client, in a thread in the async one."""

    fn: Callable[[], Any]


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Send | Receive | Read | Close | Blocking | Sleep
# an operation: yields steps, receives their answers, returns its result
Flow = Generator[Step, Any, T]


class Walk(Generic[T]):
    """One flow being walked by a client: ``next`` gives the step to do, or ``None``
    once the flow has returned its ``result``."""

    def __init__(self, flow: Flow[T]) -> None:
        self._flow = flow
        self.result: T

    def next(self, answer: Any = None, failure: BaseException | None = None) -> Step | None:
        try:
            if failure is not None:
                return self._flow.throw(failure)
            return self._flow.send(answer)
        except StopIteration as stop:
            self.result = stop.value
            return None
