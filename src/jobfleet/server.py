"""Builds a server from its settings and runs it: store, gateway, engine, API."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from jobfleet import loop
from jobfleet.api.agent_channel import CONNECT_PATH, ListenerGate
from jobfleet.api.app import create_app, release_routes
from jobfleet.api.auth import Authenticator
from jobfleet.api.connections import ConnectionLimits, protocol_class
from jobfleet.api.services import Limits, Services
from jobfleet.assembly import FileParts, build_engine
from jobfleet.bootstrap import ADMIN_USER as ADMIN_USER
from jobfleet.bootstrap import DEFAULT_BIZ as DEFAULT_BIZ
from jobfleet.bootstrap import bootstrap, bootstrapped, first_password, node_id
from jobfleet.bootstrap import read_bootstrap as read_bootstrap  # for tests and tools
from jobfleet.bus.base import Bus
from jobfleet.bus.live import BusLive
from jobfleet.bus.local import LocalBus
from jobfleet.domain.addresses import parse_networks as parse_networks  # for the CLI
from jobfleet.domain.dangerous import ScanLimits
from jobfleet.domain.enrollment import AgentChannel
from jobfleet.domain.protocol import LEGACY_FRAME_BYTES, MAX_FRAME_BYTES
from jobfleet.domain.status import RunStatus
from jobfleet.domain.throttle import Throttle
from jobfleet.engine.approvals import ApprovalNotifier
from jobfleet.engine.callbacks import CallbackSender
from jobfleet.engine.cron import CronScheduler
from jobfleet.engine.file_sources import ThirdPartyFiles
from jobfleet.engine.heal import Healer
from jobfleet.engine.notify import SmtpSettings as SmtpSettings  # for the CLI
from jobfleet.engine.outbound import Outbound, own_addresses
from jobfleet.engine.plans import PlanLauncher
from jobfleet.engine.procs import ProcManager
from jobfleet.engine.retention import Retention
from jobfleet.engine.retention import RetentionSettings as RetentionSettings  # for the CLI
from jobfleet.engine.rpc import AgentRpc
from jobfleet.engine.settings import EngineSettings as EngineSettings  # for the CLI
from jobfleet.engine.submit import Submitter
from jobfleet.gateway.blob_news import BlobNews
from jobfleet.gateway.endpoint import Gateway
from jobfleet.gateway.handshakes import HandshakeGate, HandshakeLimits
from jobfleet.gateway.presence import Presence
from jobfleet.gateway.refusals import Refusals
from jobfleet.gateway.registry import Registry
from jobfleet.gateway.routing import ClusterAgents
from jobfleet.gateway.tls import AgentTLS, ensure_agent_tls
from jobfleet.gateway.wire import wire_protocol
from jobfleet.monitoring import Monitor
from jobfleet.store.accounts import AccountStore
from jobfleet.store.audit import AuditLog
from jobfleet.store.blobs import BlobStore
from jobfleet.store.crons import CronStore
from jobfleet.store.database import Database, SchemaError, sqlite_url, wait_for
from jobfleet.store.file_sources import FileSourceStore
from jobfleet.store.filelogs import FileLogStore
from jobfleet.store.heal import HealStore
from jobfleet.store.health import Health
from jobfleet.store.identity import IdentityStore
from jobfleet.store.inventory import Inventory
from jobfleet.store.jobs import JobStore
from jobfleet.store.key_checks import AGENT_CA, KEY_FILE, KeyChecks, KeysRefused
from jobfleet.store.node_locks import NodeLocks
from jobfleet.store.outage import disk_reason, reason
from jobfleet.store.people import PeopleStore
from jobfleet.store.plans import PlanStore
from jobfleet.store.procs import ProcStore
from jobfleet.store.retention import RetentionStore
from jobfleet.store.rules import RuleStore
from jobfleet.store.scripts import ScriptStore
from jobfleet.store.secrets import Cipher
from jobfleet.store.statistics import Statistics
from jobfleet.store.template_io import TemplateImporter
from jobfleet.store.templates import TemplateStore
from jobfleet.web import console_router
from jobfleet.web.cookies import COOKIE_SECURE_MODES as COOKIE_SECURE_MODES
from jobfleet.web.headers import HEADERS as CONSOLE_HEADERS

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0

# what a part of the server's stop had not written when the disk refused it, and what
# becomes of it
UNSAVED_AT_STOP = {
    "presence": (
        "the agents that connected or left since its last write; this node's hosts are "
        "marked offline at its next start, and online again as their agents reconnect"
    ),
    "audit": (
        "the counts of repeated refusals since its last write; their entries keep the "
        "counts written before"
    ),
}

@dataclass
class ServerSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str | None = None
    # a node of a cluster: the bus between nodes (without it, one node on its own)
    redis_url: str | None = None
    # a node of a cluster that has not renewed its record in Redis this long (s) is held
    # gone: its agents read offline and its operations in flight are answered by
    # another node. It renews every 2 s, so shorter holds a node that is only slow
    # (a long pause of its process) for dead
    node_ttl: float = 10.0
    engine: EngineSettings = field(default_factory=EngineSettings)
    heartbeat: float = 10.0
    log_level: str = "info"
    # "text" (key=value) or "json" (one object per line), for jobfleet and uvicorn alike
    log_format: str = "text"
    # a bearer token /metrics asks for (none: /metrics answers anyone who reaches it)
    metrics_token: str | None = field(default=None, repr=False)
    max_file_size: int = 5 * 1024**3
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # agents talk TLS on this port with the server's own CA (0: any free port, which
    # the public bootstrap document tells agents)
    agent_port: int = 0
    # let agents talk plain HTTP on the API port instead (an explicit opt-out)
    agent_plaintext: bool = False
    # the first-start enrollment token in bootstrap.json expires after this
    bootstrap_token_ttl: float = 24 * 3600.0
    # the mail server of email notifications (none: email notifications fail at once)
    smtp: SmtpSettings | None = None
    # how long history is kept (jobs, audit entries, files the server holds)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    # the edge (README "Hardening the edge"): bodies, slow clients, rate limits
    max_body: int = 32 * 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 15.0
    max_pending_connections: int = 1000
    max_api_requests: int = 512
    enroll_rate: float = 20.0
    enroll_burst: int = 200
    auth_failure_rate: float = 1.0
    auth_failure_burst: int = 50
    # ranges callbacks and webhooks may reach although they are refused by default
    # (loopback, link-local, the server's own addresses), e.g. ["127.0.0.0/8"]
    callback_allow: list[str] = field(default_factory=list)
    # the address people reach the console at (links in notifications), e.g.
    # "https://job.example.com"; none: links are paths on this server
    public_url: str | None = None
    # when the console's session cookie is marked Secure: "auto" (when this server sees
    # HTTPS), "always" (behind a proxy that ends TLS), "never"
    cookie_secure: str = "auto"
    # seconds of dangerous-rule matching per MiB of script: one rule, and one whole check
    dangerous_rule_time: float = ScanLimits.rule
    dangerous_check_time: float = ScanLimits.total

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}"


class Server:
    def __init__(self, settings: ServerSettings) -> None:
        if settings.cookie_secure not in COOKIE_SECURE_MODES:
            raise ValueError(f"cookie_secure must be one of {', '.join(COOKIE_SECURE_MODES)}")
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.data_dir, 0o700)
        self.node_id = node_id(settings.data_dir)
        self.db = Database(settings.database_url or sqlite_url(settings.data_dir))
        # schema upgraded and stored keys compared (by ``serve``, before it listens)
        self._keys_settled = False
        self.cipher = Cipher.from_data_dir(settings.data_dir)
        self.identity = IdentityStore(self.db)
        self.inventory = Inventory(self.db)
        self.jobs = JobStore(self.db)
        self.people = PeopleStore(self.db)
        self.registry = Registry()
        self.presence = Presence(self.db, self.node_id, settings.engine.presence_batch)
        self.node_locks = NodeLocks(self.db, self.node_id)
        engine_settings = dataclasses.replace(settings.engine, node_id=self.node_id)
        self.refusals = Refusals(AuditLog(self.db), engine_settings.refusal_audit_window)
        outbound = Outbound(parse_networks(settings.callback_allow), own_addresses(settings.host))
        self.callbacks = CallbackSender(
            self.db, engine_settings, settings.smtp, outbound, cipher=self.cipher
        )
        # approvers hear of a confirmation step that waits for them (engine/approvals.py)
        self.approvals = ApprovalNotifier(
            self.db,
            self.cipher,
            settings.public_url,
            engine_settings.callback_attempts,
            self.callbacks.wake,
        )
        self.blobs = BlobStore(
            self.db, settings.data_dir / "blobs", shared=settings.redis_url is not None
        )
        self.file_logs = FileLogStore(self.db)
        self.file_sources = FileSourceStore(self.db, self.cipher)
        self.third_party = ThirdPartyFiles(
            self.file_sources, self.blobs, outbound, settings.max_file_size, self.file_logs
        )
        # bound now, so that its port (perhaps picked by the OS) is known before
        # anything announces it
        self.agent_tls, self.agent_socket, channel = _agent_listener_parts(settings)
        # the names of this node's keys that the cluster refused while it ran
        self._keys_refused: list[str] | None = None
        self._api_server: _Listener | None = None
        self.bus: Bus = (
            _redis_bus(
                settings.redis_url,
                self.node_id,
                self.cipher,
                self._cluster_keys(),
                self._refused_by_cluster,
                settings.node_ttl,
            )
            if settings.redis_url
            else LocalBus(self.node_id)
        )
        # live views: wake-ups of job pages and event streams, on the node's bus
        self.live = BusLive(self.bus)
        self.blob_news = BlobNews(self.bus, self.blobs)
        self.agent_rpc = AgentRpc(
            ClusterAgents(self.registry, self.bus), engine_settings.agent_lost_grace
        )
        procs = ProcManager(self.agent_rpc, ProcStore(self.db), node_id=self.node_id)
        self.engine, agent_events, self.bus_listener = build_engine(
            self.jobs,
            self.registry,
            self.bus,
            self.cipher,
            engine_settings,
            self.refusals,
            FileParts(
                self.blobs,
                self.file_logs,
                self.inventory,
                settings.max_file_size,
                third_party=self.third_party,
            ),
            on_job_finished=[self.callbacks.wake, self._job_finished],
            live=self.live,
            rpc=self.agent_rpc,
            on_confirm_waiting=[self.approvals.waiting],
            on_node_gone=[procs.node_gone],
        )
        # one count of failed authentications per address, for the API and agents alike
        self.auth_failures = Throttle(
            "failed authentications", settings.auth_failure_rate, settings.auth_failure_burst
        )
        self.gateway = Gateway(
            self.identity,
            self.registry,
            self.presence,
            settings.heartbeat,
            self.refusals,
            self.auth_failures,
            events=agent_events,
        )
        self.submitter = Submitter(self.db, self.engine, self.inventory, self.cipher)
        self.scripts = ScriptStore(self.db)
        self.templates = TemplateStore(self.db, self.cipher)
        self.job_plans = PlanStore(self.db, self.cipher)
        self.crons = CronStore(self.db)
        self.rules = RuleStore(
            self.db,
            limits=ScanLimits(settings.dangerous_rule_time, settings.dangerous_check_time),
        )
        self.plans = PlanLauncher(
            self.db,
            self.engine,
            self.submitter,
            self.scripts,
            self.job_plans,
            self.cipher,
            self.blobs,
            self.rules,
            self.third_party,
        )
        self.audit = AuditLog(self.db)
        self.cron_scheduler = CronScheduler(
            self.crons,
            self.plans,
            self.engine,
            self.identity,
            self.cipher,
            engine_settings,
            self.audit,
        )
        self.retention = Retention(RetentionStore(self.db, self.blobs.root), settings.retention)
        self.statistics = Statistics(self.db)
        self.monitor = Monitor(
            Health(self.db),
            self.bus,
            self.registry,
            self.callbacks,
            self.node_id,
            settings.metrics_token,
            data_dir=settings.data_dir,
        )
        self.services = Services(
            db=self.db,
            identity=self.identity,
            inventory=self.inventory,
            jobs=self.jobs,
            engine=self.engine,
            submitter=self.submitter,
            gateway=self.gateway,
            auth=Authenticator(
                self.identity,
                failures=self.auth_failures,
                people=self.people,
            ),
            people=self.people,
            live=self.live,
            audit=self.audit,
            accounts=AccountStore(self.db, self.cipher),
            blobs=self.blobs,
            file_logs=self.file_logs,
            limits=Limits(
                max_file_size=settings.max_file_size,
                max_body=settings.max_body,
                max_api_requests=settings.max_api_requests,
            ),
            scripts=self.scripts,
            templates=self.templates,
            job_plans=self.job_plans,
            template_import=TemplateImporter(self.templates, self.job_plans),
            crons=self.crons,
            plans=self.plans,
            rules=self.rules,
            file_sources=self.file_sources,
            third_party=self.third_party,
            enroll_throttle=Throttle("enrollments", settings.enroll_rate, settings.enroll_burst),
            agent_channel=channel,
            procs=procs,
            healer=Healer(
                HealStore(self.db, self.cipher),
                self.plans,
                self.inventory,
                self.jobs,
                self.identity,
                self.auth_failures,
            ),
            probes=self.monitor,
            outbound=outbound,
            mail_relay=settings.smtp is not None,
        )
        self.connection_limits = ConnectionLimits(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_pending=settings.max_pending_connections,
        )
        # the agent port's own: a reconnect storm there takes no API client's place, and
        # its agents, whose requests a busy loop has not read yet, are not taken for slow
        self.agent_connection_limits = ConnectionLimits(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_pending=settings.max_pending_connections,
            evict_silent=False,
        )
        self.handshake_limits = HandshakeLimits.for_machine()
        # the API port's own gate, with ``tls_cert``: its clients (browsers, the SDK and
        # the CLI) handshake as agents do and on the same cores, so the same sizes hold.
        # A source address (an office behind NAT or a CONNECT proxy: every browser of
        # it) may hold three quarters of the slots, dozens of handshakes of a few ms each,
        # while the last quarter stays for everyone else; a handshake not done within
        # 10 s is cut rather than held for asyncio's 60 s
        self.api_handshake_limits = HandshakeLimits.for_machine()
        self.app: FastAPI = create_app(
            self.services,
            console_router(self.services, cookie_secure=settings.cookie_secure),
            headers=CONSOLE_HEADERS,
        )
        self.app.router.lifespan_context = self._lifespan
        self._agent_server: _Listener | None = None
        self._agent_serving: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def _lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()
            # the last of the listeners' shutdown: after it uvicorn raises the signal
            # that stopped the process again, and a SIGTERM ends it at once
            log.info("server_stopped node=%s pid=%d", self.node_id, os.getpid())

    def _job_finished(self, job_id: int, status: RunStatus) -> None:
        """Live views of the job hear at once that it ended."""
        self.live.publish(f"job:{job_id}", {"type": "job", "status": int(status)})

    async def start(self) -> None:
        # a first start's console password is hashed while the database is reached
        # and checked
        password = None if bootstrapped(self.settings.data_dir) else first_password()
        try:
            await self._settle_database()
            await bootstrap(
                self.identity,
                self.settings.data_dir,
                self.settings.url,
                self.services.agent_channel,
                self.settings.bootstrap_token_ttl,
                self.people,
                password,
            )
        finally:
            if password is not None:
                # unused when the start failed or another node bootstrapped the database
                password.cancel()
        await self._start_parts()

    async def _settle_database(self) -> None:
        await wait_for(self.db)
        # ``serve`` has upgraded the schema and checked the keys already (ending the
        # process if they differ); a server run by other means (tests, tools) must not
        # serve with other keys either, nor upgrade the schema for them
        if not self._keys_settled:
            refused = await self._refused_before_upgrade()
            if refused is None:
                await self.db.migrate()
                refused = await self._check_stored_keys()
            if refused is not None:
                raise RuntimeError(self._stored_keys_refusal(refused))

    async def _start_parts(self) -> None:
        # the agents this node held before it died reconnect on their own schedule
        self.engine.expect_back(
            await self.inventory.reset_node(self.node_id, self.settings.engine.recovery_window)
        )
        if self.services.procs is not None:
            await self.services.procs.start()
        self.presence.start()
        # before any other node may look for this one's: it is live from here on
        await self.node_locks.hold()
        await self.bus.start(self.bus_listener)
        # hosts left alive by node ids no node will take over (renamed, gone for good)
        self.presence.forget_dead_nodes(self.bus, self.node_locks)
        # a seeded file wanted or lost on one node is known on every node
        self.blob_news.start()
        await self.engine.start()
        self.callbacks.start()
        self.cron_scheduler.start()
        self.retention.start()
        self.statistics.start()
        self.gateway.start()
        await self._start_agent_listener()

    def _started(self, sockets: list[socket.socket]) -> None:
        """Once both ports listen: the one line that says what runs where (uvicorn's
        own lines would say it once per listener, and not which is which)."""
        api = _address(self.settings.url.split(":", 1)[0], self.settings.host, sockets)
        channel = self.services.agent_channel
        if self.agent_socket is not None and channel.port:
            agent = _address("https", self.settings.host, [self.agent_socket])
        else:
            agent = "api_port_plaintext"
        log.info(
            "server_started node=%s pid=%d api=%s agent=%s console=%s/",
            self.node_id,
            os.getpid(),
            api,
            agent,
            self.settings.public_url or api,
        )

    async def _start_agent_listener(self) -> None:
        if self.agent_socket is None or self.agent_tls is None:
            return
        config = self._config(
            ListenerGate(self.app, "agent", self.services.agent_channel, self.services.audit),
            port=self.services.agent_channel.port or 0,
            limits=self.agent_connection_limits,
            cert=self.agent_tls.cert_file,
            key=self.agent_tls.key_file,
            lifespan="off",
            # agents' sockets skip ASGI: thousands of them live for hours, and each
            # of their frames would pass through a queue, events and a Starlette object
            ws=wire_protocol(
                self.gateway.serve,
                path=CONNECT_PATH,
                heartbeat=self.settings.heartbeat,
                max_size=MAX_FRAME_BYTES,
                fallback=WebSocketsSansIOProtocol,
            ),
            # agents reach this port straight (its TLS is pinned: no proxy can sit in
            # between), so a forwarded address is only a client's claim; it would pick
            # the address that failed credentials are counted and audited under
            proxy_headers=False,
        )
        # no agent resumes a TLS session (it enrolls with one request, then holds one
        # connection): TLS 1.3's two tickets per handshake were CPU on both ends for nothing
        loop = asyncio.get_running_loop()
        listening: asyncio.Future[None] = loop.create_future()
        server = _Listener(
            config,
            self.handshake_limits,
            port="agent",
            owns_signals=False,
            session_tickets=False,
            on_started=lambda _sockets: _wake(listening),
        )
        self._agent_server = server
        self.monitor.handshake_gates = server.gates
        serving = self._agent_serving = loop.create_task(server.serve(sockets=[self.agent_socket]))
        # the API listener's start waits on this one: woken when it listens, not polled
        await asyncio.wait({listening, serving}, return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():
            listening.cancel()
            serving.result()  # raises why it could not start
            raise RuntimeError("the agent listener stopped at start")

    async def _stop_agent_listener(self) -> None:
        server, task = self._agent_server, self._agent_serving
        if server is None or task is None:
            if self.agent_socket is not None:
                self.agent_socket.close()  # bound at build, never served
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(task, STOP_TIMEOUT)
        except TimeoutError:
            task.cancel()

    async def stop(self) -> None:
        # a stuck part must not keep the process from exiting: the store is the
        # truth, and the next start takes over whatever was in flight
        for name, part in (
            # the hosts of process operations whose agents have not answered yet are
            # answered as stopped, before their agents go and time them out one by one
            ("process operations", self._stop_procs),
            # agents first, as the API port's own agents go when its listener stops
            ("agent listener", self._stop_agent_listener),
            # no new cron job may reach an engine that is stopping
            ("cron", self.cron_scheduler.stop),
            ("retention", self.retention.stop),
            ("statistics", self.statistics.stop),
            ("engine", self.engine.stop),
            ("approvals", self.approvals.stop),
            ("callbacks", self.callbacks.stop),
            ("gateway", self.gateway.stop),
            ("blob news", self.blob_news.stop),
            ("bus", self.bus.stop),
            ("presence", self.presence.stop),
            ("node lock", self.node_locks.stop),
            ("audit", self.audit.flush),
            ("database", self.db.close),
        ):
            try:
                await asyncio.wait_for(part(), STOP_TIMEOUT)
            except Exception as exc:
                why = disk_reason(exc, self.db.file)
                if why is None:
                    log.exception("stop_failed part=%s", name)
                    continue
                # the operator's disk, not a fault here: what was lost, in one line
                log.warning(
                    "stop_unsaved part=%s reason=%s unsaved=%s",
                    name,
                    why,
                    UNSAVED_AT_STOP.get(name, "what it had not written yet"),
                )
        release_routes()

    async def _stop_procs(self) -> None:
        if self.services.procs is not None:
            await self.services.procs.stop()

    def listener(self) -> uvicorn.Server:
        """The API listener: it owns the process's signals and runs the lifespan, which
        starts the agent listener. With ``tls_cert``, its TLS is the agent port's (a
        bounded handshake gate, the TLS layer) but keeps session tickets: browsers and
        the SDK reconnect, and resume."""
        server = _Listener(
            self.uvicorn_config(),
            self.api_handshake_limits,
            port="api",
            owns_signals=True,
            session_tickets=True,
            on_started=self._started,
        )
        self.monitor.api_handshake_gates = server.gates
        self._api_server = server
        return server

    def uvicorn_config(self) -> uvicorn.Config:
        """The API listener's settings (``listener`` serves them)."""
        listener = "api-tls" if self.settings.tls_cert else "api"
        return self._config(
            ListenerGate(
                self.app,
                listener,
                self.services.agent_channel,
                self.services.audit,
                agent_socket=self.services.gateway.serve,
            ),
            port=self.settings.port,
            limits=self.connection_limits,
            cert=self.settings.tls_cert,
            key=self.settings.tls_key,
            lifespan="on",
            max_size=LEGACY_FRAME_BYTES if self.settings.agent_plaintext else MAX_FRAME_BYTES,
        )

    def _config(
        self,
        app: ListenerGate,
        *,
        port: int,
        limits: ConnectionLimits,
        cert: Path | None,
        key: Path | None,
        lifespan: Literal["on", "off"],
        ws: type[asyncio.Protocol] | str = "auto",
        proxy_headers: bool = True,
        max_size: int = MAX_FRAME_BYTES,
    ) -> uvicorn.Config:
        return uvicorn.Config(
            app,
            ws=ws,
            proxy_headers=proxy_headers,
            host=self.settings.host,
            port=port,
            log_level=self.settings.log_level,
            # uvicorn's records go through jobfleet's formatter (logs.setup)
            log_config=None,
            access_log=False,
            http=protocol_class(limits),
            timeout_keep_alive=max(1, round(self.settings.idle_timeout)),
            # agents keep their frames well below this (see domain/protocol.py); on the API
            # port, agents of an earlier release may talk (``--agent-plaintext``): the
            # gateway holds each agent to its own limit once it said hello
            ws_max_size=max_size,
            # agent frames are small JSON: compressing them costs more CPU than it
            # saves bytes, and ~40 KiB of zlib state per connection
            ws_per_message_deflate=False,
            ws_ping_interval=self.settings.heartbeat,
            ws_ping_timeout=self.settings.heartbeat,
            timeout_graceful_shutdown=5,
            lifespan=lifespan,
            ssl_certfile=cert,
            ssl_keyfile=key,
        )

    async def serve(self) -> None:
        # A schema this program cannot use ends the process here, in one line and
        # before it listens; raised in the lifespan, it would end in uvicorn's traceback.
        try:
            await wait_for(self.db)
            refused = await self._refused_before_upgrade()
            if refused is None:
                await self.db.migrate()
        except SchemaError as exc:
            log.error("database_schema_refused error=%s", exc)
            await self.db.close()
            raise SystemExit(2) from None
        except Exception as exc:
            # SQLite cannot even open its write-ahead log on a full or read-only disk:
            # say where and why, as for a schema refused, rather than a traceback
            why = disk_reason(exc, self.db.file)
            if why is None:
                raise
            log.error(
                "database_disk_refused path=%s reason=%s error=%s: free space there (or "
                "make it writable) and start again",
                self.db.file,
                why,
                reason(exc),
            )
            await self.db.close()
            raise SystemExit(2) from None
        if refused is None:
            refused = await self._check_stored_keys()
        if refused is not None:
            log.error("%s", self._stored_keys_refusal(refused))
            await self.db.close()
            raise SystemExit(2)
        self._keys_settled = True
        if self.settings.redis_url:
            await self._check_cluster_keys(self.settings.redis_url)
            await self._check_node_id(self.settings.redis_url)
        await self.listener().serve()
        if self._keys_refused is not None:
            raise SystemExit(2)

    def _cluster_keys(self) -> dict[str, str]:
        """Check values of what every node of a cluster shares (docs/deploy.md)."""
        values = {"secret.key": self.cipher.check_value()}
        if self.agent_tls is not None:
            values["tls/ca.pem"] = self.agent_tls.fingerprint
        return values

    async def _refused_before_upgrade(self) -> KeysRefused | None:
        """The keys compared with what the database holds before its schema is upgraded,
        without a write: a server refused leaves the database at the revision, and with
        the rows, it found, for the servers whose keys it has."""
        return await KeyChecks(self.db).refused(self._cluster_keys(), self._opens)

    async def _check_stored_keys(self) -> KeysRefused | None:
        """The database holds the check values of the keys its servers must share
        (store/key_checks.py): a server whose own differ would seal what no other
        server opens, or fail on every secret stored, so it does not serve."""
        return await KeyChecks(self.db).settle(self._cluster_keys(), self._opens)

    def _opens(self, sealed: str) -> bool:
        try:
            self.cipher.decrypt(sealed)
        except ValueError:
            return False
        return True

    def _stored_keys_refusal(self, refused: KeysRefused) -> str:
        held = {
            KEY_FILE: f"secret key ({self.cipher.source})",
            AGENT_CA: f"agent CA ({self.settings.data_dir / AGENT_CA})",
        }
        mine = " and ".join(held[name] for name in refused.names)
        if refused.sealed:
            why = (
                f"the secrets stored in this database were sealed with another key than "
                f"this server's {mine}: give it the key they were sealed with (the "
                f"secret.key or JOBFLEET_SECRET_KEY it ran with before), or point it at "
                f"the database of this data directory"
            )
        else:
            verb = "differ" if len(refused.names) > 1 else "differs"
            why = (
                f"this server's {mine} {verb} from what the database's first server "
                f"stored there: give it theirs (copy secret.key and tls/ from the data "
                f"directory of a server that ran on this database into "
                f"{self.settings.data_dir}, or set the same JOBFLEET_SECRET_KEY), or point "
                f"it at the database of this data directory"
            )
        return (
            f"database_keys_refused files={','.join(refused.names)} error={why}; nothing "
            f"was written (docs/deploy.md, Keys)"
        )

    async def _check_cluster_keys(self, redis_url: str) -> None:
        """A node whose secret key is not the cluster's seals messages and values no
        other node can open (its jobs hang, the others log unreadable entries), and one
        whose agent CA is not the cluster's is refused by every agent that pinned it:
        such a node ends here, in one line, before it listens."""
        from jobfleet.bus.redis import claim_cluster_keys

        differing = await claim_cluster_keys(redis_url, self._cluster_keys())
        if not differing:
            # None: Redis is away; the bus compares when it reaches Redis, before it
            # sends or reads anything (_refused_by_cluster)
            return
        self._log_refusal(differing)
        await self.db.close()
        raise SystemExit(2)

    async def _check_node_id(self, redis_url: str) -> None:
        """Two nodes under one node id read each other's messages (each sees part of
        the other's stream), and both drive the jobs leased to it: a node whose id a
        running node has ends here, in one line, before it listens."""
        from jobfleet.bus.redis import node_id_in_use

        if not await node_id_in_use(redis_url, self.node_id):
            return
        log.error(
            "node_id_in_use node=%s error=a running node of this cluster has this node's "
            "id: its data directory was copied with node_id; delete %s and start it again "
            "(docs/deploy.md, A cluster)",
            self.node_id,
            self.settings.data_dir / "node_id",
        )
        await self.db.close()
        raise SystemExit(2)

    def _log_refusal(self, differing: list[str]) -> None:
        log.error(
            "cluster_keys_refused files=%s error=this node's %s differ from the other "
            "nodes' of this cluster: copy secret.key and tls/ from the data directory "
            "of a running node into %s before starting it (docs/deploy.md, A cluster)",
            ",".join(differing),
            " and ".join(differing),
            self.settings.data_dir,
        )

    def _refused_by_cluster(self, differing: list[str]) -> None:
        """The bus reached Redis after this node started (Redis was away) and found
        other keys there: the node ends as it would have at start, with status 2."""
        if self._keys_refused is not None:
            return
        self._keys_refused = differing
        self._log_refusal(differing)
        if self._api_server is not None:
            # stops the API listener, whose lifespan then stops everything else
            self._api_server.should_exit = True


