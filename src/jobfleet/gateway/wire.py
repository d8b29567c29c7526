"""The agents' WebSocket on the agent listener, with no ASGI in between.

uvicorn parses the HTTP request on the agent port and hands a WebSocket upgrade to
the protocol class given as ``Config(ws=...)``. On the agents' connect path that is
``WireProtocol``: websockets' Sans-I/O ``ServerProtocol`` on the transport, and a
``WireSocket`` for the gateway that offers only what ``Gateway.serve`` uses. Ten
thousand connections live for hours, so neither holds an ASGI scope, queue, event or
Starlette object, and a frame goes from the parser to the gateway's reader with no
queue in between. Any other path goes on to uvicorn's own protocol and the app
(``fallback``), which answers it as it always did.

What a client sends is untrusted: a frame over ``max_size``, garbage, an unmasked
frame or invalid UTF-8 in a text frame ends that connection with the close code
websockets chooses (1009, 1002, 1007), and the gateway's reader hears that code; a
client that stops reading stalls only its own sends, then fails its keepalive.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections import deque
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, cast
from urllib.parse import unquote

from starlette.websockets import WebSocketDisconnect
from uvicorn.protocols.utils import get_remote_addr
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

log = logging.getLogger(__name__)

# how long a close we sent waits for the peer's reply before the connection is cut
CLOSE_TIMEOUT = 10.0
# how long a stopping server lets a connection send what it has before cutting it
SHUTDOWN_GRACE = 3.0
# reading stops while this many received frames, or bytes, wait for the gateway
INBOX_FRAMES = 64
INBOX_BYTES = 1 << 20
# the codes the gateway's reader hears when the peer is gone without a close frame,
# and when the server stops
CLOSE_ABNORMAL = 1006
CLOSE_RESTART = 1012
FAILED = "Internal Server Error"
# a binary frame's first byte (FIN, opcode 2), and its header with a 16- or 64-bit length
_FIN_BINARY = 0x82
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


class _QuietAdapter(logging.LoggerAdapter[logging.Logger]):
    """websockets logs every connection's opening and closing at INFO; the gateway
    already logs each agent's arrival and departure, so only warnings get through."""

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.WARNING and self.logger.isEnabledFor(level)


_WEBSOCKETS_LOG = _QuietAdapter(logging.getLogger(__name__ + ".websockets"), {})


class Peer(NamedTuple):
    host: str
    port: int


