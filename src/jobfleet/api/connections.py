"""Slow and idle clients: read timeouts and a cap on connections still sending headers.

uvicorn bounds idle keep-alive connections but not a client that sends its
request line a byte at a time (slowloris), nor one that stops in the middle of a
body. ``protocol_class`` gives uvicorn an HTTP protocol that does:

- the request headers must be complete within ``header_timeout`` of the
  connection opening (or of the first byte of a next request on a kept-alive
  connection), else the connection gets 408 and is closed;
- while the server reads a body, a gap of ``body_timeout`` with no byte closes
  the connection (time the application spends not reading does not count);
- at most ``max_pending`` connections may be sending headers at once; past it the
  oldest of them is closed, so new clients (agents, the health check, API calls,
  which send their headers in one go) always get in.
- a connection answered while the client is still sending its body (a refused
  upload) is closed gracefully: the server stops writing, reads and drops what
  still comes for up to ``linger`` seconds, then closes. Closing at once would
  reset the connection and could destroy the answer (413, 401) on its way to a
  client that reads it only after sending; draining without end would let a
  refused client keep the connection busy.

WebSocket connections leave this protocol once upgraded, so none of it applies
to agents' long-lived channels.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass
class ConnectionLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_pending: int = 1000
    # a pending connection younger than this is never closed to make room (s)
    evict_after: float = 2.0
    linger: float = 5.0
    # whether a connection that has sent no byte yet may be closed to make room. On a TLS
    # listener such a connection has cost its client a whole handshake, and in a reconnect
    # storm thousands of agents' requests wait unread in a busy loop: there only one that
    # began its headers counts, and a silent one ends at its ``header_timeout``
    evict_silent: bool = True
    # connections that have not sent complete headers yet, oldest first
    pending: dict[GuardedHttpProtocol, None] = field(default_factory=dict, repr=False)
    closed_slow: int = 0


class _LingeringTransport:
    """The transport uvicorn's HTTP code sees: ``close`` lingers while a body is incoming."""

    def __init__(self, real: asyncio.Transport, protocol: GuardedHttpProtocol) -> None:
        self.real = real
        self.protocol: GuardedHttpProtocol | None = protocol
        self.lingering: asyncio.TimerHandle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.real.write(data)

    def is_closing(self) -> bool:
        return self.lingering is not None or self.real.is_closing()

    def close(self) -> None:
        protocol = self.protocol
        if self.lingering is not None or protocol is None or not protocol._body_incoming:
            self.real.close()
            return
        if self.real.can_write_eof():
            self.real.write_eof()
        self.real.resume_reading()
        self.lingering = protocol.loop.call_later(protocol.limits.linger, self.real.close)

    def detach(self) -> None:
        """The connection is gone. Its protocol and this transport refer to each other:
        a cycle only the collector would free, with the TLS connection it holds (OpenSSL's
        ~40 KiB), and the server collects rarely (``server.run``). Thousands of requests
        on connections of their own (an enrollment storm) then left the heap that much
        larger for good."""
        if self.lingering is not None:
            self.lingering.cancel()
            self.lingering = None
        self.protocol = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class GuardedHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lingering: _LingeringTransport | None = None
        self._body_incoming = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_deadline = 0.0
        self._pending_since = 0.0

    # headers ---------------------------------------------------------------------

    def _await_headers(self) -> None:
        if self._header_timer is not None:
            return
        limits = self.limits
        self._header_timer = self.loop.call_later(limits.header_timeout, self._headers_late)
        if limits.evict_silent:
            self._pending()

    def _pending(self) -> None:
        limits = self.limits
        self._pending_since = self.loop.time()
        limits.pending[self] = None
        if len(limits.pending) > limits.max_pending:
            oldest = next(iter(limits.pending))
            # one that just arrived may have its headers unread in a busy loop (an agent
            # reconnect storm): only one that had time to send them is taken for slow
            if self._pending_since - oldest._pending_since >= limits.evict_after:
                oldest._close_slow("pending_cap")

    def _headers_done(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.limits.pending.pop(self, None)

    def _headers_late(self) -> None:
        self._header_timer = None
        self._close_slow("header_timeout", TIMEOUT_RESPONSE)

    # body ------------------------------------------------------------------------

    def _await_body(self) -> None:
        self._body_deadline = self.loop.time() + self.limits.body_timeout
        if self._body_timer is None:
            self._body_timer = self.loop.call_at(self._body_deadline, self._body_check)

    def _body_done(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_check(self) -> None:
        self._body_timer = None
        now = self.loop.time()
        if self.flow is not None and self.flow.read_paused:
            # the application is not reading: the client is not the slow one
            self._body_deadline = now + self.limits.body_timeout
        if now < self._body_deadline:
            self._body_timer = self.loop.call_at(self._body_deadline, self._body_check)
            return
        self._close_slow("body_timeout")

    # closing ---------------------------------------------------------------------

    def _close_slow(self, why: str, answer: bytes = b"") -> None:
        self._headers_done()
        self._body_done()
        self.limits.closed_slow += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("http_connection_closed reason=%s peer=%s", why, self.client)
        self._body_incoming = False
        if self.transport is not None and not self.transport.is_closing():
            if answer and (self.cycle is None or self.cycle.response_complete):
                self.transport.write(answer)
            self.transport.close()

    # uvicorn's protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._lingering = _LingeringTransport(cast(asyncio.Transport, transport), self)
        super().connection_made(cast(asyncio.Transport, self._lingering))
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        self._body_done()
        super().connection_lost(exc)
        # uvicorn cancels the keep-alive timer only for a clean close; a connection lost
        # with an error (a TLS client gone without close_notify, a reset) left the timer
        # holding this protocol, and through it the app and its services, for
        # ``idle_timeout`` more: a stopped in-process server stayed in memory that long
        self._unset_keepalive_if_required()
        if self._lingering is not None:
            self._lingering.detach()

    def data_received(self, data: bytes) -> None:
        if not self._body_incoming and (self.cycle is None or self.cycle.response_complete):
            # bytes of a next request on a kept-alive connection start its header clock
            self._await_headers()
            if not self.limits.evict_silent and self not in self.limits.pending:
                self._pending()
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._await_headers()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._headers_done()
        self._await_body()
        self._body_incoming = True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_deadline = self.loop.time() + self.limits.body_timeout
        if (
            self.cycle is not None
            and self.cycle.response_complete
            and not self.transport.is_closing()
        ):
            # answered without reading it all (a refusal): drain the rest only for a while
            self.transport.close()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_done()
        self._body_incoming = False
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._headers_done()
        self._body_done()
        self._body_incoming = False
        lingering, self._lingering = self._lingering, None
        if lingering is not None:
            # the WebSocket protocol takes the plain transport: nothing of this applies there
            self.transport = lingering.real
            lingering.detach()
        super().handle_websocket_upgrade()
        # the parser holds this protocol's callbacks; nothing reads it after the upgrade,
        # and uvicorn drops it only in ``connection_lost``, which now goes to the WebSocket
        self.parser = None  # type: ignore[assignment]


def protocol_class(limits: ConnectionLimits) -> type[GuardedHttpProtocol]:
    """A protocol class for ``uvicorn.Config(http=…)`` bound to one server's limits."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})
