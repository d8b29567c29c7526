"""Serving file pieces to the other targets of a transfer (peer-to-peer), and asking them.

Opt-in (``--peer-port``): an agent without it never listens and downloads every
file from the server. The wire format is small and binary, one request at a time
per connection:

    request:  b"JFP1" + 4-byte big-endian length + JSON
              {"op": "have" | "get", "x": transfer, "t": token, "n": item, "i": piece}
    answer:   1-byte status + 4-byte big-endian length + body

``have`` answers a bitfield of the item's pieces this agent holds and has checked;
``get`` answers the piece, sent from the file with ``sendfile`` (no copy through
Python). A transfer this agent does not (or no longer) hold answers ``UNKNOWN``
with nothing in it. Anything hostile — a bad or expired token, an item or piece
out of range, a frame over ``MAX_REQUEST``, a request that does not arrive whole
within ``REQUEST_TIMEOUT`` (slowloris) — is answered ``REFUSED`` (when there is
anything to answer) and the connection closed; at most ``MAX_CONNECTIONS`` peers
are served at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MAGIC = b"JFP1"
MAX_REQUEST = 2048
REQUEST_TIMEOUT = 10.0
SEND_TIMEOUT = 300.0
MAX_CONNECTIONS = 64
OK, REFUSED, UNKNOWN, MISSING = 0, 1, 2, 3
ANSWER = struct.Struct(">BI")
REQUEST = struct.Struct(">4sI")


class PeerError(Exception):
    """A peer that refused, broke the protocol, or could not be reached."""


@dataclass
class ItemShare:
    """One file of a transfer as this agent holds it: verified pieces only."""

    fd: int
    size: int
    piece_size: int
    have: bytearray

    def span(self, index: int) -> tuple[int, int]:
        offset = index * self.piece_size
        return offset, max(0, min(self.piece_size, self.size - offset))


@dataclass
class Share:
    token: str
    expires: float
    items: dict[int, ItemShare] = field(default_factory=dict)
    # loop time after which the share is dropped (set once the download ends)
    release_at: float | None = None


class PeerServer:
    """The agent's inbound peer port and the pieces it offers."""

    def __init__(self, listen: str, port: int, advertise: str, *, linger: float = 120.0) -> None:
        self.listen = listen
        self.port = port
        self.advertise = advertise
        self.linger = linger
        self.shares: dict[str, Share] = {}
        self.served_bytes = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.TimerHandle | None = None

    @property
    def address(self) -> str:
        """What the hello tells the server: ``host:port`` ("" host: the source address)."""
        return f"{self.advertise}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.listen or None, self.port, limit=MAX_REQUEST * 2
        )
        if self.port == 0:
            self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("peer_port_listening listen=%s port=%d", self.listen, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._conns):
            task.cancel()
        for transfer in list(self.shares):
            self._drop(transfer)

    # the downloads' side ------------------------------------------------------------
    def offer(self, transfer: str, token: str, expires: float, n: int, item: ItemShare) -> None:
        share = self.shares.get(transfer)
        if share is None or not hmac.compare_digest(share.token, token):
            if share is not None:
                self._drop(transfer)
            share = self.shares[transfer] = Share(token, expires)
            # past its token's expiry a share opens nothing: its files are closed then
            # even when no ``finished`` comes (a seeding source whose step ended while
            # it was disconnected is never told to stop)
            asyncio.get_running_loop().call_later(
                max(0.0, expires - time.time()) + 1.0, self._expire, transfer, share
            )
        old = share.items.get(n)
        if old is not None:
            _close(old.fd)
        share.items[n] = item
        share.release_at = None

    def finished(self, transfer: str) -> None:
        """The download ended: keep serving a while, for peers still fetching."""
        share = self.shares.get(transfer)
        if share is None:
            return
        loop = asyncio.get_running_loop()
        share.release_at = loop.time() + max(0.0, min(self.linger, share.expires - time.time()))
        loop.call_at(share.release_at, self._release, transfer)

    def _release(self, transfer: str) -> None:
        share = self.shares.get(transfer)
        release_at = share.release_at if share is not None else None
        if release_at is not None and asyncio.get_running_loop().time() >= release_at:
            self._drop(transfer)

    def _expire(self, transfer: str, share: Share) -> None:
        if self.shares.get(transfer) is share:
            self._drop(transfer)

    def _drop(self, transfer: str) -> None:
        share = self.shares.pop(transfer, None)
        if share is not None:
            for item in share.items.values():
                _close(item.fd)

    # the peers' side ----------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._conns) >= MAX_CONNECTIONS or task is None:
            writer.close()
            return
        self._conns.add(task)
        try:
            while True:
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        request = await _read_request(reader)
                except PeerError as exc:
                    await _answer(writer, REFUSED, str(exc).encode())
                    log.warning("peer_refused peer=%s reason=%s", _peer(writer), exc)
                    return
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                if request is None:
                    return
                if not await self._handle(request, writer):
                    return
        except (ConnectionError, TimeoutError, OSError):
            return
        finally:
            self._conns.discard(task)
            writer.close()

    async def _handle(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False closes the connection."""
        share = self.shares.get(str(request.get("x")))
        if share is None:
            await _answer(writer, UNKNOWN, b"")
            return True
        token = request.get("t")
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode(), share.token.encode()
        ):
            return await self._refuse(writer, "bad token for this transfer")
        if time.time() > share.expires:
            return await self._refuse(writer, "the token has expired")
        n, index, op = request.get("n"), request.get("i"), request.get("op")
        item = share.items.get(n) if isinstance(n, int) else None
        if item is None:
            return await self._refuse(writer, "no such item in this transfer")
        if op == "have":
            await _answer(writer, OK, bytes(item.have))
            return True
        if op != "get":
            return await self._refuse(writer, "unknown request")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(item.have):
            return await self._refuse(writer, "piece index out of range")
        if not item.have[index]:
            await _answer(writer, MISSING, b"")
            return True
        offset, length = item.span(index)
        writer.write(ANSWER.pack(OK, length))
        async with asyncio.timeout(SEND_TIMEOUT):
            await writer.drain()
            with os.fdopen(os.dup(item.fd), "rb", buffering=0) as fh:
                await asyncio.get_running_loop().sendfile(
                    writer.transport, fh, offset, length, fallback=True
                )
        self.served_bytes += length
        return True

    async def _refuse(self, writer: asyncio.StreamWriter, reason: str) -> bool:
        log.warning("peer_refused peer=%s reason=%s", _peer(writer), reason)
        await _answer(writer, REFUSED, reason.encode())
        return False


async def _read_request(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    try:
        head = await reader.readexactly(REQUEST.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None  # closed between requests
        raise
    magic, length = REQUEST.unpack(head)
    if magic != MAGIC:
        raise PeerError("not a peer request")
    if length > MAX_REQUEST:
        raise PeerError(f"a request of {length} bytes is over the limit of {MAX_REQUEST}")
    body = await reader.readexactly(length)
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        # RecursionError: arrays nested a thousand deep fit in MAX_REQUEST
        raise PeerError("a request that is not JSON") from None
    if not isinstance(request, dict):
        raise PeerError("a request that is not an object")
    return request


async def _answer(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    writer.write(ANSWER.pack(status, len(body)) + body)
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await writer.drain()


def _peer(writer: asyncio.StreamWriter) -> str:
    name = writer.get_extra_info("peername")
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) else "?"


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def encode_request(request: dict[str, Any]) -> bytes:
    body = json.dumps(request, separators=(",", ":")).encode()
    return REQUEST.pack(MAGIC, len(body)) + body


class PeerLink:
    """One connection to a peer, one request at a time, in blocking calls.

    Run them on a thread: a piece is read with one ``recv_into`` straight into the
    caller's buffer (``MSG_WAITALL``), so no Python runs per network packet."""

    def __init__(self, address: str, transfer: str, token: str, timeout: float = 30.0) -> None:
        self.address = address
        self.transfer = transfer
        self.token = token
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        host, _, port = self.address.rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=5.0)
        sock.settimeout(self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        return sock

    def close(self) -> None:
        """Safe from another thread: a ``recv`` blocked on the socket returns at once."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def have(self, n: int) -> bytes:
        status, body = self._ask({"op": "have", "n": n}, None)
        return bytes(body) if status == OK else b""

    def get(self, n: int, index: int, into: bytearray) -> memoryview | None:
        """The piece read into ``into``; None if the peer does not have it (yet)."""
        status, body = self._ask({"op": "get", "n": n, "i": index}, into)
        return body if status == OK else None

    def _ask(self, request: dict[str, Any], into: bytearray | None) -> tuple[int, memoryview]:
        frame = encode_request({**request, "x": self.transfer, "t": self.token})
        head = bytearray(ANSWER.size)
        try:
            reused = self._sock is not None
            sock = self._connect()
            try:
                sock.sendall(frame)
                _recv_exactly(sock, memoryview(head))
            except (ConnectionError, BrokenPipeError):
                if not reused:
                    raise
                # the peer closed a connection left idle (``REQUEST_TIMEOUT``): dial again
                self.close()
                sock = self._connect()
                sock.sendall(frame)
                _recv_exactly(sock, memoryview(head))
            status, length = ANSWER.unpack(head)
            limit = len(into) if into is not None else 1 << 20
            if length > limit:
                raise PeerError(f"an answer of {length} bytes is over {limit}")
            view = memoryview(into if into is not None else bytearray(length))[:length]
            _recv_exactly(sock, view)
        except BaseException:
            self.close()
            raise
        if status == REFUSED:
            self.close()
            raise PeerError(f"refused: {bytes(view).decode(errors='replace')[:200]}")
        return status, view


def _recv_exactly(sock: socket.socket, view: memoryview) -> None:
    while view:
        got = sock.recv_into(view, len(view), socket.MSG_WAITALL)
        if not got:
            raise ConnectionResetError("the peer closed the connection")
        view = view[got:]