def _redis_bus(
    url: str,
    node: str,
    cipher: Cipher,
    cluster_keys: dict[str, str],
    on_refused: Callable[[list[str]], None],
    node_ttl: float,
) -> Bus:
    # imported for a cluster node only: the Redis client holds ~7 MiB a lone server never uses
    from jobfleet.bus.redis import RedisBus

    return RedisBus(
        url,
        node,
        seal=cipher.seal_bytes,
        unseal=cipher.open_bytes,
        cluster_keys=cluster_keys,
        on_refused=on_refused,
        node_ttl=node_ttl,
    )


def _agent_listener_parts(
    settings: ServerSettings,
) -> tuple[AgentTLS | None, socket.socket | None, AgentChannel]:
    """The agent listener's TLS files and socket, and what agents are told of them."""
    if settings.agent_plaintext:
        log.warning("agent_plaintext agents talk plain HTTP on the API port")
        return None, None, AgentChannel(None, None)
    tls = ensure_agent_tls(settings.data_dir, [settings.host])
    sock = _bind_agent_port(settings)
    return tls, sock, AgentChannel(tls.ca_pem, int(sock.getsockname()[1]))


def _bind_agent_port(settings: ServerSettings) -> socket.socket:
    """The agent listener's socket. With ``agent_port`` 0 a restart takes the port
    it had before when it is free: transfers in flight resume at the same address."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    remembered = settings.data_dir / "agent_port"
    ports = [settings.agent_port]
    if settings.agent_port == 0 and remembered.exists():
        with contextlib.suppress(ValueError):
            ports.insert(0, int(remembered.read_text()))
    for port in ports:
        sock = socket.socket(family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.host, port))
        except OSError as exc:
            sock.close()
            if port == ports[-1]:
                # as uvicorn ends for the API port: one line and its startup-failure code
                log.error(
                    "agent_port_unavailable host=%s port=%s error=%s hint=%s",
                    settings.host,
                    port,
                    exc.strerror or exc,
                    "set agent_port (--agent-port) to a free port, or 0 to let the system pick",
                )
                raise SystemExit(STARTUP_FAILURE) from None
            continue
        if settings.agent_port == 0:
            remembered.write_text(str(sock.getsockname()[1]))
        return sock
    raise AssertionError("unreachable: the last port either binds or raises")


uvicorn_log = logging.getLogger("uvicorn.error")


class _DropFirst(logging.Filter):
    """Drops the first record whose message begins with ``prefix``, lets all others by."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.dropped = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.dropped and record.getMessage().startswith(self.prefix):
            self.dropped = True
            return False
        return True


