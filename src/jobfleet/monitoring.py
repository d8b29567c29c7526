"""What ``/readyz`` and ``/metrics`` report of one node, gathered from its parts.

Counts that cost a query (jobs, host tasks, hosts, the outbox) are read at most once
every ``cache_seconds`` whatever the number of scrapers; the database and Redis
probes at most once a second (``FRESH``); the rest (agents connected, bus counters,
process figures) at each scrape. Every figure is of this node, except those read
from the shared database, which every node reports alike.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobfleet import __version__
from jobfleet.api.health import Readiness
from jobfleet.bus.base import Bus
from jobfleet.domain.status import HostStatus, RunStatus
from jobfleet.engine.callbacks import CallbackSender
from jobfleet.gateway.handshakes import HandshakeGate
from jobfleet.gateway.registry import Registry
from jobfleet.store.health import Counts, Health, head_revision

if TYPE_CHECKING:
    from jobfleet.bus.redis import RedisBus

# a check that returns its own latency in seconds
Probe = Callable[[], Awaitable[float]]
# answers younger than this are given again instead of asking the database again
FRESH = 1.0
# a probe that takes longer than this counts as a failure
PROBE_TIMEOUT = 2.0
# under this many free bytes the data directory counts as full: SQLite grows its
# write-ahead log by pages, a checkpoint by more, and a blob by its whole size
DISK_FULL_BELOW = 1 << 20


@dataclass
class Scrape:
    """What one /metrics answer shows, gathered before it is written."""

    counts: Counts = field(default_factory=Counts)
    db_latency: float | None = None
    bus_backlog: int | None = None
    bus_lag: float | None = None


class Monitor:
    def __init__(
        self,
        health: Health,
        bus: Bus,
        agents: Registry,
        callbacks: CallbackSender,
        node_id: str,
        metrics_token: str | None = None,
        cache_seconds: float = 5.0,
        data_dir: Path | None = None,
    ) -> None:
        self.health = health
        # where the SQLite file, blobs and uploads are written: its room is checked
        self.data_dir = data_dir
        self.bus = bus
        self.agents = agents
        self.callbacks = callbacks
        self.node_id = node_id
        self.metrics_token = metrics_token
        self.cache_seconds = cache_seconds
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(_Figures(self))
        self.scrape = Scrape()
        self._counts_at = self._scraped_at = self._ready_at = -float("inf")
        self._lock = asyncio.Lock()
        self._ready_lock = asyncio.Lock()
        self._ready: Readiness | None = None
        # the agent port's handshake gates, once its listener has started
        self.handshake_gates: list[HandshakeGate] = []
        # the API port's, once it has started with TLS (``tls_cert``)
        self.api_handshake_gates: list[HandshakeGate] = []

    # /readyz ---------------------------------------------------------------
    async def readiness(self) -> Readiness:
        """At most one round of checks per ``FRESH`` seconds, however many ask: the
        probes answer anyone, and must not become a way to load the database."""
        async with self._ready_lock:
            if time.monotonic() - self._ready_at >= FRESH or self._ready is None:
                self._ready = await self._check()
                self._ready_at = time.monotonic()
            return self._ready

    async def _check(self) -> Readiness:
        checks: dict[str, dict[str, object]] = {}
        checks["database"] = await _timed(self.health.ping)
        if checks["database"]["ok"]:
            head = head_revision()
            current = await self.health.revision()
            checks["migrations"] = {"ok": current == head, "current": current, "head": head}
        else:
            checks["migrations"] = {"ok": False, "error": "database unreachable"}
        ready = all(c["ok"] for c in checks.values())
        degraded = False
        redis_bus = _redis(self.bus)
        if redis_bus is not None:
            checks["redis"] = await _timed(self._redis_ping(redis_bus))
            # without Redis a node still serves: the API, its own agents, and results
            # from the store; what goes between nodes waits. Every node would fail
            # this check at once, and a balancer would then take the whole cluster
            # out for what only delays it.
            degraded = not checks["redis"]["ok"]
        if self.data_dir is not None:
            checks["disk"] = disk_check(self.data_dir)
            # reads go on and writes wait for space (results in memory, agents' spools):
            # the node still serves, so a balancer should keep it; the operator sees why
            degraded = degraded or not checks["disk"]["ok"]
        return Readiness(ready, checks, degraded)

    @staticmethod
    def _redis_ping(bus: RedisBus) -> Probe:
        async def ping() -> float:
            started = time.perf_counter()
            await bus.redis.ping()
            return time.perf_counter() - started

        return ping

    # /metrics --------------------------------------------------------------
    async def metrics(self) -> tuple[bytes, str]:
        async with self._lock:
            if time.monotonic() - self._scraped_at < FRESH:
                return generate_latest(self.registry), CONTENT_TYPE_LATEST
            self._scraped_at = time.monotonic()
            scrape = Scrape(counts=self.scrape.counts)
            probe = await _timed(self.health.ping)
            if probe["ok"]:
                scrape.db_latency = float(str(probe["latency_ms"])) / 1000
            if probe["ok"] and time.monotonic() - self._counts_at >= self.cache_seconds:
                try:
                    scrape.counts = await asyncio.wait_for(self.health.counts(), PROBE_TIMEOUT)
                    self._counts_at = time.monotonic()
                except Exception:  # a slow or lost database: the last counts stand
                    scrape.db_latency = None
            redis_bus = _redis(self.bus)
            if redis_bus is not None:
                scrape.bus_backlog = await redis_bus.backlog()
                scrape.bus_lag = await redis_bus.lag()
            self.scrape = scrape
            # written at once from what was gathered (no await until it is done)
            return generate_latest(self.registry), CONTENT_TYPE_LATEST


def disk_room(data_dir: Path) -> tuple[int, bool] | None:
    """Bytes the server may still write under ``data_dir``, and whether it is read-only
    (None: it cannot be asked)."""
    try:
        room = os.statvfs(data_dir)
    except OSError:
        return None
    return room.f_bavail * room.f_frsize, bool(room.f_flag & os.ST_RDONLY)


def disk_check(data_dir: Path) -> dict[str, object]:
    """``{"ok", "free_bytes"}`` of the data directory's filesystem; ``error`` says
    ``full`` or ``read-only`` when writes fail there."""
    room = disk_room(data_dir)
    if room is None:
        return {"ok": False, "error": "unreadable"}
    free, read_only = room
    if read_only:
        return {"ok": False, "error": "read-only", "free_bytes": free}
    if free < DISK_FULL_BELOW:
        return {"ok": False, "error": "full", "free_bytes": free}
    return {"ok": True, "free_bytes": free}


def _redis(bus: Bus) -> RedisBus | None:
    """The bus when it is the Redis one. Only a cluster node loads that module (the
    Redis client is ~7 MiB), and no bus of its class exists without it."""
    module = sys.modules.get("jobfleet.bus.redis")
    if module is None or not isinstance(bus, module.RedisBus):
        return None
    return cast("RedisBus", bus)


async def _timed(probe: Probe) -> dict[str, object]:
    """``{"ok", "latency_ms"}`` of a probe returning its own latency in seconds; what went
    wrong is named by kind only (an error text may carry addresses or names)."""
    try:
        seconds = await asyncio.wait_for(probe(), PROBE_TIMEOUT)
    except TimeoutError:
        return {"ok": False, "error": "timeout"}
    except Exception:
        return {"ok": False, "error": "unreachable"}
    return {"ok": True, "latency_ms": round(float(seconds) * 1000, 3)}


def _name(enum: type[RunStatus] | type[HostStatus], value: int) -> str:
    try:
        return enum(value).name.lower()
    except ValueError:
        return str(value)


class _Figures(Collector):
    """jobfleet's own metrics, from the monitor's last scrape and its parts' counters."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        m = self.monitor
        scrape = m.scrape
        info = GaugeMetricFamily(
            "jobfleet_build_info", "This node's version and id", labels=["version", "node"]
        )
        info.add_metric([__version__, m.node_id], 1)
        yield info
        jobs = GaugeMetricFamily(
            "jobfleet_jobs", "Job instances in the store by status", labels=["status"]
        )
        for status, n in sorted(scrape.counts.jobs.items()):
            jobs.add_metric([_name(RunStatus, status)], n)
        yield jobs
        tasks = GaugeMetricFamily(
            "jobfleet_host_tasks",
            "Host tasks of jobs not finished yet, by host status",
            labels=["status"],
        )
        for status, n in sorted(scrape.counts.host_tasks.items()):
            tasks.add_metric([_name(HostStatus, status)], n)
        yield tasks
        hosts = GaugeMetricFamily(
            "jobfleet_hosts", "Hosts of the inventory by agent state", labels=["agent"]
        )
        hosts.add_metric(["alive"], scrape.counts.hosts_alive)
        hosts.add_metric(["dead"], scrape.counts.hosts_dead)
        yield hosts
        yield GaugeMetricFamily(
            "jobfleet_agents_connected", "Agents connected to this node", value=len(m.agents)
        )
        room = None if m.data_dir is None else disk_room(m.data_dir)
        if room is not None:
            yield GaugeMetricFamily(
                "jobfleet_data_dir_free_bytes",
                "Bytes this node may still write in its data directory (database, blobs)",
                value=room[0],
            )
        if scrape.db_latency is not None:
            yield GaugeMetricFamily(
                "jobfleet_database_latency_seconds",
                "Round trip of one query to the database, measured at this scrape",
                value=scrape.db_latency,
            )
        pending = GaugeMetricFamily(
            "jobfleet_outbox_pending",
            "Callbacks and notifications waiting to be delivered, by kind",
            labels=["kind"],
        )
        for kind, n in sorted(scrape.counts.outbox_pending.items()):
            pending.add_metric([kind], n)
        yield pending
        failed = CounterMetricFamily(
            "jobfleet_outbox_failed_attempts",
            "Delivery attempts of callbacks and notifications that failed on this node",
            labels=["kind"],
        )
        for kind, n in sorted(m.callbacks.failed_attempts.items()):
            failed.add_metric([kind], n)
        yield failed
        gave_up = CounterMetricFamily(
            "jobfleet_outbox_gave_up",
            "Callbacks and notifications this node stopped retrying",
            labels=["kind"],
        )
        for kind, n in sorted(m.callbacks.gave_up.items()):
            gave_up.add_metric([kind], n)
        yield gave_up
        yield from _handshake_figures("agent", m.handshake_gates)
        yield from _handshake_figures("api", m.api_handshake_gates)
        yield from _bus_figures(m.bus, scrape)


