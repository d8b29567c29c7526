"""The WebSocket every agent holds to the server."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import platform
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, AnyStr, Generic, Protocol, TypeVar, cast

import orjson
from starlette.websockets import WebSocketDisconnect

from jobfleet import __version__
from jobfleet.domain import protocol
from jobfleet.domain.agent_credentials import parse_credential
from jobfleet.domain.host_addresses import may_claim
from jobfleet.domain.host_filters import clean_labels
from jobfleet.domain.protocol import clean_name
from jobfleet.domain.throttle import Throttle
from jobfleet.gateway.credentials import CredentialChecks
from jobfleet.gateway.presence import Presence
from jobfleet.gateway.refusals import Refusals
from jobfleet.gateway.registry import AgentConnection, HeldAcks, Registry, WriteTurn
from jobfleet.gateway.skew import gate
from jobfleet.gateway.validation import read_frame, read_load
from jobfleet.gateway.wire import WireSocket
from jobfleet.loop import raise_if_cancelled
from jobfleet.store.agent_loads import AgentLoad, AgentLoads
from jobfleet.store.database import now_ms
from jobfleet.store.identity import AgentHost, IdentityStore
from jobfleet.store.inventory import Inventory
from jobfleet.store.outage import OutageLog, disk_refused, reason

log = logging.getLogger(__name__)
# what a stop that cannot write any more loses
UNSAVED_AT_STOP = (
    "the host facts and loads agents reported since its last write; agents report them "
    "again when they reconnect"
)

CLOSE_UNAUTHORIZED = 4401
CLOSE_PROTOCOL = 4400
CLOSE_REPLACED = protocol.CLOSE_REPLACED
CLOSE_TRY_AGAIN = 1013
# too many failed authentications from the address
CLOSE_THROTTLED = 4429
# what the server closes a connection with when a frame is over ``MAX_FRAME_BYTES``
CLOSE_TOO_BIG = 1009
CLOSE_REVOKED = 4403
# how often each node looks for credentials revoked by any node (its own revocations
# wake it at once), and how far back
REVOCATION_POLL = 0.3
# a wide window: nodes' clocks may differ, and a connection that authenticated just
# before its revocation was written is caught by a later look
REVOCATION_LOOKBACK_MS = 60_000
# how often agents report their host's load (GSE's list_agent_info)
STATS_EVERY = 60.0
# how long an authenticated connection may go without its hello
HELLO_TIMEOUT = 30.0
# The share of the server's loop one agent's frames may take, past a burst: an agent
# over it is not read until it is back within it. Refusing a bad message costs ~20 µs
# and a frame may hold 90,000 of them; one agent sending such frames without pause
# (or any flood) would otherwise leave every other agent and the API waiting.
AGENT_LOOP_SHARE = 0.25
AGENT_LOOP_BURST = 0.05

_Fact = TypeVar("_Fact")
# a task id as ``protocol.TaskId`` has it
_TASK_ID = re.compile(r"[0-9]{1,18}:[0-9]{1,9}:[0-9]{1,18}")


class _HeaderLookup(Protocol):
    def get(self, key: str, /) -> str | None: ...


class _Address(Protocol):
    @property
    def host(self) -> str: ...


class AgentSocket(Protocol):
    """What the gateway uses of an agent's WebSocket: the agent listener's own
    (``gateway.wire.WireSocket``) or, on the API port with ``--agent-plaintext``,
    Starlette's. ``receive`` answers ASGI-shaped messages (``websocket.receive`` with
    ``bytes`` or ``text``, ``websocket.disconnect`` with ``code``); ``accept`` and
    ``send_bytes`` raise ``WebSocketDisconnect`` once the peer is gone."""

    @property
    def headers(self) -> _HeaderLookup: ...

    @property
    def client(self) -> _Address | None: ...

    async def accept(self) -> None: ...

    async def receive(self) -> Mapping[str, Any]: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class AgentEvents(Protocol):
    """What the gateway tells the engine."""

    def agent_online(self, conn: AgentConnection) -> None: ...

    def agent_offline(self, conn: AgentConnection) -> None: ...

    def connection_closed(self, conn: AgentConnection) -> None:
        """Every connection that ends, one replaced by its agent's newer one too."""

    def agent_message(self, conn: AgentConnection, message: dict[str, Any]) -> None: ...


