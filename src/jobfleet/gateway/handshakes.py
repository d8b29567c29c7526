"""TLS handshakes on the agent port (and the API port's, with ``tls_cert``), a bounded
number at a time and fair between hosts.

asyncio's TLS server starts the handshake of every connection it accepts at once, and
it accepts as many as the listen backlog holds in one turn of the loop. After a server
restart thousands of agents connect within a second or two: their handshakes then take
the loop in turns of hundreds at a time, and the API port, served by the same loop,
waits behind them. The gate accepts the TCP connections itself and starts TLS on at
most ``slots`` of them at once; the others wait, accepted, in a queue per source
address, or in the kernel's backlog once that queue is full. The next free slot goes
to the next address in turn, and one address holds at most ``per_source`` slots, so a
host opening many connections (or stalling its handshakes) cannot take them all. A
handshake that has not finished after ``timeout`` seconds is cut and frees its slot.

Once its handshake is done a connection is uvicorn's as on any TLS listener: header
timeouts, the pending-headers cap and the credential checks apply unchanged. TLS runs
in ``tlslayer.py`` over the loop's plain transport, not in the loop's TLS transport
(whose read buffer per connection costs each of thousands of idle agents).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from jobfleet.gateway.tlslayer import start_tls

log = logging.getLogger(__name__)

# accept errors that say the process or the machine is out of something: asyncio's own
# servers stop accepting for a second on them rather than spin on the listening socket
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
RESOURCE_PAUSE = 1.0
# accepts in one turn of the loop at most
ACCEPT_BATCH = 128


@dataclass(frozen=True)
class HandshakeLimits:
    # handshakes in flight at once. This is also what paces a burst: a handshake ends
    # only once the loop has read its client's last flight, so the busier the loop, the
    # fewer begin (in 10,000-agent restarts 256 let agents in at 3,800 a second and the
    # API waited 3.4 s; 64 kept it to 0.4-0.5 s)
    slots: int = 64
    # of which one source address may hold at most this many
    per_source: int = 48
    # handshakes begun in one turn of the loop: the server's share of a handshake (key
    # exchange and signature) is done as its client's first flight is read, and a turn
    # that begins all the slots at once keeps the API's requests waiting that long
    per_turn: int = 32
    # seconds from a handshake's start to its end, else the connection is cut
    timeout: float = 10.0
    # accepted connections waiting for a slot; past it they wait in the kernel's backlog
    queued: int = 2048
    # a connection that waited this long for a slot is closed unanswered: its client
    # (an agent gives up opening after 15 s) has most likely gone
    max_wait: float = 12.0

    @classmethod
    def for_machine(cls, cpus: int | None = None) -> HandshakeLimits:
        """Sized to the machine's cores: the server's part of a handshake is CPU."""
        n = max(1, cpus or os.cpu_count() or 1)
        slots = 32 * n
        return cls(slots=slots, per_source=max(1, slots - slots // 4), per_turn=16 * n)


class HandshakeGate:
    """Accepts on ``sock`` and hands each connection, once its TLS handshake is done
    under ``limits``, to a protocol from ``protocol_factory``. ``port`` names it in logs."""

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        protocol_factory: Callable[[], asyncio.Protocol],
        limits: HandshakeLimits,
        port: str = "agent",
    ) -> None:
        self.sock = sock
        # which of the server's ports, in log lines
        self.port = port
        self.context = context
        self.protocol_factory = protocol_factory
        self.limits = limits
        # accepted connections waiting for a slot, per source address, in turn order
        self._waiting: OrderedDict[str, deque[tuple[socket.socket, float]]] = OrderedDict()
        self._queued = 0
        self._room = asyncio.Event()
        # handshakes under way, and how many of them each source address holds
        self._handshakes: set[asyncio.Task[None]] = set()
        self._busy: dict[str, int] = {}
        self._this_turn = 0
        self._accepting: asyncio.Task[None] | None = None
        self._closed = False
        self.failed = 0
        self.expired = 0

    @property
    def in_flight(self) -> int:
        return len(self._handshakes)

    @property
    def queued(self) -> int:
        return self._queued

    def in_flight_from(self, source: str) -> int:
        return self._busy.get(source, 0)

    def start(self, backlog: int) -> None:
        self.sock.setblocking(False)
        self.sock.listen(backlog)
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    def close(self) -> None:
        """Stop accepting, drop the connections still waiting, cut the handshakes under
        way; connections past their handshake are the listener's to close."""
        if self._closed:
            return
        self._closed = True
        if self._accepting is not None:
            self._accepting.cancel()
        for queue in self._waiting.values():
            for conn, _ in queue:
                conn.close()
        self._waiting.clear()
        self._queued = 0
        for task in self._handshakes:
            task.cancel()
        self.sock.close()

    async def wait_closed(self) -> None:
        tasks = [*self._handshakes, *([self._accepting] if self._accepting else [])]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._queued >= self.limits.queued:
                self._room.clear()
                await self._room.wait()
            try:
                self._take(*await loop.sock_accept(self.sock))
                # what else the backlog holds is taken in the same turn, as asyncio's own
                # servers do: one turn of the loop per connection would let a burst
                # in at the pace of a loop that is busy with the burst
                for _ in range(ACCEPT_BATCH - 1):
                    if self._queued >= self.limits.queued:
                        break
                    self._take(*self.sock.accept())
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    log.error("%s_port_accept_paused error=%s", self.port, exc)
                    await asyncio.sleep(RESOURCE_PAUSE)
                elif self._closed or exc.errno == errno.EBADF:
                    return
                # else a client that reset before it was accepted: nothing to answer
            self._admit()

    def _take(self, conn: socket.socket, address: object) -> None:
        conn.setblocking(False)
        source = str(address[0]) if isinstance(address, tuple) else ""
        queue = self._waiting.get(source)
        if queue is None:
            # an address with nothing waiting goes first: those that are waiting
            # have had their turns, and have the next ones in order
            queue = self._waiting[source] = deque()
            self._waiting.move_to_end(source, last=False)
        queue.append((conn, time.monotonic()))
        self._queued += 1

    def _next_source(self) -> str | None:
        """The first address in turn that holds fewer than its share of slots."""
        for source in self._waiting:
            if self._busy.get(source, 0) < self.limits.per_source:
                return source
        return None

    def _admit(self) -> None:
        now = time.monotonic()
        while len(self._handshakes) < self.limits.slots and not self._closed:
            if self._this_turn >= self.limits.per_turn:
                break  # the next turn admits more (``_new_turn``)
            source = self._next_source()
            if source is None:
                break
            queue = self._waiting[source]
            conn, since = queue.popleft()
            if queue:
                self._waiting.move_to_end(source)
            else:
                del self._waiting[source]
            self._queued -= 1
            if now - since > self.limits.max_wait:
                self.expired += 1
                conn.close()
                continue
            self._busy[source] = self._busy.get(source, 0) + 1
            loop = asyncio.get_running_loop()
            if self._this_turn == 0:
                loop.call_soon(self._new_turn)
            self._this_turn += 1
            task = loop.create_task(self._handshake(source, conn))
            self._handshakes.add(task)
        if self._queued < self.limits.queued:
            self._room.set()

    def _new_turn(self) -> None:
        self._this_turn = 0
        self._admit()

    async def _handshake(self, source: str, conn: socket.socket) -> None:
        try:
            await start_tls(conn, self.context, self.protocol_factory, self.limits.timeout)
        except (OSError, TimeoutError, EOFError) as exc:
            # a client that went away, spoke no TLS, or stalled past the timeout: the
            # transport is closed already, and nothing about it is worth a line per client
            self.failed += 1
            log.debug("%s_handshake_failed source=%s error=%s", self.port, source, exc)
            with contextlib.suppress(OSError):
                conn.close()
        finally:
            left = self._busy[source] - 1
            if left:
                self._busy[source] = left
            else:
                del self._busy[source]
            task = asyncio.current_task()
            if task is not None:
                self._handshakes.discard(task)
            self._admit()
