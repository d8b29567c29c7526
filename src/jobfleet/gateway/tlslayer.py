"""TLS for the agent port and the API port, driven over the loop's plain TCP transport.

uvloop's TLS transport allocates a 256 KiB read buffer per connection; the pages a
read touches stay resident for the connection's life, and with its protocol objects
it costs ~5.5 KiB per idle connection over OpenSSL's own ~16 KiB (``bench/tls_memory.py``).
A plain uvloop transport reads every socket into one buffer of the loop's and hands
over ``bytes``, so here each connection keeps only its ``ssl.SSLObject``, its two
``MemoryBIO``s and this object, which is both the plain transport's protocol and the
transport the application's protocol writes to.

A ``MemoryBIO`` keeps the largest buffer it ever held: fed a 256 KiB read at once, or
a large frame's records, it would keep that much for the connection's life. Records
therefore go in and come out ``SLICE`` bytes at a time, and each connection keeps at
most about that much in each BIO whatever it carried.

The TLS properties are the context's (certificate, versions, ciphers, tickets: none on
the agent port, TLS 1.3's two per handshake on the API port, whose clients resume);
renegotiation is refused (``OP_NO_RENEGOTIATION``: TLS 1.3 has none). A record that
fails to decrypt or parse aborts the connection; a close sends ``close_notify`` and
then closes the TCP connection without waiting for the peer's.
A close whose last bytes the peer takes nothing of for ``CLOSE_STALL`` seconds is cut:
the socket would otherwise hold them, and the connection, for as long as the peer
keeps its window shut (a slow reader still gets them all). What the peer took is
counted in the kernel's send queue too (Linux): the transport's own buffer shrinks
only once that queue has room again, which for a slow reader behind a queue of
megabytes can take longer than the stall.
A TCP end without the peer's ``close_notify`` may be a cut made on the way: the
application gets the whole records before it, then ``connection_lost`` with the error,
never an end of stream it could take for a complete one.

While the socket's write buffer is over its high-water mark (the peer does not read
what it is sent), nothing more is read from it, whatever the application does: each
record read may make OpenSSL write one back (a KeyUpdate answered) and the application
answer it (a pong, a pipelined request's response), so a peer that sends without
reading would otherwise make the server buffer for as long as it sends. What it sends
meanwhile waits in its own socket, and reading resumes once the buffer is below its
low-water mark. A connection's buffers then hold about its high-water mark, the rest
of the socket read the pause came in (256 KiB at most), and the answers to the records
fed before it.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import logging
import ssl
import termios
from collections.abc import Callable
from typing import Any, cast

log = logging.getLogger(__name__)

# plaintext taken from OpenSSL per call (one record is at most 16 KiB), into one buffer
# for every connection: the loop runs one protocol at a time, and what it delivers is
# copied out. A fresh 64 KiB object per read would churn the heap of a storm of handshakes
READ_SIZE = 64 * 1024
_PLAINTEXT = bytearray(READ_SIZE)
_PLAINTEXT_VIEW = memoryview(_PLAINTEXT)
# bytes put into or taken out of a MemoryBIO at once: what it keeps at most
SLICE = 4 * 1024
# how long a closing connection may send nothing of what it still holds (s)
CLOSE_STALL = 10.0
# Linux's SIOCOUTQ for a TCP socket; elsewhere the ioctl fails and is not counted
_OUTQ = getattr(termios, "TIOCOUTQ", 0x5411)


class TLSLayer(asyncio.Protocol, asyncio.Transport):
    """One server-side TLS connection: the plain transport's protocol below, the
    application protocol's transport above (made once the handshake is done)."""

    __slots__ = (
        "_app",
        "_app_factory",
        "_backlog",
        "_close_timer",
        "_closing",
        "_context",
        "_error",
        "_handshake",
        "_incoming",
        "_outgoing",
        "_peer_eof",
        "_raw",
        "_reading_paused",
        "_sslobj",
        "_writing_paused",
    )

    def __init__(
        self,
        context: ssl.SSLContext,
        app_factory: Callable[[], asyncio.Protocol],
        handshake: asyncio.Future[None],
    ) -> None:
        # no BaseTransport.__init__: its extra dict would be one more object per connection
        self._context = context
        self._app_factory: Callable[[], asyncio.Protocol] | None = app_factory
        # resolved when the handshake is done (or failed); dropped then
        self._handshake: asyncio.Future[None] | None = handshake
        self._raw: asyncio.Transport | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._app: asyncio.Protocol | None = None
        # what was read from the socket but not yet fed while the application paused
        self._backlog: bytes | None = None
        self._closing = False
        self._close_timer: asyncio.TimerHandle | None = None
        # the application's pause, and the transport's (the peer does not read): the
        # socket is read while neither holds, and records are fed only then
        self._reading_paused = False
        self._writing_paused = False
        # the socket's end came while records before it were still held
        self._peer_eof = False
        # what broke the connection, for the application's connection_lost
        self._error: Exception | None = None

    # the plain transport's protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        backlog = self._backlog
        if backlog is not None:
            # read again before the resume's drain ran: what waited goes first
            self._backlog = None
            data = backlog + data
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        view = memoryview(data)
        size, start = len(view), 0
        while start < size:
            if self._closing or self._raw is None:
                return
            if self._reading_paused or self._writing_paused:
                self._backlog = bytes(view[start:])
                return
            self._incoming.write(view[start : start + SLICE])
            start += SLICE
            if self._handshake is not None and not self._shake():
                continue
            self._read_records()

    def eof_received(self) -> bool | None:
        # TLS has no half-close: a peer that ends its stream has ended the connection,
        # once the records that came before the end are read
        if self._handshake is not None:
            self._fail_handshake(ConnectionResetError("the peer closed during the handshake"))
            return None
        if self._closing or self._app is None:
            return None
        self._peer_eof = True
        if not self._reading_paused and not self._writing_paused:
            self._drain()
        # records still held for a paused application or a peer that does not read:
        # the socket stays open until they are read and the end is taken after them
        return None if self._closing else True

    def connection_lost(self, exc: Exception | None) -> None:
        timer, self._close_timer = self._close_timer, None
        if timer is not None:
            timer.cancel()
        raw, self._raw = self._raw, None
        if raw is None and self._app is None and self._handshake is None:
            return
        if self._handshake is not None:
            self._fail_handshake(
                exc or ConnectionResetError("the peer closed during the handshake")
            )
        app, self._app = self._app, None
        if app is not None:
            app.connection_lost(exc if exc is not None else self._error)

    def pause_writing(self) -> None:
        if not self._writing_paused:
            self._writing_paused = True
            raw = self._raw
            if not self._reading_paused and raw is not None:
                raw.pause_reading()
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._writing_paused:
            self._writing_paused = False
            raw = self._raw
            if not self._reading_paused and raw is not None:
                raw.resume_reading()
                # records read before the pause wait in the BIO or the backlog
                asyncio.get_running_loop().call_soon(self._drain)
        if self._app is not None:
            self._app.resume_writing()

    # TLS -----------------------------------------------------------------------------------

    def _shake(self) -> bool:
        """Go on with the handshake; True once it is done and the application is in."""
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except (ssl.SSLError, OSError) as exc:
            # the alert, if OpenSSL wrote one, goes out before the connection is cut
            self._flush()
            self._fail_handshake(exc)
            return False
        self._flush()
        handshake, self._handshake = self._handshake, None
        factory, self._app_factory = self._app_factory, None
        assert handshake is not None and factory is not None
        app = self._app = factory()
        app.connection_made(self)
        if not handshake.done():
            handshake.set_result(None)
        return True

    def _fail_handshake(self, exc: BaseException) -> None:
        handshake, self._handshake = self._handshake, None
        self._app_factory = None
        if handshake is not None and not handshake.done():
            handshake.set_exception(exc)
        self.abort()

    def give_up(self) -> None:
        """The handshake took too long, or its waiter was cancelled: cut the connection."""
        handshake, self._handshake = self._handshake, None
        self._app_factory = None
        if handshake is not None and handshake.done() and not handshake.cancelled():
            handshake.exception()  # what the waiter raised: nothing more to report
        self.abort()

    def _read_records(self) -> None:
        """Hand what the records carry to the application while it reads."""
        sslobj = self._sslobj
        incoming = self._incoming
        while (
            not self._reading_paused
            and not self._writing_paused
            and not self._closing
            and self._app is not None
        ):
            # nothing left to decrypt: the read would only raise SSLWantReadError, an
            # exception object per delivery (once per request on a kept-alive
            # connection). An end written to the BIO shows as eof, not as pending
            if not incoming.pending and not sslobj.pending() and not incoming.eof:
                break
            try:
                # with a buffer it answers the count read (typeshed says bytes)
                size = cast(int, sslobj.read(READ_SIZE, _PLAINTEXT))
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except (ssl.SSLError, OSError) as exc:
                log.debug("tls_failed error=%s", exc)
                self._error = exc
                self._flush()
                self.abort()
                return
            if not size:
                # the peer's close_notify: the end of its stream
                app = self._app
                self._flush()
                app.eof_received()
                self.close()
                return
            self._app.data_received(_PLAINTEXT_VIEW[:size].tobytes())
        self._flush()

    def _flush(self) -> None:
        raw = self._raw
        if self._outgoing.pending and raw is not None:
            raw.write(self._outgoing.read())

    # the application's transport ----------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._raw is None or self._app is None:
            return
        outgoing = self._outgoing
        size = len(data)
        if not size:
            return
        if size <= SLICE:
            # most writes (a response's head, a small body, a frame): one record
            try:
                self._sslobj.write(data)
            except (ssl.SSLError, OSError) as exc:
                log.debug("tls_failed error=%s", exc)
                self._error = exc
                self.abort()
                return
            self._raw.write(outgoing.read())
            return
        view = memoryview(data)
        offset, size = 0, len(view)
        records: list[bytes] = []
        try:
            while offset < size:
                offset += self._sslobj.write(view[offset : offset + SLICE])
                records.append(outgoing.read())
        except (ssl.SSLError, OSError) as exc:
            log.debug("tls_failed error=%s", exc)
            self._error = exc
            self.abort()
            return
        if records:
            self._raw.write(records[0] if len(records) == 1 else b"".join(records))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close")

    def get_write_buffer_size(self) -> int:
        raw = self._raw
        return self._outgoing.pending + (raw.get_write_buffer_size() if raw is not None else 0)

    def get_read_buffer_size(self) -> int:
        """Bytes read from the socket and not yet handed to the application: what
        waits for a pause to end, and the part of a record still in OpenSSL's BIO."""
        backlog = self._backlog
        return self._incoming.pending + (len(backlog) if backlog is not None else 0)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        raw = self._raw
        return raw.get_write_buffer_limits() if raw is not None else (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def is_reading(self) -> bool:
        # the application's view: a pause for the peer's sake is not its own
        raw = self._raw
        return not self._reading_paused and raw is not None and not raw.is_closing()

    def pause_reading(self) -> None:
        if self._reading_paused or self._raw is None:
            return
        self._reading_paused = True
        if not self._writing_paused:
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading_paused or self._raw is None:
            return
        self._reading_paused = False
        if self._writing_paused:
            return  # resume_writing reads again
        self._raw.resume_reading()
        # records read before the pause wait in the BIO or the backlog: the socket may
        # have no more
        asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        self._read_records()
        backlog, self._backlog = self._backlog, None
        if backlog:
            self._feed(backlog)
        if (
            self._peer_eof
            and not self._reading_paused
            and not self._writing_paused
            and self._backlog is None
            and not self._closing
            and self._app is not None
        ):
            # every record before the end is read: a close_notify among them would
            # have closed the connection, so this end cuts the stream short, and
            # OpenSSL reports it so (after any whole records still in the BIO)
            self._incoming.write_eof()
            self._read_records()

    def is_closing(self) -> bool:
        return self._closing or self._raw is None or self._raw.is_closing()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        raw = self._raw
        if raw is None:
            return
        # writes our close_notify; the peer's is not waited for
        with contextlib.suppress(ssl.SSLError, OSError):
            self._sslobj.unwrap()
        self._flush()
        raw.close()
        if raw.get_write_buffer_size():
            self._watch_close(_unsent(raw))

    def _watch_close(self, left: int) -> None:
        self._close_timer = asyncio.get_running_loop().call_later(
            CLOSE_STALL, self._close_stalled, left
        )

    def _close_stalled(self, before: int) -> None:
        """The close's check: cut a connection whose peer took nothing since the last."""
        self._close_timer = None
        raw = self._raw
        if raw is None:
            return
        left = raw.get_write_buffer_size()
        if not left:
            return
        unsent = _unsent(raw)
        if unsent < before:
            self._watch_close(unsent)  # a slow reader, still reading
            return
        peer, own = raw.get_extra_info("peername"), raw.get_extra_info("sockname")
        log.info(
            "tls_close_stalled peer=%s port=%s unsent=%d",
            peer[0] if peer else "?",
            own[1] if own else "?",
            left,
        )
        raw.abort()

    def abort(self) -> None:
        self._closing = True
        raw = self._raw
        if raw is not None:
            raw.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._app = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return cast(asyncio.BaseProtocol, self._app)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sslcontext":
            return self._context
        if name == "ssl_object":
            return self._sslobj
        if name == "peercert":
            return self._sslobj.getpeercert()
        if name == "cipher":
            return self._sslobj.cipher()
        if name == "compression":
            return self._sslobj.compression()
        raw = self._raw
        return raw.get_extra_info(name, default) if raw is not None else default


def _unsent(raw: asyncio.Transport) -> int:
    """What the peer has yet to take: the transport's buffer and, where the kernel
    tells it (Linux), the bytes of the socket's send queue it has not acknowledged."""
    left = raw.get_write_buffer_size()
    sock = raw.get_extra_info("socket")
    if sock is None:
        return left
    queued = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), _OUTQ, queued)
    except (OSError, ValueError):
        return left
    return left + queued[0]


async def start_tls(
    conn: Any,
    context: ssl.SSLContext,
    app_factory: Callable[[], asyncio.Protocol],
    timeout: float,
) -> TLSLayer:
    """Serve the accepted socket ``conn`` with TLS: the application's protocol from
    ``app_factory`` is made once the handshake is done. A handshake not done within
    ``timeout`` seconds, or failed, aborts the connection and raises."""
    loop = asyncio.get_running_loop()
    handshake: asyncio.Future[None] = loop.create_future()
    layer = TLSLayer(context, app_factory, handshake)
    await loop.connect_accepted_socket(lambda: layer, conn)
    try:
        await asyncio.wait_for(asyncio.shield(handshake), timeout)
    except BaseException:
        layer.give_up()
        raise
    return layer