def swarm_address(value: Any, source: str) -> str:
    """Where an agent serves file pieces (``host:port``), from its hello.

    An empty host means the address the agent connected from. Anything that is not
    an IP address and a port is ignored: the agent then takes no part in swarms."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return ""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]") or source
    if not sep or not port.isdecimal() or not 0 < int(port) < 65536:
        return ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return ""
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


# The tasks of a hello's ``known`` the server keeps, for the connection's life. An agent
# holding more is sent the rest again, and ignores what it already has.
MAX_KNOWN = 10_000


def known_tasks(value: Any, bk_host_id: int) -> set[str]:
    """The tasks of this host a hello's ``known`` names, at most ``MAX_KNOWN``.

    Only this host's task ids count: the set lives as long as the connection, and a
    4 MiB hello of short strings would otherwise keep some 70 MB."""
    if not isinstance(value, list):
        return set()
    suffix = f":{bk_host_id}"
    known: set[str] = set()
    for item in value:
        if len(known) >= MAX_KNOWN:
            break
        if isinstance(item, str) and item.endswith(suffix) and _TASK_ID.fullmatch(item):
            known.add(item)
    return known


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``value`` as an address (an IPv4-mapped IPv6 one as its IPv4 address), or None."""
    try:
        address = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _bounds_frames(conn: AgentConnection) -> bool:
    """Whether ``conn``'s agent announced it keeps its frames and output within the
    limits (``protocol.CAP_FRAMES``); agents of an earlier release announced nothing."""
    return conn.caps is not None and protocol.CAP_FRAMES in conn.caps


def _ipv6(value: Any) -> str | None:
    """The IPv6 address a hello reports, in normal form; None (keep the stored one) if bad."""
    try:
        address = ipaddress.ip_address(str(value or "").strip())
    except ValueError:
        return None
    return str(address) if address.version == 6 else None


class _HostFacts(Generic[_Fact]):
    """Writes what agents say beyond presence (OS name and labels in the hello, the
    host's load) a batch at a time, the last word of each host.

    Thousands of agents say hello at once after a restart; one write each would
    queue them all on the database.
    """

    def __init__(
        self,
        write: Callable[[dict[int, _Fact]], Awaitable[None]],
        what: str,
        interval: float = 0.2,
    ) -> None:
        self.write = write
        self.what = what
        self.interval = interval
        self._pending: dict[int, _Fact] = {}
        self._task: asyncio.Task[None] | None = None
        # agents keep saying hello and sending loads while the database is away
        self._outage = OutageLog(log, "host_facts_write_failed")

    def add(self, bk_host_id: int, facts: _Fact) -> None:
        self._pending[bk_host_id] = facts
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            batch, self._pending = self._pending, {}
            try:
                await self.write(batch)
                self._outage.ok()
            except Exception:
                self._outage.failed("what=%s hosts=%d", self.what, len(batch))
            if not self._pending:
                self._task = None
                return

    async def stop(self) -> None:
        """Write what is pending now: the database closes after this."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._pending:
            batch, self._pending = self._pending, {}
            await self.write(batch)


async def _receive_raw(ws: AgentSocket) -> bytes | str:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    payload: bytes | str = message.get("bytes") or message.get("text") or b""
    return payload


async def _receive(ws: AgentSocket) -> Any:
    raw = await _receive_raw(ws)
    # agents of every release say hello in a few hundred bytes; only their backlogs
    # may be larger (``_read_plain``), and a hello is read before any capability is known
    if len(raw) > protocol.MAX_FRAME_BYTES:
        raise orjson.JSONDecodeError("a hello over the frame limit", "", 0)
    return orjson.loads(raw)


# Of a frame past ``MAX_FRAME_BYTES`` (only an agent of an earlier release sends one: its
# backlog, output messages whose text is nearly all of it), the most characters that may
# open a JSON container or string, or separate two values, as a share of the frame: parsed,
# each is a Python object, a list slot or both, so 64 MiB of ``[]`` would take some 2 GB
# of the server's memory and 64 MiB of ``[0,0,…]`` some 470 MB.
LEGACY_STRUCTURE_SHARE = 1 / 64

# A JSON string, escapes included; possessive, so a long one is one linear scan.
_JSON_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_JSON_STRING_BYTES = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)


def _mostly_text(raw: bytes | str) -> bool:
    """Whether a frame past the usual limit is what an earlier agent's backlog is: few
    containers and strings, and few values outside them (every value but the first of a
    list or object follows a ``,`` or a ``:``)."""
    most = len(raw) * LEGACY_STRUCTURE_SHARE
    if isinstance(raw, str):
        return _few_values(raw, most, _JSON_STRING, "", '"[{', ",:")
    return _few_values(raw, most, _JSON_STRING_BYTES, b"", b'"[{', b",:")


def _few_values(
    raw: AnyStr, most: float, strings: re.Pattern[AnyStr], empty: AnyStr, opens: AnyStr,
    separators: AnyStr,
) -> bool:
    if (_structure(raw, opens) <= most and _structure(raw, separators) <= most):
        return True
    # output full of quotes or commas (JSON logs, CSV) is text: count what is outside
    # strings, and each string once
    rest, count = strings.subn(empty, raw)
    return _structure(rest, opens[1:]) + count <= most and _structure(rest, separators) <= most


def _structure(raw: AnyStr, marks: AnyStr) -> int:
    """How many of ``raw``'s characters are any of ``marks``."""
    return sum(raw.count(marks[i : i + 1]) for i in range(len(marks)))