def _handshake_figures(port: str, gates: list[HandshakeGate]) -> Iterator[Metric]:
    Family = type[GaugeMetricFamily] | type[CounterMetricFamily]
    figures: tuple[tuple[Family, str, str, Callable[[HandshakeGate], int]], ...] = (
        (GaugeMetricFamily, "in_flight", "TLS handshakes under way on the {} port",
         lambda g: g.in_flight),
        (GaugeMetricFamily, "waiting",
         "Connections accepted on the {} port waiting for a handshake slot",
         lambda g: g.queued),
        (CounterMetricFamily, "failed",
         "Handshakes on the {} port that failed or timed out (no TLS, a client gone)",
         lambda g: g.failed),
        (CounterMetricFamily, "expired",
         "Connections to the {} port closed unanswered after waiting too long for a slot",
         lambda g: g.expired),
    )
    for family, name, text, count in figures:
        yield family(
            f"jobfleet_{port}_handshakes_{name}",
            text.format(port.upper() if port == "api" else port),
            value=sum(count(g) for g in gates),
        )


def _bus_figures(bus: Bus, scrape: Scrape) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "jobfleet_bus_clustered", "1 when this node is one of a cluster (Redis bus)",
        value=1 if bus.clustered else 0,
    )
    yield GaugeMetricFamily(
        "jobfleet_cluster_nodes", "Live nodes of the cluster as this node sees them",
        value=len(bus.live_nodes()),
    )
    redis_bus = _redis(bus)
    if redis_bus is None:
        return
    for name, text, value in (
        ("sent", "Messages this node handed to the bus", redis_bus.sent_messages),
        ("received", "Messages this node took from the bus", redis_bus.received_messages),
        ("send_failures", "Failed writes to the bus (retried)", redis_bus.send_failures),
    ):
        yield CounterMetricFamily(f"jobfleet_bus_{name}", text, value=value)
    if scrape.bus_backlog is not None and scrape.bus_backlog >= 0:
        yield GaugeMetricFamily(
            "jobfleet_bus_backlog",
            "Entries of this node's bus stream not handled yet",
            value=scrape.bus_backlog,
        )
    if scrape.bus_lag is not None and scrape.bus_lag >= 0:
        yield GaugeMetricFamily(
            "jobfleet_bus_lag_seconds",
            "How long the oldest entry of this node's bus stream has waited",
            value=scrape.bus_lag,
        )
