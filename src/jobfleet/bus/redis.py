"""The bus of a cluster, on Redis.

- Each node reads its own stream, ``jf:inbox:<node>``, in a consumer group and
  acknowledges an entry once it has handled it; after a restart it first handles
  what it had read but not acknowledged. A message is a JSON list of messages
  (what one flush had for that node), so a fan-out to thousands of hosts costs a
  few Redis commands, not one per host.
- A node proves it is alive with ``jf:node:<node>`` (expires after ``node_ttl``).
  When that key is gone, one live node takes the dead node's stream (a claim key
  decides which), hands over what was left in it, and forgets its agents.
- ``jf:presence`` maps each host to the node holding its agent; every node keeps a
  copy in memory, kept current by ``jf:agents`` (pub/sub) and read again in full
  every ``resync`` seconds, so looking a host up costs nothing. Entries of a dead
  node count as absent at once and are removed by the node that took it over.
- Live views use pub/sub (``jf:live:<topic>``): what a viewer misses it reads
  from the store.

Messages to nodes carry scripts, sensitive parameters and database passwords:
every stream entry is sealed with the cluster's shared key (``seal``/``unseal``), so
Redis never holds them in clear text. Live events (output a viewer watches) are sealed
too; presence carries host ids and node ids only.

If Redis goes away, messages wait in memory and are sent once it is back; when
it comes back as a new instance (a restart without persistence), this node
writes its agents and consumer group again, announces its agents, and tells its
listener, which sends again what it still waits for. Until the other nodes have
done the same (each within a beat or so), the new Redis lacks their liveness keys
and agents: for ``node_ttl`` after noticing the new instance, a node keeps the
nodes it knew alive and, for hosts the new map does not name yet, where it knew
their agents to be.

Every node of a cluster holds the same secret key and agent CA; their check values
are in ``jf:cluster``. A node compares its own with them each time it registers
(at start, and whenever Redis is back or is a new instance), before it writes or
reads anything else there: one that has not joined yet and whose values differ goes
no further (``on_refused``) and leaves the stored values as they are. A node that
has not yet seen the cluster's values does not write its own into a Redis that
started empty less than ``node_ttl`` ago (a restart that lost them): the running
nodes write theirs back first, and a running node that finds other values there
writes its own back over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from jobfleet.bus.base import BusListener
from jobfleet.logs import Spell
from jobfleet.loop import raise_if_cancelled

log = logging.getLogger(__name__)


# the longest a node's bus takes to stop, per stage (s)
STOP_SECONDS = 5.0

GROUP = "jf"
# messages per stream entry, entries per read
PACK = 2000
READ_COUNT = 200
# a stream that nobody reads (a node that never comes back) is capped
INBOX_MAXLEN = 1_000_000
# how many times a message for an agent may be passed on between nodes
MAX_HOPS = 3

_RELEASE = """
local n = 0
for i, host in ipairs(ARGV) do
  if i > 1 and redis.call('HGET', KEYS[1], host) == ARGV[1] then
    redis.call('HDEL', KEYS[1], host)
    n = n + 1
  end
end
return n
"""


async def claim_cluster_keys(
    url: str, values: dict[str, str], prefix: str = "jf", timeout: float = 5.0
) -> list[str] | None:
    """The names of ``values`` (what every node of a cluster must share, as check
    values) that differ from what the cluster's first node wrote; None when Redis
    cannot be reached. The first node to ask writes its own."""
    client: aioredis.Redis = aioredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        return await _claim(client, f"{prefix}:cluster", values)
    except (RedisError, OSError):
        return None
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


async def _claim(client: aioredis.Redis, key: str, values: dict[str, str]) -> list[str]:
    """Write those of ``values`` the cluster's hash lacks; the names that differ from it."""
    for name, value in values.items():
        await client.hsetnx(key, name, value)
    return _differing(values, await client.hgetall(key))


def _differing(values: dict[str, str], stored: Any) -> list[str]:
    return [name for name, value in values.items() if stored.get(name.encode()) != value.encode()]


