"""Live agent connections held by this node."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Set
from typing import Any

import orjson

from jobfleet.domain import protocol

log = logging.getLogger(__name__)

SendFrame = Callable[[bytes], Awaitable[None]]
# writes a frame at once and says True, or says False when it would have to wait
SendNow = Callable[[bytes], bool]
# stops reading the socket (True) or starts again (False)
HoldReading = Callable[[bool], None]
# stops reading the socket for a while (seconds)
Rest = Callable[[float], None]
# closes the socket itself, with a close code and reason
Hangup = Callable[[int, str], Awaitable[None]]
# what goes down to an agent: a message built by the protocol's constructors (the plain
# dict is for callers that build theirs by hand; the wire is the same)
Outgoing = protocol.ServerMessage | dict[str, Any]
_KNOWS_NOTHING: frozenset[str] = frozenset()


class WriteTurn:
    """The connections with messages to write in this loop turn, written by one
    callback: a fan-out to thousands of agents schedules one, not one per agent."""

    __slots__ = ("_due",)

    def __init__(self) -> None:
        self._due: list[AgentConnection] = []

    def add(self, conn: AgentConnection) -> None:
        if not self._due:
            asyncio.get_running_loop().call_soon(self._write)
        self._due.append(conn)

    def _write(self) -> None:
        due, self._due = self._due, []
        for conn in due:
            try:
                conn._write_pending()
            except Exception:  # one connection's failure is not the others'
                log.exception("agent_write_failed agent=%s", conn.agent_id)


class HeldAcks:
    """Acknowledgements that wait, each connection's for at most ``delay`` seconds, for
    another message to the same agent to ride with.

    An agent forgets a result only when it is acknowledged, so an acknowledgement
    that waits costs nothing but the agent holding the result a little longer (and
    sending it again, to be refused as already stored and acknowledged again, if the
    connection drops meanwhile).
    Sent on its own, it is a frame, a TLS record and a system call on each side per
    task: in a stream of jobs most ride with the next task for the same host.

    One timer for every connection: the connections wait in the order they began
    to, which is the order of their deadlines."""

    __slots__ = ("_queue", "_timer", "delay")

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._queue: deque[tuple[float, AgentConnection]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def hold(self, conn: AgentConnection) -> float:
        """``conn`` began to hold acknowledgements; the deadline it has."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.delay
        self._queue.append((deadline, conn))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._release)
        return deadline

    def _release(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        queue = self._queue
        while queue and queue[0][0] <= now:
            deadline, conn = queue.popleft()
            try:
                conn._release_acks(deadline)
            except Exception:  # one connection's failure is not the others'
                log.exception("agent_ack_failed agent=%s", conn.agent_id)
        if queue:
            self._timer = loop.call_at(queue[0][0], self._release)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()


class AgentConnection:
    """One agent's socket. ``send`` never blocks: messages wait in a list, and a
    flush, started by the first message and ended when the list is empty, packs
    whatever has piled up into one frame (a JSON list), so a fan-out of many small
    messages costs one socket write per agent, not one per message. With
    ``send_now`` (a socket that can write at once) the flush is one callback on the
    loop (one for many connections with a shared ``turn``); a task that waits for the
    socket exists only while the agent reads slower than the server writes, or
    without ``send_now``.

    With ``acks`` (``HeldAcks``), an acknowledgement waits for the connection's next
    other message, or the delay, and goes out with it.

    Ten thousand of these live for as long as their agents are connected, so an
    idle one holds no task, queue or event: only its slots."""

    __slots__ = (
        "_acks",
        "_acks_due",
        "_flushing",
        "_hangup",
        "_held",
        "_hold",
        "_pending",
        "_rest",
        "_scheduled",
        "_send_frame",
        "_send_now",
        "_turn",
        "agent_id",
        "bk_host_id",
        "caps",
        "closed",
        "known",
        "peer",
        "refuses",
        "swarm",
    )

    def __init__(
        self,
        agent_id: str,
        bk_host_id: int,
        send_frame: SendFrame,
        known: set[str] | None = None,
        peer: str = "",
        hangup: Hangup | None = None,
        swarm: str = "",
        send_now: SendNow | None = None,
        turn: WriteTurn | None = None,
        hold: HoldReading | None = None,
        acks: HeldAcks | None = None,
        rest: Rest | None = None,
    ) -> None:
        self.agent_id = agent_id
        # ``address:port`` where this agent serves file pieces to its peers ("" = not)
        self.swarm = swarm
        self._hangup = hangup
        self.bk_host_id = bk_host_id
        # the address the connection came from, for the audit log
        self.peer = peer
        # read only; most agents know no task, and share one empty set
        self.known: Set[str] = known or _KNOWS_NOTHING
        self._send_frame = send_frame
        self._send_now = send_now
        self._turn = turn
        self._hold = hold
        self._rest = rest
        self._acks = acks
        # the [task, seq] pairs waiting to ride with the next message, and their deadline
        self._held: list[Any] | None = None
        self._acks_due = 0.0
        self._pending: list[Outgoing] = []
        self._flushing: asyncio.Task[None] | None = None
        self._scheduled = False
        self.closed = False
        # what the agent announced it can do (None: an agent from before announcing), and
        # what keeps from it a message it cannot take (``gateway.skew``; None: nothing)
        self.caps: frozenset[str] | None = None
        self.refuses: Callable[[Outgoing], bool] | None = None

    def send(self, message: Outgoing) -> None:
        if self.closed:
            return
        if self.refuses is not None and self.refuses(message):
            return
        if self._acks is not None:
            if message.get("t") == protocol.ACK:
                held = self._held
                if held is None:
                    self._held = held = []
                    self._acks_due = self._acks.hold(self)
                pairs = message.get("acks")
                if isinstance(pairs, list):
                    held.extend(pairs)
                return
            if self._held is not None:
                held, self._held = self._held, None
                self._enqueue(protocol.ack(held))
        self._enqueue(message)

    def _enqueue(self, message: Outgoing) -> None:
        self._pending.append(message)
        if self._flushing is not None or self._scheduled:
            return
        if self._send_now is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
            return
        self._scheduled = True
        if self._turn is not None:
            self._turn.add(self)
        else:
            asyncio.get_running_loop().call_soon(self._write_pending)

    def _release_acks(self, deadline: float) -> None:
        """The held acknowledgements waited their time: they go out on their own."""
        if self._held is None or deadline != self._acks_due or self.closed:
            return  # gone with another message since (and perhaps held again)
        held, self._held = self._held, None
        self._enqueue(protocol.ack(held))

    def _write_pending(self) -> None:
        """What piled up in this loop turn, written at once while the socket takes it."""
        if not self._scheduled:
            return  # written already, by ``close``
        self._scheduled = False
        send_now = self._send_now
        assert send_now is not None
        while self._pending:
            batch, self._pending = self._pending, []
            frame = self._encode(batch)
            if frame is None:
                continue
            if not send_now(frame):
                # the agent reads slower than we write, or is gone: wait (or fail) in a task
                self._flushing = asyncio.get_running_loop().create_task(self._flush(frame))
                return

    async def _flush(self, frame: bytes | None = None) -> None:
        try:
            while frame is not None or self._pending:
                if frame is None:
                    batch, self._pending = self._pending, []
                    frame = self._encode(batch)
                    if frame is None:
                        continue
                try:
                    await self._send_frame(frame)
                except Exception as exc:  # the reader side sees the close and cleans up
                    log.info("agent_send_failed agent=%s error=%s", self.agent_id, exc)
                    self.closed = True
                    self._pending = []
                    return
                frame = None
        finally:
            self._flushing = None

    def _encode(self, batch: list[Outgoing]) -> bytes | None:
        """One frame of the batch. A message that does not encode (an integer past 64
        bits) is dropped on its own: the socket is fine, and the agent's other messages
        still go out on it."""
        try:
            return orjson.dumps(batch[0] if len(batch) == 1 else batch)
        except orjson.JSONEncodeError:
            pass
        good = []
        for message in batch:
            try:
                orjson.dumps(message)
            except orjson.JSONEncodeError as exc:
                log.error(
                    "agent_message_unencodable agent=%s type=%s error=%s",
                    self.agent_id,
                    message.get("t") if isinstance(message, dict) else None,
                    exc,
                )
            else:
                good.append(message)
        if not good:
            return None
        return orjson.dumps(good[0] if len(good) == 1 else good)

    def hold_reading(self, held: bool) -> None:
        """Read nothing more from this agent (True) until told again (False): what it
        sends cannot be stored as fast as it sends it."""
        if self._hold is not None:
            self._hold(held)

    def rest(self, seconds: float) -> None:
        """Read nothing from this agent for ``seconds``: it took more than its share of
        the server's loop."""
        if self._rest is not None:
            self._rest(seconds)

    async def hang_up(self, code: int, reason: str) -> None:
        """Stop sending and close the socket itself (a revoked credential, a connection
        another one of the same agent replaced)."""
        await self.close()
        if self._hangup is not None:
            await self._hangup(code, reason)

    async def close(self) -> None:
        """No more sends; what was sent before still goes out (for at most 2 s)."""
        if self._held is not None and not self.closed:
            held, self._held = self._held, None
            self._enqueue(protocol.ack(held))
        self.closed = True
        self._write_pending()
        task = self._flushing
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 2)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()


class Registry:
    def __init__(self) -> None:
        self._by_host: dict[int, AgentConnection] = {}

    def add(self, conn: AgentConnection) -> AgentConnection | None:
        """Register ``conn``; returns an older connection of the same host to close."""
        old = self._by_host.get(conn.bk_host_id)
        self._by_host[conn.bk_host_id] = conn
        return old

    def remove(self, conn: AgentConnection) -> bool:
        if self._by_host.get(conn.bk_host_id) is conn:
            del self._by_host[conn.bk_host_id]
            return True
        return False

    def for_host(self, bk_host_id: int) -> AgentConnection | None:
        return self._by_host.get(bk_host_id)

    def for_agent(self, agent_id: str) -> AgentConnection | None:
        # a scan: only revocations, which are rare, look agents up by credential
        for conn in self._by_host.values():
            if conn.agent_id == agent_id:
                return conn
        return None

    def host_ids(self) -> list[int]:
        return list(self._by_host)

    def __len__(self) -> int:
        return len(self._by_host)
