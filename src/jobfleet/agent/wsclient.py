"""The agent's WebSocket: websockets' Sans-I/O client protocol on an asyncio transport.

``websockets.asyncio.client`` brings what an agent never uses: HTTP proxies (with
``urllib.request``, ``http.client`` and ``email``), redirects and its own reconnect
loop. The framing, the opening handshake, the closing handshake, size limits and
answers to pings stay websockets' own (:class:`websockets.client.ClientProtocol`);
this module moves its bytes over one asyncio connection (TCP, or TLS with the
pinned context), sends keepalive pings, and gives whole messages to the agent.

Errors are those of websockets and of the socket: ``InvalidStatus`` when the server
refuses the handshake, ``ConnectionClosedError`` when the connection breaks, a
keepalive ping goes unanswered or the transport refuses a write, ``OSError`` and
``TimeoutError`` when connecting.
"""

from __future__ import annotations

import asyncio
import os
import ssl as ssl_module
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import cast

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from jobfleet.agent.fetch import server_name

# how many received messages wait for the agent before the socket stops being read
MAX_QUEUE = 16


class WebSocket(asyncio.Protocol):
    """One client connection: ``await send(...)``, ``async for message in ws``."""

    def __init__(
        self,
        protocol: ClientProtocol,
        *,
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float,
    ) -> None:
        self.protocol = protocol
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = self.loop.create_future()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self._messages: deque[str | bytes] = deque()
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._invalid = False
        self._wakeup: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._pings: dict[bytes, asyncio.Future[None]] = {}
        self._reading_paused = False
        self._keepalive: asyncio.Task[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        # when the server was last heard from, or last pinged (the keepalive's clock)
        self._heard_at = self.loop.time()
        # ``deliver``'s receiver, and what it raised (which ends the connection)
        self._receiver: Callable[[str | bytes], None] | None = None
        self._receiver_error: Exception | None = None
        # what the transport raised on a write: the stream lost bytes, the connection is over
        self._write_error: Exception | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport; uvloop's TLS transport is one without subclassing asyncio's
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._heard_at = self.loop.time()
        self.protocol.receive_data(data)
        self._process()

    def eof_received(self) -> None:
        self.protocol.receive_eof()
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()  # idempotent: the protocol is CLOSED from here on
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._keepalive is not None:
            self._keepalive.cancel()
        if not self.handshake.done():
            self.handshake.set_exception(
                exc or ConnectionError("the server closed the connection during the handshake")
            )
        if not self.lost.done():
            self.lost.set_result(None)
        for waiter in (self._wakeup, self._writable, *self._pings.values()):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._pings.clear()

    def pause_writing(self) -> None:
        self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # the protocol's events and bytes

    def _process(self) -> None:
        events = self.protocol.events_received()
        self._flush()
        for event in events:
            if isinstance(event, Response):
                self._handshake_done()
            elif isinstance(event, Frame):
                self._frame(event)
        self._process_close()

    def _process_close(self) -> None:
        if self.protocol.close_expected() and self._close_timer is None:
            # the server closes the TCP connection after the closing handshake; one that
            # does not is cut off
            self._close_timer = self.loop.call_later(self.close_timeout, self._abort)

    def _handshake_done(self) -> None:
        if self.handshake.done():
            return
        if self.protocol.handshake_exc is not None:
            self.handshake.set_exception(self.protocol.handshake_exc)
        else:
            self.handshake.set_result(None)

    def _frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            waiter = self._pings.pop(bytes(frame.data), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        if self._invalid:
            return  # a frame behind a message that failed the connection
        if frame.opcode is Opcode.TEXT or frame.opcode is Opcode.BINARY:
            self._fragments = [bytes(frame.data)]
            self._fragment_text = frame.opcode is Opcode.TEXT
        elif frame.opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
        else:
            return  # pings are answered by the protocol; a close ends the iteration
        if not frame.fin:
            return
        data = b"".join(self._fragments)
        self._fragments = []
        message: str | bytes = data
        if self._fragment_text:
            try:
                message = data.decode()
            except UnicodeDecodeError as exc:
                # the protocol does not check a text message's encoding: fail the
                # connection as RFC 6455 says (1007) rather than in the transport
                self._invalid = True
                self.protocol.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
                self._flush()
                self._process_close()
                return
        receiver = self._receiver
        if receiver is not None:
            try:
                receiver(message)
            except Exception as exc:  # raised by ``deliver``, as ``recv``'s reader would
                self._receiver, self._receiver_error = None, exc
                self._invalid = True
                self._abort()
            return
        self._messages.append(message)
        if len(self._messages) >= MAX_QUEUE and not self._reading_paused and self.transport:
            self.transport.pause_reading()
            self._reading_paused = True
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        try:
            for data in self.protocol.data_to_send():
                if data:
                    transport.write(data)
                elif transport.can_write_eof():
                    transport.write_eof()
                else:  # TLS cannot half-close
                    transport.close()
        except (OSError, RuntimeError) as exc:
            # a transport that fails or is closing under us: what it refused is lost, so
            # the connection ends here, and the agent reconnects and sends its spool again
            self._write_error = exc
            self._abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # what the agent uses

    def _closed(self) -> ConnectionClosed:
        """What sending or receiving on a connection that is no longer open raises.

        ``close_exc`` only exists once the connection is CLOSED; while the closing
        handshake is under way (the server's close frame came, its TCP close has not)
        the frames exchanged so far say it."""
        protocol = self.protocol
        if protocol.state is State.CLOSED:
            return protocol.close_exc
        return ConnectionClosedError(
            protocol.close_rcvd, protocol.close_sent, protocol.close_rcvd_then_sent
        )

    async def send(self, message: bytes | str) -> None:
        self.write(message)
        if self._writable is not None:
            await self._writable

    def write(self, message: bytes | str) -> None:
        """Send at once, without waiting while the server reads slower than we write
        (then ``writable`` is false: wait with ``send``, or do not write more)."""
        if self.protocol.state is not State.OPEN or self._write_error is not None:
            raise self._closed() from self._write_error
        if isinstance(message, str):
            self.protocol.send_text(message.encode())
        else:
            self.protocol.send_binary(message)
        self._flush()
        if self._write_error is not None:
            raise self._closed() from self._write_error

    @property
    def writable(self) -> bool:
        return self._writable is None

    async def recv(self) -> str | bytes:
        while not self._messages:
            await self._news()
        message = self._messages.popleft()
        if self._reading_paused and len(self._messages) <= MAX_QUEUE // 4 and self.transport:
            self.transport.resume_reading()
            self._reading_paused = False
        return message

    async def _news(self) -> None:
        """Wait for the reading side to wake this reader; raise if the connection is over."""
        if self.protocol.state is State.CLOSED or self.lost.done():
            raise self._closed()
        self._wakeup = self.loop.create_future()
        try:
            await self._wakeup
        finally:
            self._wakeup = None

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        """Every message until the server closes normally (an error raises)."""
        while True:
            try:
                yield await self.recv()
            except ConnectionClosedOK:
                return

    async def deliver(self, receiver: Callable[[str | bytes], None]) -> None:
        """Hand every message to ``receiver`` as it is read, until the server closes
        normally; a broken connection raises as ``recv`` does, and so does whatever
        ``receiver`` raises (the connection is cut). The same messages in the same order
        as ``async for``, without a future and a task wake-up per message: this is the
        path of every task and acknowledgement an agent receives."""
        while self._messages:
            try:
                receiver(self._messages.popleft())
            except Exception:
                # as for a message handed over as it is read: the connection ends with it
                self._messages.clear()
                self._invalid = True
                self._abort()
                raise
        if self._reading_paused and self.transport:
            self.transport.resume_reading()
            self._reading_paused = False
        self._receiver = receiver
        try:
            while True:
                if self._receiver_error is not None:
                    raise self._receiver_error
                await self._news()
        except ConnectionClosedOK:
            return
        finally:
            self._receiver = None

    async def close(self) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(CloseCode.NORMAL_CLOSURE)
            self._flush()
        if self.transport is not None and not self.lost.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.lost), self.close_timeout)
            except TimeoutError:
                self._abort()
                await self.lost

    async def _keepalive_loop(self) -> None:
        """A ping once the server has been silent for ``ping_interval``; no pong within
        ``ping_timeout`` ends the connection, as a dead peer or a half-open TCP
        connection must. A server heard from within the interval is alive: pinging it
        too would cost a frame each way per agent and interval while tasks flow."""
        assert self.ping_interval is not None
        interval = self.ping_interval
        while self.protocol.state is State.OPEN:
            quiet = self.loop.time() - self._heard_at
            if quiet < interval:
                await asyncio.sleep(interval - quiet)
                continue
            if self.protocol.state is not State.OPEN:
                return
            self._heard_at = self.loop.time()
            payload = os.urandom(4)
            pong = self._pings[payload] = self.loop.create_future()
            self.protocol.send_ping(payload)
            self._flush()
            if self.ping_timeout is None:
                continue
            try:
                await asyncio.wait_for(pong, self.ping_timeout)
            except TimeoutError:
                if self.protocol.state is State.OPEN:
                    self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                    self._flush()
                self._abort()
                return

    async def __aenter__(self) -> WebSocket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def connect(
    url: str,
    *,
    additional_headers: Mapping[str, str] | None = None,
    ping_interval: float | None = 20,
    ping_timeout: float | None = 20,
    max_size: int | None = 1024 * 1024,
    open_timeout: float = 10,
    close_timeout: float = 10,
    ssl: ssl_module.SSLContext | None = None,
) -> WebSocket:
    """An open WebSocket to ``url`` (``ws://`` or ``wss://``); use it with ``async with``.

    ``ssl`` is the context for ``wss://`` (the system's default trust without one)."""
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, max_size=max_size)
    ws = WebSocket(
        protocol,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
    )
    tls: ssl_module.SSLContext | None = None
    if uri.secure:
        tls = ssl if ssl is not None else ssl_module.create_default_context()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(open_timeout):
            await loop.create_connection(
                lambda: ws,
                uri.host,
                uri.port,
                ssl=tls,
                server_hostname=server_name(uri.host, tls),
            )
            request = protocol.connect()
            for name, value in (additional_headers or {}).items():
                request.headers[name] = value
            protocol.send_request(request)
            ws._flush()
            await ws.handshake
    except BaseException:
        # refused (InvalidStatus and the like), timed out or cancelled: nothing stays open
        if ws.transport is not None:
            ws.transport.abort()
        raise
    if ping_interval is not None:
        ws._keepalive = loop.create_task(ws._keepalive_loop())
    return ws