class WireSocket:
    """What ``Gateway.serve`` holds of one agent's connection."""

    __slots__ = ("_wire", "client", "headers")

    def __init__(self, wire: WireProtocol, headers: dict[str, str], client: Peer | None) -> None:
        self._wire = wire
        # the request's headers the gateway reads (lower-case names); the rest are dropped
        self.headers = headers
        self.client = client

    async def accept(self) -> None:
        # the gateway has read the credential: hold none for the connection's life
        self.headers = {}
        self._wire.accept()

    async def receive(self) -> dict[str, Any]:
        return await self._wire.receive()

    def deliver(self, receiver: Callable[[bytes | str], None]) -> Coroutine[Any, Any, int]:
        """Payloads to ``receiver`` as they are read; the close code once the connection
        ends (``WireProtocol.deliver``). The protocol's own coroutine, not one wrapping
        it: it is held for the connection's life."""
        return self._wire.deliver(receiver)

    def send_now(self, data: bytes) -> bool:
        return self._wire.send_now(data)

    def hold(self, held: bool) -> None:
        self._wire.hold(held)

    def rest(self, seconds: float) -> None:
        self._wire.rest(seconds)

    async def send_bytes(self, data: bytes) -> None:
        await self._wire.send_bytes(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self._wire.close(code, reason or "")


class WireProtocol(asyncio.Protocol):
    """One agent connection, from the upgrade request to the end of the TCP connection.

    Bind the class attributes with ``wire_protocol``; uvicorn makes one instance per
    upgrade request."""

    path: ClassVar[str]
    fallback: ClassVar[type[asyncio.Protocol]]
    heartbeat: ClassVar[float]
    max_size: ClassVar[int]

    __slots__ = (
        "_app_state",
        "_config",
        "_conn",
        "_drain",
        "_ended",
        "_failure",
        "_fragments",
        "_heard",
        "_held",
        "_inbox",
        "_ping",
        "_queued",
        "_raw",
        "_read_paused",
        "_receiver",
        "_response",
        "_resting",
        "_server_state",
        "_state",
        "_text",
        "_timer",
        "_transport",
        "_waiter",
    )

    # _state: where the connection is
    _CONNECTING = 0  # the request is being read or the gateway has not answered it
    _OPEN = 1  # accepted
    _CLOSING = 2  # an answer that ends it went out (a refusal, a close frame, a failure)
    _GONE = 3  # the TCP connection is lost, or was handed to the fallback

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # the fallback is built from these; dropped once the request is read
        self._config: Config | None = config
        self._app_state: dict[str, Any] | None = app_state
        self._server_state = server_state
        self._conn = ServerProtocol(max_size=self.max_size, logger=_WEBSOCKETS_LOG)
        self._transport: asyncio.Transport | None = None
        self._state = self._CONNECTING
        # what came in before the request was read: the fallback reads it again
        self._raw: list[bytes] | None = []
        # the handshake answer, until the gateway accepts
        self._response: Response | None = None
        # received payloads the gateway has not taken, their size, and its wait for one
        self._inbox: deque[bytes | str] | None = None
        self._queued = 0
        self._waiter: asyncio.Future[bytes | str | int] | None = None
        # the gateway's receiver while it takes payloads as they are read (``deliver``),
        # and what it raised
        self._receiver: Callable[[bytes | str], None] | None = None
        self._failure: Exception | None = None
        # the close code the gateway hears after the inbox (None while open)
        self._ended: int | None = None
        # a fragmented message being put together, and whether it is text
        self._fragments: list[bytes] | None = None
        self._text = False
        self._read_paused = False
        # the gateway's word: what this peer sends cannot be taken now (the store is behind)
        self._held = False
        # while the gateway rests this peer (it took more than its share of the loop)
        self._resting: asyncio.TimerHandle | None = None
        # set while the transport's buffer is over its high-water mark
        self._drain: asyncio.Future[None] | None = None
        # one timer at a time: the next keepalive tick, or the wait for a close reply
        self._timer: asyncio.TimerHandle | None = None
        self._ping: bytes | None = None
        # anything received since the last keepalive tick: the peer is alive
        self._heard = False

    @staticmethod
    async def serve(socket: WireSocket) -> None:
        """The gateway's side of a connection (bound by ``wire_protocol``)."""
        raise NotImplementedError

    # asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server_state.connections.add(self)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state == self._GONE:
            return
        self._state = self._GONE
        self._server_state.connections.discard(self)
        self._cancel_timer()
        resting, self._resting = self._resting, None
        if resting is not None:
            resting.cancel()
        self._end(CLOSE_ABNORMAL)
        self._response = None
        self._raw = None
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def eof_received(self) -> bool | None:
        # the peer half-closed: connection_lost follows when the transport closes
        return None

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_future()
        # a peer that does not read must not make us buffer its pongs without end
        self._set_reading()

    def resume_writing(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)
        self._set_reading()

    def data_received(self, data: bytes) -> None:
        if self._state == self._GONE:
            return
        conn = self._conn
        self._heard = True
        if self._raw is not None:
            self._raw.append(data)
        conn.receive_data(data)
        for event in conn.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request) and self._request(event):
                return  # handed to the fallback
        if self._raw is not None and conn.handshake_exc is not None:
            self._bad_request()
            return
        if conn.parser_exc is not None and self._state != self._GONE:
            # garbage, a frame over the size, an unmasked frame: websockets queued
            # the close frame with its code
            close = conn.close_sent
            self._end(close.code if close is not None else CLOSE_ABNORMAL)
            self._state = self._CLOSING
        self._flush()

    def shutdown(self) -> None:
        """uvicorn's stop: close every connection it tracks."""
        transport = self._transport
        if self._state == self._GONE or transport is None:
            return
        self._cancel_timer()
        if self._state == self._OPEN:
            self._conn.send_close(CLOSE_RESTART)
            self._end(CLOSE_RESTART)
        elif self._state == self._CONNECTING and self._raw is None:
            self._conn.send_response(self._conn.reject(HTTPStatus.INTERNAL_SERVER_ERROR, FAILED))
            self._end(CLOSE_ABNORMAL)
        self._state = self._CLOSING
        self._flush()
        transport.close()
        # a peer that does not read keeps a closing transport open: the server must stop
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(SHUTDOWN_GRACE, self._abort)

    # the handshake ---------------------------------------------------------------------

    def _request(self, request: Request) -> bool:
        """Start serving an upgrade request; True when it went to the fallback."""
        raw_path = request.path.partition("?")[0]
        if unquote(raw_path) != self.path:
            self._hand_off()
            return True
        self._raw = None
        self._config = self._app_state = None
        response = self._conn.accept(request)
        authorization = request.headers.get_all("Authorization")
        # the request lives on in websockets' parser: keep no credential in it
        request.headers.clear()
        if response.status_code != 101:  # not a valid WebSocket handshake
            self._conn.send_response(response)
            self._state = self._CLOSING
            self._flush()
            self._close_transport()
            return False
        self._response = response
        transport = self._transport
        assert transport is not None
        address = get_remote_addr(transport)
        socket = WireSocket(
            self,
            {"authorization": authorization[0]} if authorization else {},
            Peer(*address) if address else None,
        )
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self.serve(socket))
        self._server_state.tasks.add(task)
        task.add_done_callback(self._served)
        return False

    def _hand_off(self) -> None:
        """Another path: uvicorn's own protocol and the app answer it, as on any port."""
        transport, raw = self._transport, self._raw
        assert transport is not None and raw is not None
        config, app_state = self._config, self._app_state
        assert config is not None and app_state is not None
        self._state = self._GONE
        self._raw = None
        self._config = self._app_state = None
        self._server_state.connections.discard(self)
        protocol = self.fallback(
            config=config,  # type: ignore[call-arg]
            server_state=self._server_state,
            app_state=app_state,
        )
        protocol.connection_made(transport)
        transport.set_protocol(protocol)
        protocol.data_received(b"".join(raw))

    def _bad_request(self) -> None:
        """A request websockets could not read (too long a line, too many headers)."""
        self._raw = None
        self._config = self._app_state = None
        self._state = self._CLOSING
        output = b"".join(self._conn.data_to_send())
        if not output:
            output = self._conn.reject(
                HTTPStatus.BAD_REQUEST, "Failed to open a WebSocket connection: invalid request.\n"
            ).serialize()
        if self._transport is not None:
            self._transport.write(output)
        self._close_transport()

    def _served(self, task: asyncio.Task[None]) -> None:
        self._server_state.tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None and not isinstance(exc, WebSocketDisconnect):
            log.error("agent_socket_failed error=%s", type(exc).__name__, exc_info=exc)
        if self._state == self._GONE:
            return
        if self._state == self._CONNECTING:
            # the gateway ended without answering the handshake
            self._conn.send_response(self._conn.reject(HTTPStatus.INTERNAL_SERVER_ERROR, FAILED))
            self._state = self._CLOSING
            self._flush()
        if self._timer is None or self._state != self._CLOSING:
            # no close of ours waits for the peer's reply: end the connection now
            self._close_transport()

    # what the gateway calls (through WireSocket) -------------------------------------------

    def accept(self) -> None:
        response, self._response = self._response, None
        if response is None or self._state != self._CONNECTING:
            raise WebSocketDisconnect(self._ended or CLOSE_ABNORMAL)
        del response.headers["Date"]
        for name, value in self._server_state.default_headers:
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        self._conn.send_response(response)
        self._state = self._OPEN
        self._flush()
        if self.heartbeat > 0:
            self._timer = asyncio.get_running_loop().call_later(self.heartbeat, self._keepalive)

    async def receive(self) -> dict[str, Any]:
        inbox = self._inbox
        payload: bytes | str | int
        if inbox:
            payload = inbox.popleft()
            self._queued -= len(payload)
            if self._read_paused:
                self._set_reading()
        elif self._ended is not None:
            payload = self._ended
        else:
            if self._waiter is not None:
                raise RuntimeError("one reader at a time")
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                payload = await waiter
            finally:
                self._waiter = None
        if isinstance(payload, int):
            return {"type": "websocket.disconnect", "code": payload}
        if isinstance(payload, str):
            return {"type": "websocket.receive", "text": payload}
        return {"type": "websocket.receive", "bytes": payload}

    async def deliver(self, receiver: Callable[[bytes | str], None]) -> int:
        """Hand every payload to ``receiver`` as it is read (those waiting first) until
        the connection ends, and answer its close code. No future or task wake-up per
        frame. What ``receiver`` raises fails the connection (1011) and is raised here."""
        inbox = self._inbox
        while inbox:
            payload = inbox.popleft()
            self._queued -= len(payload)
            try:
                receiver(payload)
            except Exception as exc:
                # read ahead, failed as one read now would be
                self._fail(exc)
                self._flush()
                raise
        # from here on frames go straight to ``receiver``: an empty deque kept for the
        # connection's life (here or in this frame) would be ~700 bytes of each of
        # thousands of connections
        self._inbox = inbox = None
        if self._read_paused:
            self._set_reading()
        if self._ended is None:
            if self._waiter is not None:
                raise RuntimeError("one reader at a time")
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            self._receiver = receiver
            try:
                await waiter
            finally:
                self._waiter = None
                self._receiver = None
        if self._failure is not None:
            raise self._failure
        assert self._ended is not None
        return self._ended

    def send_now(self, data: bytes) -> bool:
        """Send at once, unless the peer reads slower than we write or the connection
        is over: then False, and ``send_bytes`` waits or raises."""
        if self._drain is not None or self._state != self._OPEN or self._conn.state is not OPEN:
            return False
        self._send_binary(data)
        return True

    def hold(self, held: bool) -> None:
        """Stop reading (True) while the gateway cannot take what this peer sends, and
        start again (False): its frames wait in its socket and TCP holds it back. Its
        silence meanwhile is ours, so the keepalive does not count it."""
        self._held = held
        self._set_reading()

    def rest(self, seconds: float) -> None:
        """Read nothing from this peer for ``seconds``: what it sent took more than its
        share of the loop. Its silence meanwhile is ours, as while held."""
        if self._resting is not None:
            self._resting.cancel()
            self._resting = None
        if self._state == self._GONE:
            # frames read ahead reach the gateway after the connection is lost: a timer
            # armed now would hold the connection (and all it references) for the rest
            return
        self._resting = asyncio.get_running_loop().call_later(seconds, self._rested)
        self._set_reading()

    def _rested(self) -> None:
        self._resting = None
        self._set_reading()

    async def send_bytes(self, data: bytes) -> None:
        if self._drain is not None:
            # the peer reads slower than we write: wait, do not buffer without end
            await asyncio.shield(self._drain)
        if self._state != self._OPEN or self._conn.state is not OPEN:
            raise WebSocketDisconnect(self._ended or CLOSE_ABNORMAL)
        self._send_binary(data)

    def close(self, code: int, reason: str) -> None:
        if self._state == self._CONNECTING and self._response is not None:
            # closing before accepting refuses the handshake with HTTP 403
            self._response = None
            self._conn.send_response(self._conn.reject(HTTPStatus.FORBIDDEN, ""))
            self._end(CLOSE_ABNORMAL)
            self._state = self._CLOSING
            self._flush()
            self._close_transport()
            return
        if self._state != self._OPEN:
            return
        self._cancel_timer()
        self._conn.send_close(code, reason)
        self._end(code)
        self._state = self._CLOSING
        self._flush()
        self._set_reading()  # the peer's reply must get in
        self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._abort)

    # frames --------------------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.BINARY or opcode is Opcode.TEXT:
            if frame.fin:
                self._message(bytes(frame.data), opcode is Opcode.TEXT)
            else:
                self._fragments = [bytes(frame.data)]
                self._text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            # websockets refuses a continuation without a first fragment
            fragments = self._fragments
            assert fragments is not None
            fragments.append(bytes(frame.data))
            if frame.fin:
                self._fragments = None
                self._message(b"".join(fragments), self._text)
        elif opcode is Opcode.PONG:
            if self._ping is not None and frame.data == self._ping:
                self._ping = None
        elif opcode is Opcode.CLOSE:
            # websockets queued the reply and the end of the stream
            close = self._conn.close_rcvd
            self._end(close.code if close is not None else CLOSE_ABNORMAL)
            if self._state != self._GONE:
                self._state = self._CLOSING
        # a ping: websockets queued the pong

    def _message(self, data: bytes, text: bool) -> None:
        if self._state == self._CLOSING:
            return  # past our close: only the peer's reply matters
        payload: bytes | str = data
        if text:
            try:
                payload = data.decode()
            except UnicodeDecodeError:
                self._conn.fail(1007, "invalid UTF-8 in a text frame")
                self._end(1007)
                self._state = self._CLOSING
                return
        receiver = self._receiver
        if receiver is not None:
            try:
                receiver(payload)
            except Exception as exc:
                self._fail(exc)
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_result(payload)
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(payload)
        self._queued += len(payload)
        if not self._read_paused and (len(inbox) >= INBOX_FRAMES or self._queued >= INBOX_BYTES):
            self._set_reading()

    def _fail(self, exc: Exception) -> None:
        """The gateway's receiver raised ``exc``: the connection fails with 1011."""
        self._receiver = None
        self._failure = exc
        if self._state == self._OPEN:
            self._conn.fail(1011, "internal error")
            self._state = self._CLOSING
        self._end(1011)

    def _end(self, code: int) -> None:
        """The connection is over for the gateway: after the inbox, it hears ``code``."""
        if self._ended is not None:
            return
        self._ended = code
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_result(code)

    def _keepalive(self) -> None:
        """Every heartbeat: a peer heard from since the last tick is alive; one silent for
        a whole heartbeat gets a ping, and one still silent at the next tick has failed.

        Agents ping a server silent for a heartbeat themselves, so the server seldom
        needs to: at 10,000 idle agents its own pings would be 1,000 more frames sent and
        read a second. While tasks flow neither side pings: each hears the other."""
        self._timer = None
        if self._state != self._OPEN:
            return
        if self._heard or ((self._held or self._resting is not None) and self._drain is None):
            # heard from, or silent only because we do not read it
            self._heard = False
            self._ping = None
        elif self._ping is not None:
            self._ping = None
            self._conn.fail(1011, "keepalive ping timeout")
            self._end(1011)
            self._state = self._CLOSING
            self._flush()
            # a peer that does not answer may not read either: its unread buffer goes too
            self._abort()
            return
        else:
            self._ping = struct.pack("!I", random.getrandbits(32))
            self._conn.send_ping(self._ping)
            self._flush()
        self._timer = asyncio.get_running_loop().call_later(self.heartbeat, self._keepalive)

    # writing ------------------------------------------------------------------------------

    def _send_binary(self, data: bytes) -> None:
        """One binary frame of ``data`` on an open connection.

        Framed here, as websockets frames it: a server's frames are not masked and no
        extension is ever negotiated (none is offered), so a frame is its header and the
        data. websockets took ~2 µs a frame for this, a task to each of 10,000 hosts
        20 ms of a job."""
        if self._conn.extensions:
            self._conn.send_binary(data)
            self._flush()
            return
        self._flush()  # what websockets queued (a pong) goes first
        transport = self._transport
        if transport is None or self._state == self._GONE:
            return
        size = len(data)
        if size < 126:
            head = bytes((_FIN_BINARY, size))
        elif size < 65536:
            head = _HEAD_16.pack(_FIN_BINARY, 126, size)
        else:
            head = _HEAD_64.pack(_FIN_BINARY, 127, size)
        transport.write(head + data)

    def _flush(self) -> None:
        """Write what websockets queued; its end-of-stream mark closes the connection."""
        output = self._conn.data_to_send()
        if not output:
            return
        transport = self._transport
        if transport is None or self._state == self._GONE:
            return
        data = output[0] if len(output) == 1 else b"".join(output)
        if data:
            transport.write(data)
        if b"" in output:
            self._close_transport()

    def _set_reading(self) -> None:
        """Read only while the peer reads what we write and the gateway keeps up with
        what it sends (past our close, only the first holds: the reply must get in)."""
        inbox = self._inbox
        pause = self._drain is not None or (
            self._state != self._CLOSING
            and (
                self._held
                or self._resting is not None
                or (
                    inbox is not None
                    and (len(inbox) >= INBOX_FRAMES or self._queued >= INBOX_BYTES)
                )
            )
        )
        transport = self._transport
        if pause == self._read_paused or transport is None or self._state == self._GONE:
            return
        self._read_paused = pause
        if pause:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._ping = None

    def _abort(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if self._transport is not None:
            self._transport.abort()

    def _close_transport(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()
            if transport.get_write_buffer_size():
                # a closing transport waits for its buffer to go out: a peer that never
                # reads would keep the connection, and what it did not read, for good
                self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._abort)


def wire_protocol(
    serve: Callable[[WireSocket], Coroutine[Any, Any, None]],
    *,
    path: str,
    heartbeat: float,
    max_size: int,
    fallback: type[asyncio.Protocol],
) -> type[WireProtocol]:
    """A protocol class for ``uvicorn.Config(ws=...)``: WebSockets on ``path`` go to
    ``serve``, with keepalive pings every ``heartbeat`` seconds (a ping unanswered
    for as long fails the connection) and messages up to ``max_size`` bytes; other
    paths go to ``fallback`` (uvicorn's protocol, the app behind it)."""
    return type(
        "WireProtocol",
        (WireProtocol,),
        {
            "__slots__": (),
            "serve": staticmethod(serve),
            "path": path,
            "heartbeat": heartbeat,
            "max_size": max_size,
            "fallback": fallback,
        },
    )