async def _read_plain(
    ws: AgentSocket,
    receive: Callable[[bytes | str], None],
    released: asyncio.Event,
    resting: list[float],
    limit: int = protocol.MAX_FRAME_BYTES,
) -> int:
    """Frames of a socket on the API port (``--agent-plaintext``) to ``receive``, one
    read at a time, waiting while held and until ``resting[0]`` (loop time); the close
    code once the connection ends. A frame over ``limit`` bytes closes the connection
    (the listener's own limit is that of agents of an earlier release), as does one past
    ``MAX_FRAME_BYTES`` that is not mostly text (``_mostly_text``)."""
    loop = asyncio.get_running_loop()
    while True:
        if not released.is_set():
            await released.wait()
        if resting[0] > loop.time():
            await asyncio.sleep(resting[0] - loop.time())
        try:
            raw = await _receive_raw(ws)
        except WebSocketDisconnect as exc:
            return exc.code
        if len(raw) > limit or (len(raw) > protocol.MAX_FRAME_BYTES and not _mostly_text(raw)):
            with contextlib.suppress(Exception):
                await ws.close(code=CLOSE_TOO_BIG, reason="frame too large")
            return CLOSE_TOO_BIG
        receive(raw)


def _holder(released: asyncio.Event) -> Callable[[bool], None]:
    """Holds (True) and releases (False) a reader that waits for ``released``."""

    def hold(held: bool) -> None:
        if held:
            released.clear()
        else:
            released.set()

    return hold


def _rester(resting: list[float]) -> Callable[[float], None]:
    """Rests a reader that waits until ``resting[0]`` (loop time)."""

    def rest(seconds: float) -> None:
        resting[0] = asyncio.get_running_loop().time() + seconds

    return rest


def _text(value: Any, limit: int) -> str:
    return clean_name(str(value or "")[:limit])