def _address(scheme: str, host: str, sockets: list[socket.socket]) -> str:
    """Where a listener listens, its port as bound (the one the system picked for 0)."""
    port = sockets[0].getsockname()[1] if sockets else 0
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class _Listener(uvicorn.Server):
    """One of the server's listeners. With TLS its handshakes pass the gate of
    ``gateway/handshakes.py`` and its connections run over ``gateway/tlslayer.py``
    instead of asyncio's TLS server: handshakes are bounded in number, per source
    address and in time, and a peer that sends without reading what it is answered
    is not read either (asyncio's TLS transport would buffer every answer).

    ``port`` names it in logs; ``owns_signals``: the API listener's (the agent listener
    runs beside it); ``session_tickets``: TLS 1.3 tickets, for clients that resume."""

    def __init__(
        self,
        config: uvicorn.Config,
        limits: HandshakeLimits,
        *,
        port: str,
        owns_signals: bool,
        session_tickets: bool,
        on_started: Callable[[list[socket.socket]], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.limits = limits
        self.port = port
        self.owns_signals = owns_signals
        self.session_tickets = session_tickets
        self.on_started = on_started
        self.gates: list[HandshakeGate] = []

    # uvicorn's main loop looks at ``should_exit`` every 0.1 s: a stop asked for (a
    # signal, the API listener stopping the agent listener, a test's server) wakes it
    # at once instead
    _tick: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
    _should_exit = False

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if value and self._tick is not None:
            loop, waker = self._tick
            # thread-safe: a signal handler sets it too, and the loop may sleep in select
            loop.call_soon_threadsafe(_wake, waker)

    async def main_loop(self) -> None:
        loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        try:
            while not should_exit:
                counter = (counter + 1) % 864000
                waker: asyncio.Future[None] = loop.create_future()
                self._tick = (loop, waker)
                timer = loop.call_later(0.1, _wake, waker)
                try:
                    if not self._should_exit:
                        await waker
                finally:
                    timer.cancel()
                should_exit = await self.on_tick(counter)
        finally:
            self._tick = None

    async def _serve(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own, without its "Started/Finished server process" lines: each
        # listener would log them, twice in all, naming neither port; the server logs
        # one line for both (``Server._started``)
        config = self.config
        if not config.loaded:
            config.load()
        self.lifespan = config.lifespan_class(config)
        await self.startup(sockets=sockets)
        if not self.should_exit:
            await self.main_loop()
        if self.started:
            await self.shutdown(sockets=sockets)

    def _log_started_message(self, listeners: Sequence[socket.SocketType]) -> None:
        """Said by ``on_started``, with the port's role."""

    def _listening(self, sockets: list[socket.socket]) -> None:
        self.started = True
        if self.on_started is not None:
            self.on_started(sockets)

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if not self.owns_signals:
            yield
            return
        with super().capture_signals():
            yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        if config.ssl is None:
            await super().startup(sockets)
            if self.started:
                self._listening(sockets or [s for srv in self.servers for s in srv.sockets])
            return
        if sockets is None:
            # bound before the lifespan starts anything: an address in use ends the
            # process here (uvicorn logs it and exits with STARTUP_FAILURE); its
            # "Uvicorn running on" line is said by ``on_started``, with the port's role
            running = _DropFirst("Uvicorn running on ")
            uvicorn_log.addFilter(running)
            try:
                sockets = [config.bind_socket()]
            finally:
                uvicorn_log.removeFilter(running)
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            for sock in sockets:
                sock.close()
            raise SystemExit(STARTUP_FAILURE)
        state, app_state = self.server_state, self.lifespan.state

        def create_protocol() -> asyncio.Protocol:
            protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state=app_state
            )
            return protocol

        self.servers = []
        if not self.session_tickets:
            config.ssl.num_tickets = 0
        # renegotiation is a handshake's CPU again on a connection already in, at the
        # client's call; TLS 1.3 has none, and no client of either port needs it
        config.ssl.options |= ssl.OP_NO_RENEGOTIATION
        for sock in sockets:
            gate = HandshakeGate(sock, config.ssl, create_protocol, self.limits, self.port)
            gate.start(config.backlog)
            self.gates.append(gate)
        self._listening(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for gate in self.gates:
            gate.close()
        if self.owns_signals:
            await self._shutdown(sockets)
        else:
            # the API listener has said "Shutting down" for the process already
            said = _DropFirst("Shutting down")
            uvicorn_log.addFilter(said)
            try:
                await self._shutdown(sockets)
            finally:
                uvicorn_log.removeFilter(said)
        for gate in self.gates:
            await gate.wait_closed()

    async def _shutdown(self, sockets: list[socket.socket] | None) -> None:
        """uvicorn's ``shutdown``, less its waits of 0.1 s: a fixed one after asking the
        connections to close, even when there is none, and then 0.1 s between looks
        at whether any is left. Each stop of a server paid them on both listeners.

        A copy, not a call: the fixed wait is a bare ``asyncio.sleep(0.1)`` in the body
        of uvicorn's ``shutdown`` (0.55), with no hook before it; the looks are in
        ``_wait_tasks_to_complete``, overridden below."""
        uvicorn_log.info("Shutting down")
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                await self._wait_tasks_to_complete()
        except TimeoutError:
            uvicorn_log.error(
                "Cancel %s running task(s), timeout graceful shutdown exceeded",
                len(self.server_state.tasks),
            )
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _wait_tasks_to_complete(self) -> None:
        state = self.server_state
        # uvicorn looks after 0.1 s: connections gone by then go unmentioned in its log
        loop = asyncio.get_running_loop()
        quiet = loop.time() + 0.1
        while state.connections and not self.force_exit and loop.time() < quiet:
            await asyncio.sleep(0.01)
        if state.connections and not self.force_exit:
            uvicorn_log.info("Waiting for connections to close. (CTRL+C to force quit)")
            while state.connections and not self.force_exit:
                await asyncio.sleep(0.01)
        if state.tasks and not self.force_exit:
            uvicorn_log.info("Waiting for background tasks to complete. (CTRL+C to force quit)")
            while state.tasks and not self.force_exit:
                await asyncio.sleep(0.01)
        for server in self.servers:
            await server.wait_closed()


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)


def run(settings: ServerSettings) -> None:
    # Thousands of agent connections are long-lived objects that every full
    # collection scans (about 1.2 s at 10,000 agents); collect young objects
    # less often so that fewer of a job's objects live long enough to reach
    # the oldest generation. At its height a job on 10,000 hosts holds
    # 75,000-96,000 more tracked objects than before it, every one alive: at
    # 100,000 one such job in four or five had a young collection fall inside
    # it, 45-115 ms of CPU scanning them that freed almost nothing. At 200,000
    # none did, and the server's memory with 10,000 agents stayed the same.
    gc.set_threshold(200_000, 50, 100)
    loop.run(Server(settings).serve())