async def node_id_in_use(url: str, node_id: str, beat: float = 2.0, prefix: str = "jf") -> bool:
    """Does a running node beat under ``node_id`` (a data directory copied with its
    ``node_id``)? Its liveness key changes within a beat; that of this node's own
    previous life (killed moments ago) does not. False when Redis cannot be reached."""
    client: aioredis.Redis = aioredis.Redis.from_url(
        url, socket_timeout=5.0, socket_connect_timeout=5.0
    )
    key = f"{prefix}:node:{node_id}"
    try:
        before = await client.get(key)
        if before is None:
            return False
        await asyncio.sleep(beat * 1.5)
        after = await client.get(key)
    except (RedisError, OSError):
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    return after is not None and after != before


class ClusterKeysRefused(Exception):
    """This node's keys are not the cluster's: it must not serve the cluster's work."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


class _JoinDeferred(Exception):
    """Redis is empty and this node has not seen the cluster's keys yet: it waits for
    the running nodes to write theirs back."""


class RedisBus:
    clustered = True

    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        node_ttl: float = 10.0,
        beat: float = 2.0,
        resync: float = 10.0,
        prefix: str = "jf",
        seal: Callable[[bytes], bytes] = bytes,
        unseal: Callable[[bytes], bytes] = bytes,
        cluster_keys: dict[str, str] | None = None,
        on_refused: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.url = url
        self.node_id = node_id
        self.node_ttl = node_ttl
        self.beat = beat
        self.resync = resync
        self.prefix = prefix
        self._seal = seal
        self._unseal = unseal
        # written back with the node's registration: a Redis that restarted empty
        # learns the cluster's keys from the running nodes first (within a beat), not
        # from whichever node happens to start next (claim_cluster_keys)
        self.cluster_keys = dict(cluster_keys or {})
        self._on_refused = on_refused
        # the names of the keys that differ from the cluster's (None: not refused)
        self.refused: list[str] | None = None
        # set once this node's keys matched the cluster's: until then it sends and
        # reads nothing (what it would seal no other node could open)
        self._joined = asyncio.Event()
        self.redis: aioredis.Redis = aioredis.Redis.from_url(url, socket_timeout=5.0)
        self._listener: BusListener | None = None
        self._outbox: dict[str, list[dict[str, Any]]] = {}
        self._hold: set[int] = set()
        self._release: set[int] = set()
        self._held: set[int] = set()
        self._holders: dict[int, str] = {}
        self._live: set[str] = {node_id}
        self._wake = asyncio.Event()
        self._sent = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._run_id: str | None = None
        self._recovery = asyncio.Lock()
        # until then, the presence map of a Redis that restarted empty may still lack
        # the agents of nodes that have not written theirs back (monotonic time)
        self._merge_until = 0.0
        # the hosts of the other nodes this node knew alive when Redis came back empty:
        # a node among them that died meanwhile has no record in the new Redis, and is
        # taken over by them (_take_over) once it has not registered within node_ttl
        self._orphans: dict[str, set[int]] = {}
        self._release_script = self.redis.register_script(_RELEASE)
        # figures for /metrics
        self.sent_messages = 0
        self.received_messages = 0
        self.send_failures = 0

    # keys -------------------------------------------------------------------
    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _inbox(self, node: str) -> str:
        return self._k("inbox", node)

    # lifecycle --------------------------------------------------------------
    async def start(self, listener: BusListener) -> None:
        self._listener = listener
        try:
            # a node that reaches Redis as it starts may be the cluster's first (as in
            # claim_cluster_keys, which a server calls before)
            await self._register(first=True)
            await self._load_holders()
        except ClusterKeysRefused:
            return
        except _JoinDeferred:
            pass
        except (RedisError, OSError) as exc:
            # the node serves without Redis (what goes between nodes waits, as when
            # Redis goes away later); its first beat that reaches Redis registers it
            log.warning("bus_redis_unreachable_at_start error=%s", exc)
        loop = asyncio.get_running_loop()
        for job in (self._flush_loop, self._consume_loop, self._beat_loop, self._agents_loop):
            self._tasks.append(loop.create_task(job()))

    async def stop(self) -> None:
        if self._joined.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), 2.0)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        # a stop is bounded: a loop caught inside the Redis client must not hold the
        # node's shutdown (what it would have done is redone by the others' takeover)
        if tasks:
            _done, stuck = await asyncio.wait(tasks, timeout=STOP_SECONDS)
            if stuck:
                log.warning("bus_stop_tasks_left count=%d", len(stuck))
        if self._joined.is_set() and self.refused is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._leave(), STOP_SECONDS)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.redis.aclose(), STOP_SECONDS)

    async def _leave(self) -> None:
        # a node that stops cleanly lets go of its agents at once
        if self._held:
            await self._release_script(
                keys=[self._k("presence")], args=[self.node_id, *sorted(self._held)]
            )
        await self.redis.delete(self._k("node", self.node_id))
        # nothing waits for a node that left cleanly: what others send it meanwhile
        # is sent again when they find its agents elsewhere
        await self.redis.srem(self._k("nodes"), self.node_id)
        await self.redis.delete(self._inbox(self.node_id))

    async def _register(self, first: bool = False) -> None:
        info = await self.redis.info("server")
        # first: a node whose keys are not the cluster's writes nothing there
        young = not first and float(info.get("uptime_in_seconds") or 0) < self.node_ttl
        await self._check_keys(young)
        await self.redis.set(
            self._k("node", self.node_id), time.time(), px=int(self.node_ttl * 1000)
        )
        await self.redis.sadd(self._k("nodes"), self.node_id)
        try:
            await self.redis.xgroup_create(self._inbox(self.node_id), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        # last: a registration cut short is done again at the next beat
        self._run_id = str(info.get("run_id"))
        self._joined.set()

    async def _check_keys(self, young: bool) -> None:
        if self.refused is not None:
            raise ClusterKeysRefused(self.refused)
        if not self.cluster_keys:
            return
        key = self._k("cluster")
        stored: Any = await self.redis.hgetall(key)
        if not stored and not self._joined.is_set() and young:
            # Redis started moments ago, without the keys: a restart that lost them, which
            # the nodes that ran before write back within a beat. This node, which has not
            # seen the cluster's, must not be first, or it would make them all refuse
            raise _JoinDeferred(
                "a Redis that started empty moments ago: waiting for the running nodes "
                "to write the cluster's keys back before writing this node's"
            )
        if len(stored) < len(self.cluster_keys):
            differing = await _claim(self.redis, key, self.cluster_keys)
        else:
            differing = _differing(self.cluster_keys, stored)
        if differing and self._joined.is_set():
            # this node's keys were the cluster's in the Redis before this one: what
            # differs was written since by a node that started in between with other
            # keys. The running nodes keep theirs (their ending would take the cluster
            # down); that node is the one that is wrong, and is refused when it
            # registers next
            log.error(
                "cluster_keys_conflict files=%s error=a Redis that restarted empty "
                "holds other keys than this node's, written by a node that started "
                "meanwhile: this node writes its own back",
                ",".join(differing),
            )
            await self.redis.hset(key, mapping={n: self.cluster_keys[n] for n in differing})
        elif differing:
            self._refuse(differing)
            raise ClusterKeysRefused(differing)

    def _refuse(self, differing: list[str]) -> None:
        """Stop serving the cluster: no more sending, reading or beating."""
        self.refused = differing
        self._joined.clear()
        for task in self._tasks:
            task.cancel()
        if self._on_refused is not None:
            self._on_refused(differing)

    # sending ----------------------------------------------------------------
    def send(self, node: str, message: dict[str, Any]) -> None:
        self._outbox.setdefault(node, []).append(message)
        self._sent.clear()
        self._wake.set()

    async def flush(self) -> None:
        while self._outbox or self._hold or self._release:
            self._wake.set()
            await self._sent.wait()

    async def _flush_loop(self) -> None:
        attempt = 0
        spell = Spell(log, "bus_send_waiting", back="bus_send_resumed")
        while True:
            raise_if_cancelled()
            await self._wake.wait()
            # kept until this node's keys are known to be the cluster's
            await self._joined.wait()
            self._wake.clear()
            outbox, self._outbox = self._outbox, {}
            hold, self._hold = self._hold, set()
            release, self._release = self._release, set()
            try:
                await self._write(outbox, hold, release)
                attempt = 0
                spell.ok()
                if not self._outbox and not self._hold and not self._release:
                    self._sent.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                # keep everything, in order, for when Redis is back
                for node, messages in outbox.items():
                    self._outbox[node] = messages + self._outbox.get(node, [])
                self._hold |= hold - self._release
                self._release |= release - self._hold
                self.send_failures += 1
                attempt += 1
                spell.failed("attempt=%d error=%s", attempt, exc)
                await asyncio.sleep(min(2.0, 0.1 * attempt))
                self._wake.set()

    async def _write(
        self, outbox: dict[str, list[dict[str, Any]]], hold: set[int], release: set[int]
    ) -> None:
        if not (outbox or hold or release):
            return
        pipe = self.redis.pipeline(transaction=False)
        for node, messages in outbox.items():
            for i in range(0, len(messages), PACK):
                pipe.xadd(
                    self._inbox(node),
                    {"m": self._seal(orjson.dumps(messages[i : i + PACK]))},
                    maxlen=INBOX_MAXLEN,
                    approximate=True,
                )
        if hold:
            pipe.hset(self._k("presence"), mapping={h: self.node_id for h in hold})
        if hold or release:
            pipe.publish(
                self._k("agents"),
                orjson.dumps({"node": self.node_id, "on": sorted(hold), "off": sorted(release)}),
            )
        await pipe.execute()
        if release:
            await self._release_script(
                keys=[self._k("presence")], args=[self.node_id, *sorted(release)]
            )
        self.sent_messages += sum(len(m) for m in outbox.values())

    # receiving --------------------------------------------------------------
    async def _consume_loop(self) -> None:
        # what this node read but did not acknowledge before it stopped comes first
        last = "0"
        attempt = 0
        spell = Spell(log, "bus_read_waiting", back="bus_read_resumed")
        while True:
            raise_if_cancelled()
            await self._joined.wait()
            try:
                reply: Any = await self.redis.xreadgroup(
                    GROUP,
                    self.node_id,
                    {self._inbox(self.node_id): last},
                    count=READ_COUNT,
                    block=1000 if last == ">" else None,
                )
                attempt = 0
                spell.ok()
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    try:
                        async with self._recovery:
                            await self._recover()
                    except ClusterKeysRefused:
                        return
                    except _JoinDeferred:
                        await asyncio.sleep(self.beat)
                    last = "0"
                    continue
                raise
            except (RedisError, OSError) as exc:
                raise_if_cancelled()
                attempt += 1
                spell.failed("attempt=%d error=%s", attempt, exc)
                await asyncio.sleep(min(2.0, 0.1 * attempt))
                continue
            entries = reply[0][1] if reply else []
            if last == "0" and not entries:
                last = ">"
                continue
            for entry_id, fields in entries:
                await self._handle(fields)
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.xack(self._inbox(self.node_id), GROUP, entry_id)
                    await self.redis.xdel(self._inbox(self.node_id), entry_id)

    async def _handle(self, fields: dict[bytes, bytes] | None) -> None:
        assert self._listener is not None
        if not fields or b"m" not in fields:
            return
        try:
            messages = orjson.loads(self._unseal(fields[b"m"]))
        except (orjson.JSONDecodeError, ValueError):
            # another key (a node not of this cluster), or altered on the way
            log.error(
                "bus_entry_unreadable reason=sealed with another secret key (a node whose "
                "secret.key is not this cluster's: docs/deploy.md, A cluster) or altered; "
                "dropped"
            )
            return
        for message in messages:
            self.received_messages += 1
            try:
                await self._listener.message(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bus_message_failed kind=%s", message.get("k"))

    # liveness, presence and dead nodes ---------------------------------------
    async def _beat_loop(self) -> None:
        last_resync = time.monotonic()
        spell = Spell(log, "bus_beat_failed", back="bus_beat_resumed")
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self.beat)
            try:
                await self._check_instance()
                await self.redis.set(
                    self._k("node", self.node_id), time.time(), px=int(self.node_ttl * 1000)
                )
                await self._check_nodes()
                if time.monotonic() - last_resync >= self.resync:
                    await self._load_holders()
                    last_resync = time.monotonic()
                spell.ok()
            except asyncio.CancelledError:
                raise
            except ClusterKeysRefused:
                return
            except Exception as exc:
                raise_if_cancelled()
                spell.failed("error=%s", exc)

    async def _check_instance(self) -> None:
        """Recover if Redis is not the instance this node registered with."""
        async with self._recovery:
            info = await self.redis.info("server")
            if str(info.get("run_id")) != self._run_id:
                await self._recover()

    async def _recover(self) -> None:
        """Redis came back as a new instance (or is reached for the first time): write
        what it lost about this node."""
        restarted = self._run_id is not None
        if restarted:
            log.warning("bus_redis_restarted node=%s", self.node_id)
        self._merge_until = time.monotonic() + self.node_ttl
        await self._register()
        if restarted:
            known = self._live - {self.node_id}
            for node in known:
                self._orphans.setdefault(node, set())
            for host, node in self._holders.items():
                if node in known:
                    self._orphans[node].add(host)
            if known:
                # listed again, so that one that does not register again is found gone
                await self.redis.sadd(self._k("nodes"), *sorted(known))
        if self._held:
            held = sorted(self._held)
            await self.redis.hset(self._k("presence"), mapping={h: self.node_id for h in held})
            # the other nodes hear of these agents now, not at their next resync
            await self.redis.publish(
                self._k("agents"), orjson.dumps({"node": self.node_id, "on": held, "off": []})
            )
        await self._load_holders()
        if self._listener is not None:
            self._listener.reconnected()

    async def _check_nodes(self) -> None:
        members: Any = await self.redis.smembers(self._k("nodes"))
        nodes = sorted(_text(n) for n in members)
        alive = await self.redis.mget([self._k("node", n) for n in nodes]) if nodes else []
        live = {n for n, a in zip(nodes, alive, strict=True) if a is not None}
        live.add(self.node_id)
        if time.monotonic() < self._merge_until:
            # Redis restarted empty moments ago: the others may not have registered again
            live |= self._live
        else:
            # a node that registered again, or that another node took over, left none
            for node in [n for n in self._orphans if n in live or n not in nodes]:
                del self._orphans[node]
        self._live = live
        for node in nodes:
            if node not in live:
                await self._take_over(node)

    async def _take_over(self, node: str) -> None:
        claim = self._k("claim", node)
        if not await self.redis.set(claim, self.node_id, nx=True, px=int(self.node_ttl * 3000)):
            return
        log.warning("bus_node_gone node=%s taken_over_by=%s", node, self.node_id)
        inbox = self._inbox(node)
        left: list[dict[str, Any]] = []
        entries: Any = await self.redis.xrange(inbox)
        for _entry, fields in entries:
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, ValueError):
                left.extend(orjson.loads(self._unseal(fields[b"m"])))
        presence: Any = await self.redis.hgetall(self._k("presence"))
        hosts = [int(h) for h, n in presence.items() if _text(n) == node]
        # what a Redis that restarted empty lost of the node's agents, but for those
        # another node holds now
        held = {int(h) for h in presence}
        hosts += sorted(self._orphans.pop(node, set()) - held)
        if self._listener is not None:
            await self._listener.node_gone(node, hosts)
            for message in left:
                message["orphan"] = node
                await self._listener.message(message)
        if hosts:
            await self._release_script(keys=[self._k("presence")], args=[node, *hosts])
            await self.redis.publish(
                self._k("agents"), orjson.dumps({"node": node, "on": [], "off": hosts})
            )
        await self.redis.delete(inbox)
        await self.redis.srem(self._k("nodes"), node)
        for host in hosts:
            if self._holders.get(host) == node:
                del self._holders[host]

    async def _load_holders(self) -> None:
        presence: Any = await self.redis.hgetall(self._k("presence"))
        holders = {int(h): _text(n) for h, n in presence.items()}
        if time.monotonic() < self._merge_until:
            # Redis restarted empty moments ago: a host missing from its map may belong
            # to a node that has not written its agents back yet
            holders = {**self._holders, **holders}
        self._holders = holders

    async def _agents_loop(self) -> None:
        spell = Spell(log, "bus_agents_feed_lost", back="bus_agents_feed_back")
        while True:
            raise_if_cancelled()
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self._k("agents"))
                spell.ok()
                while True:
                    raise_if_cancelled()
                    item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if item is None:
                        continue
                    try:
                        event = orjson.loads(item["data"])
                    except orjson.JSONDecodeError:
                        continue
                    self._apply_presence(str(event["node"]), event["on"], event["off"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                spell.failed("error=%s", exc)
                await asyncio.sleep(0.5)
                # what was missed meanwhile (from a new, empty Redis: what it lost first)
                with contextlib.suppress(Exception):
                    await self._check_instance()
                    await self._load_holders()
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _apply_presence(self, node: str, online: list[int], offline: list[int]) -> None:
        if online:
            # a node that announces agents is alive (news that may come before this
            # node's next beat reads the live nodes: after a Redis restart, or its own start)
            self._live.add(node)
        for host in online:
            self._holders[int(host)] = node
        for host in offline:
            if self._holders.get(int(host)) == node:
                del self._holders[int(host)]
        if self._listener is not None and node != self.node_id:
            self._listener.presence(node, [int(h) for h in online], [int(h) for h in offline])

    # presence as callers see it ---------------------------------------------
    def hold(self, hosts: list[int]) -> None:
        self._held.update(hosts)
        self._release.difference_update(hosts)
        self._hold.update(hosts)
        for host in hosts:
            self._holders[host] = self.node_id
        self._sent.clear()
        self._wake.set()

    def release(self, hosts: list[int]) -> None:
        self._held.difference_update(hosts)
        self._hold.difference_update(hosts)
        self._release.update(hosts)
        for host in hosts:
            if self._holders.get(host) == self.node_id:
                del self._holders[host]
        self._sent.clear()
        self._wake.set()

    async def refresh(self, hosts: list[int]) -> bool:
        try:
            info = await self.redis.info("server")
            found: Any = await self.redis.hmget(self._k("presence"), hosts)
            nodes = sorted({_text(n) for n in found if n is not None} - self._live)
            alive: Any = await self.redis.mget([self._k("node", n) for n in nodes]) if nodes else []
        except (RedisError, OSError):
            return False
        # a Redis that restarted empty moments ago lacks the agents of the nodes that
        # have not written theirs back yet: a host it does not name is not known absent
        located = str(info.get("run_id")) == self._run_id and time.monotonic() >= self._merge_until
        self._live |= {n for n, a in zip(nodes, alive, strict=True) if a is not None}
        for host, node in zip(hosts, found, strict=True):
            if node is not None:
                self._holders[host] = _text(node)
        return located

    def holder(self, host: int) -> str | None:
        node = self._holders.get(host)
        return node if node is not None and node in self._live else None

    def live_nodes(self) -> set[str]:
        return set(self._live)

    async def live_among(self, nodes: list[str]) -> set[str] | None:
        if not self._joined.is_set() or time.monotonic() < self._merge_until:
            return None
        try:
            info = await self.redis.info("server")
            if float(info.get("uptime_in_seconds") or 0) < self.node_ttl:
                # restarted empty moments ago: the running nodes register again within
                # a beat, and until node_ttl one that has not yet is not known dead
                return None
            alive: Any = await self.redis.mget([self._k("node", n) for n in nodes]) if nodes else []
        except (RedisError, OSError):
            return None
        return {n for n, a in zip(nodes, alive, strict=True) if a is not None} | (
            {self.node_id} & set(nodes)
        )

    # live views -------------------------------------------------------------
    async def publish(self, topic: str, event: dict[str, Any]) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.redis.publish(self._k("live", topic), self._seal(orjson.dumps(event)))

    async def subscribe(self, topic: str) -> AsyncIterator[dict[str, Any]]:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self._k("live", topic))
        try:
            while True:
                raise_if_cancelled()
                item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if item is not None:
                    with contextlib.suppress(orjson.JSONDecodeError, ValueError):
                        yield orjson.loads(self._unseal(item["data"]))
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def backlog(self) -> int:
        """Entries in this node's stream not read yet (for /metrics)."""
        try:
            groups = await self.redis.xinfo_groups(self._inbox(self.node_id))
        except (RedisError, OSError):
            return -1
        for group in groups:
            if group.get("name") in (GROUP, GROUP.encode()):
                return int(group.get("lag") or 0) + int(group.get("pending") or 0)
        return 0

    async def lag(self) -> float:
        """Seconds the oldest entry of this node's stream not yet handled has waited (0:
        none waits, -1: Redis did not answer); for /metrics."""
        stream = self._inbox(self.node_id)
        try:
            pending = await self.redis.xpending(stream, GROUP)
            oldest = pending.get("min") if pending.get("pending") else None
            if oldest is None:
                for group in await self.redis.xinfo_groups(stream):
                    if group.get("name") in (GROUP, GROUP.encode()):
                        after = _text(group.get("last-delivered-id") or "0-0")
                        entries = await self.redis.xrange(stream, f"({after}", "+", count=1)
                        oldest = entries[0][0] if entries else None
        except (RedisError, OSError):
            return -1.0
        if oldest is None:
            return 0.0
        millis = int(_text(oldest).split("-", 1)[0])
        return max(0.0, time.time() - millis / 1000)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