class Gateway:
    def __init__(
        self,
        identity: IdentityStore,
        registry: Registry,
        presence: Presence,
        heartbeat: float = 10.0,
        refusals: Refusals | None = None,
        failures: Throttle | None = None,
        events: AgentEvents | None = None,
        stats_every: float = STATS_EVERY,
        hello_timeout: float = HELLO_TIMEOUT,
        ack_delay: float | None = None,
    ) -> None:
        self.identity = identity
        self.registry = registry
        self.presence = presence
        self.heartbeat = heartbeat
        self.refusals = refusals or Refusals(None)
        # wrong agent credentials per source address (shared with the HTTP API's count)
        self.failures = failures or Throttle("failed authentications", 0, 1)
        # agents that proved themselves here before: an address over its failure budget
        # (a NAT shared with an attacker) does not lock them out
        self._proven: set[str] = set()
        self.events = events
        self._credentials = CredentialChecks(identity.check_agents)
        self._inventory = Inventory(presence.db)
        self._facts: _HostFacts[dict[str, Any]] = _HostFacts(
            self._inventory.record_facts, "facts"
        )
        self._loads: _HostFacts[AgentLoad] = _HostFacts(
            AgentLoads(presence.db).record, "load", interval=1.0
        )
        self.stats_every = stats_every
        self.hello_timeout = hello_timeout
        self._revocations: asyncio.Task[None] | None = None
        # what the agents' connections write in one loop turn goes out in one callback
        self._writes = WriteTurn()
        # an acknowledgement waits up to half a heartbeat to ride with the agent's next
        # task (its agent holds the result meanwhile); 0 sends each at once
        delay = heartbeat / 2 if ack_delay is None else ack_delay
        self._acks = HeldAcks(delay) if delay > 0 else None

    def start(self) -> None:
        self._revocations = asyncio.get_running_loop().create_task(self._watch_revocations())

    async def stop(self) -> None:
        """Each part stops whatever the others do: a last write that fails (the database
        gone at shutdown) must not leave the other parts' tasks and timers running."""
        task, self._revocations = self._revocations, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=5.0)
        if self._acks is not None:
            self._acks.stop()
        errors: dict[str, Exception] = {}
        for name, stop in (
            ("refusals", self.refusals.stop),
            (self._facts.what, self._facts.stop),
            (self._loads.what, self._loads.stop),
        ):
            try:
                await stop()
            except Exception as exc:
                errors[name] = exc
        if errors:
            # the same outage fails each of them: one line tells of all, in the words the
            # server's stop uses for its other parts (the gateway's stop does not raise)
            error = next(iter(errors.values()))
            log.warning(
                "stop_unsaved part=gateway failed=%s reason=%s unsaved=%s",
                ",".join(errors),
                disk_refused(error) or reason(error),
                UNSAVED_AT_STOP,
            )

    async def _watch_revocations(self) -> None:
        """Cut the connections of revoked credentials, wherever they were revoked."""
        outage = OutageLog(log, "revocation_check_failed")
        while True:
            raise_if_cancelled()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.identity.revoked.wait(), REVOCATION_POLL)
            self.identity.revoked.clear()
            try:
                revoked = await self.identity.revoked_since(now_ms() - REVOCATION_LOOKBACK_MS)
                outage.ok()
            except Exception:
                outage.failed()
                continue
            for agent_id in revoked:
                conn = self.registry.for_agent(agent_id)
                if conn is not None:
                    log.warning(
                        "agent_revoked_disconnected agent=%s host=%s", agent_id, conn.bk_host_id
                    )
                    await conn.hang_up(CLOSE_REVOKED, "credential revoked")

    async def serve(self, ws: AgentSocket) -> None:
        cred = parse_credential(ws.headers.get("authorization"))
        client = ws.client
        peer = client.host if client else ""
        if (cred is None or cred[0] not in self._proven) and self.failures.exhausted(peer):
            log.warning("agent_auth_throttled peer=%s", peer)
            await ws.close(code=CLOSE_THROTTLED)
            return
        try:
            # thousands of agents reconnect at once after a restart: their credentials
            # are checked a batch at a time, not one query each
            bound = await self._credentials.check(*cred) if cred else None
        except Exception:
            log.exception("agent_auth_error")
            await ws.close(code=CLOSE_TRY_AGAIN)
            return
        if cred is None or bound is None:
            self.failures.take(peer)
            log.warning("agent_auth_failed peer=%s", peer)
            await ws.close(code=CLOSE_UNAUTHORIZED)
            return
        host_id = bound.host_id
        agent_id = cred[0]
        self._proven.add(agent_id)
        try:
            await ws.accept()
        except WebSocketDisconnect:  # gone while its credential was checked
            return
        try:
            # an agent says hello at once; a peer that never does would hold a
            # connection (and its TLS state) for as long as it answers pings
            hello = await asyncio.wait_for(_receive(ws), self.hello_timeout)
        except (WebSocketDisconnect, orjson.JSONDecodeError):
            return
        except TimeoutError:
            log.warning("agent_hello_missing agent=%s peer=%s", cred[0], peer)
            await ws.close(code=CLOSE_PROTOCOL, reason="no hello")
            return
        if not isinstance(hello, dict) or hello.get("t") != protocol.HELLO:
            await ws.close(code=CLOSE_PROTOCOL)
            return

        async def hangup(code: int, reason: str) -> None:
            try:
                await ws.close(code=code, reason=reason)
            except Exception as exc:  # already closing: the reader cleans up either way
                log.info("agent_close_failed agent=%s error=%s", agent_id, exc)

        # the agent listener's socket stops reading itself; on the API port
        # (``--agent-plaintext``) the reader waits for this between frames while held
        released: asyncio.Event | None = None
        resting = [0.0]
        hold: Callable[[bool], None]
        rest: Callable[[float], None]
        if isinstance(ws, WireSocket):
            hold, rest = ws.hold, ws.rest
        else:
            released = asyncio.Event()
            released.set()
            hold = _holder(released)
            rest = _rester(resting)
        known = known_tasks(hello.get("known"), host_id)
        conn = AgentConnection(
            agent_id,
            host_id,
            ws.send_bytes,
            known,
            peer=peer,
            hangup=hangup,
            swarm=self._peer_port(hello.get("peer"), peer, agent_id, bound),
            # the agent listener's socket writes a frame at once when the agent keeps up
            send_now=ws.send_now if isinstance(ws, WireSocket) else None,
            turn=self._writes,
            hold=hold,
            acks=self._acks,
            rest=rest,
        )
        version = _text(hello.get("version"), 64)
        conn.caps = protocol.hello_caps(hello)
        conn.refuses = gate(conn.caps, version, self._answerer(conn), agent_id)
        old = self.registry.add(conn)
        if old is not None:
            # usually a reconnect the server saw first; when it keeps happening, two
            # processes share this credential (the agent that is cut says so)
            log.info(
                "agent_connection_replaced agent=%s host=%s old_peer=%s new_peer=%s",
                agent_id, host_id, old.peer, peer,
            )
            # its socket goes too: left open, it would keep reading for its agent, unseen
            # by the registry, and so by a revocation of the credential
            await old.hang_up(CLOSE_REPLACED, "replaced by a newer connection")
        self.presence.online(
            host_id,
            {
                "hostname": _text(hello.get("hostname"), 255),
                "os_type": _text(hello.get("os") or platform.system(), 32),
                "agent_version": version,
                "ipv6": self._claimed_ipv6(hello.get("ipv6"), agent_id, bound),
            },
        )
        os_name = _text(hello.get("os_name"), 255) or None
        labels = clean_labels(hello.get("labels"))
        if labels:
            labels = {k: clean_name(v) for k, v in labels.items()}
        if os_name is not None or labels is not None:
            self._facts.add(host_id, {"os_name": os_name, "labels": labels})
        self._load(host_id, read_load(hello.get("load")))
        conn.send(
            protocol.welcome(agent_id, host_id, self.heartbeat, __version__, self.stats_every)
        )
        log.info(
            "agent_online agent=%s host=%s known=%d version=%s protocol=%s caps=%s",
            agent_id, host_id, len(conn.known), version, _text(hello.get("protocol"), 16) or 1,
            ",".join(sorted(conn.caps)) if conn.caps is not None else "-",
        )
        if self.events:
            self.events.agent_online(conn)
        # this frame lives as long as the connection, for hours: it keeps neither the
        # hello, a replaced connection, nor the credential (the secret) all that time
        del hello, known, old, os_name, labels, cred
        try:
            receive = self._receiver(conn)
            if isinstance(ws, WireSocket):
                # awaited in this frame, with no coroutine of its own: ten thousand
                # connections hold it for hours. Each frame goes to ``receive`` as it
                # is read, with no future or task wake-up per frame.
                code = await ws.deliver(receive)
            else:
                assert released is not None
                # an agent that does not say it keeps its frames within the limit is
                # held to the limit of the servers it was made for
                bounded = _bounds_frames(conn)
                limit = protocol.MAX_FRAME_BYTES if bounded else protocol.LEGACY_FRAME_BYTES
                code = await _read_plain(ws, receive, released, resting, limit)
            if code == CLOSE_TOO_BIG:
                self.refusals.refuse(conn, "frame_too_large", "a frame over the size limit")
        finally:
            await conn.close()
            if self.events:
                # a replaced connection too: the engine keeps nothing of one that is gone
                self.events.connection_closed(conn)
            if self.registry.remove(conn):
                self.presence.offline(host_id)
                log.info("agent_offline agent=%s host=%s", agent_id, host_id)
                if self.events:
                    self.events.agent_offline(conn)

    def _peer_port(self, value: Any, peer: str, agent_id: str, host: AgentHost) -> str:
        """Where other agents may dial this host for file pieces: the hello's ``peer``
        (``swarm_address``) if its address is the host's own ip, or the one the
        connection came from; else "" (the host takes no part in swarms).

        Every target of a swarm dials each member's address: an agent free to name any
        would turn the fleet on an address of its choosing (a service on each target's
        loopback, a metadata address). An address the connection came from that is a
        loopback one is kept only for a host whose own ip is loopback too: for any other
        host it names the dialer itself. The host's ip comes with its credential's check,
        so agents behind a NAT or a proxy cost no query each when a storm of them
        reconnects."""
        address = swarm_address(value, peer)
        if not address:
            return ""
        claimed = _ip(address.rpartition(":")[0])
        seen = _ip(peer)
        if claimed is not None and claimed == seen and not claimed.is_loopback:
            return address
        own = _ip(host.ip)
        if own is not None and (claimed == own or (claimed == seen and own.is_loopback)):
            return address
        log.warning(
            "agent_peer_address_refused agent=%s host=%s address=%s peer=%s",
            agent_id, host.host_id, address, peer,
        )
        return ""

    def _claimed_ipv6(self, value: Any, agent_id: str, host: AgentHost) -> str | None:
        """The IPv6 address a hello reports, in normal form; None (keep the stored one)
        if it is not one, "" (none) if it spells an IPv4 address that is not the host's
        ip (``::ffff:a.b.c.d``): callers naming a host so mean that IPv4 address's host,
        whom no other agent may stand for (``domain.host_addresses``)."""
        address = _ipv6(value)
        if address is None or may_claim(host.ip, address):
            return address
        log.warning(
            "agent_ipv6_refused agent=%s host=%s ipv6=%s reason=another_hosts_ipv4",
            agent_id, host.host_id, address,
        )
        return ""

    def _answerer(self, conn: AgentConnection) -> Callable[[dict[str, Any]], None]:
        """What takes a message the server answers in the name of ``conn``'s agent
        (``gateway.skew``), as if the agent had sent it."""

        def answer(message: dict[str, Any]) -> None:
            if self.events is not None and not conn.closed:
                self.events.agent_message(conn, message)

        return answer

    def _load(self, host_id: int, load: protocol.HostLoad | None) -> None:
        """Keep the host load an agent reported (checked: a hello's with ``read_load``,
        a ``stats`` message's with its frame)."""
        if load is not None:
            self._loads.add(
                host_id, AgentLoad(load["cpu"], load["mem"], load["started"], now_ms())
            )

    def _receiver(self, conn: AgentConnection) -> Callable[[bytes | str], None]:
        """What takes each frame ``conn``'s agent sends."""
        events = self.events
        refusals = self.refusals
        # an agent that does not say it bounds its messages may send longer output
        long_data = not _bounds_frames(conn)
        clock = time.perf_counter
        # the loop time this agent's frames took beyond its share, and when that was
        debt = 0.0
        since = clock()

        def receive(raw: bytes | str) -> None:
            nonlocal debt, since
            started = clock()
            take(raw)
            ended = clock()
            debt = max(0.0, debt - (started - since) * AGENT_LOOP_SHARE) + ended - started
            since = ended
            if debt > AGENT_LOOP_BURST:
                conn.rest(debt / AGENT_LOOP_SHARE)
                debt = 0.0

        def take(raw: bytes | str) -> None:
            messages, refused = read_frame(raw, long_data)
            for refusal in refused:
                refusals.refuse(conn, refusal.reason, refusal.detail)
                if refusal.task is not None and refusal.seq is not None:
                    # the agent keeps a message until it is acknowledged: a message
                    # that will never be taken would come back after every reconnect
                    conn.send(protocol.ack([[refusal.task, refusal.seq]]))
                if refusal.reply is not None and events is not None:
                    # the request it answers (a source's listing or upload) would wait to
                    # its deadline: it fails now, with the reason (only the host asked
                    # may answer, so no agent can fail another's request this way)
                    events.agent_message(
                        conn, protocol.refused_reply(refusal.reply, refusal.detail)
                    )
            if any(m["t"] == "stats" for m in messages):
                for message in messages:
                    if message["t"] == "stats":
                        self._load(conn.bk_host_id, message["load"])
                messages = [m for m in messages if m["t"] != "stats"]
            if events is not None:
                for message in messages:
                    # validated above; the engine reads them as plain dicts
                    events.agent_message(conn, cast("dict[str, Any]", message))

        return receive
