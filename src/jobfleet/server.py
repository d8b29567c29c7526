"""Builds a server from its settings and runs it: store, gateway, engine, API."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from jobfleet import loop
from jobfleet.api.app import create_app
from jobfleet.api.auth import Authenticator
from jobfleet.api.connections import ConnectionLimits, protocol_class
from jobfleet.api.services import Limits, Services
from jobfleet.api.throttle import Throttle
from jobfleet.domain.addresses import parse_networks
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.protocol import MAX_FRAME_BYTES
from jobfleet.engine.callbacks import CallbackSender
from jobfleet.engine.core import Engine
from jobfleet.engine.cron import CronScheduler
from jobfleet.engine.notify import SmtpSettings
from jobfleet.engine.outbound import Outbound, own_addresses
from jobfleet.engine.plans import PlanLauncher
from jobfleet.engine.retention import Retention, RetentionSettings
from jobfleet.engine.settings import EngineSettings
from jobfleet.engine.submit import Submitter
from jobfleet.engine.transfer import FileSteps
from jobfleet.gateway.endpoint import Gateway
from jobfleet.gateway.presence import Presence
from jobfleet.gateway.refusals import Refusals
from jobfleet.gateway.registry import Registry
from jobfleet.store.accounts import AccountStore
from jobfleet.store.audit import AuditLog
from jobfleet.store.blobs import BlobStore
from jobfleet.store.crons import CronStore
from jobfleet.store.database import Database, sqlite_url, wait_for
from jobfleet.store.filelogs import FileLogStore
from jobfleet.store.identity import IdentityStore
from jobfleet.store.inventory import Inventory
from jobfleet.store.jobs import JobStore
from jobfleet.store.retention import RetentionStore
from jobfleet.store.rules import RuleStore
from jobfleet.store.scripts import ScriptStore
from jobfleet.store.secrets import Cipher
from jobfleet.store.templates import TemplateStore

log = logging.getLogger(__name__)

DEFAULT_BIZ = 2
STOP_TIMEOUT = 10.0
ADMIN_APP = "jobfleet"
ADMIN_USER = "admin"


@dataclass
class ServerSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str | None = None
    engine: dict[str, Any] = field(default_factory=dict)
    heartbeat: float = 10.0
    log_level: str = "info"
    max_file_size: int = 5 * 1024**3
    tls_cert: Path | None = None
    tls_key: Path | None = None
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

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}"


def node_id(data_dir: Path) -> str:
    """A stable identity, so a restarted node takes its own jobs back at once."""
    path = data_dir / "node_id"
    if path.exists():
        return path.read_text().strip()
    value = uuid.uuid4().hex[:16]
    path.write_text(value)
    return value


async def bootstrap(identity: IdentityStore, data_dir: Path, url: str) -> None:
    """On the first start: the default business, the admin app and user, an enrollment token."""
    path = data_dir / "bootstrap.json"
    if DEFAULT_BIZ not in await identity.business_ids():
        try:
            await identity.create_business(DEFAULT_BIZ, "Default business")
        except JobError as exc:
            if exc.code != ErrorCode.CONFLICT:
                raise  # else another node starting beside this one made it
    if path.exists():
        return
    try:
        secret = await identity.create_app(ADMIN_APP, "administration app", is_admin=True)
    except JobError as exc:
        if exc.code != ErrorCode.CONFLICT:
            raise
        log.warning(
            "bootstrap_skipped reason=another node initialised this database; "
            "its bootstrap.json holds the admin credentials"
        )
        return
    await identity.ensure_user(ADMIN_USER, is_admin=True)
    token = await identity.create_enroll_token(note="bootstrap")
    content = {
        "bk_app_code": ADMIN_APP,
        "bk_app_secret": secret,
        "admin_user": ADMIN_USER,
        "enroll_token": token,
        "url": url,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(content, fh, indent=2)
    log.info("bootstrap_written path=%s", path)


class Server:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.data_dir, 0o700)
        self.node_id = node_id(settings.data_dir)
        self.db = Database(settings.database_url or sqlite_url(settings.data_dir))
        self.cipher = Cipher.from_data_dir(settings.data_dir)
        self.identity = IdentityStore(self.db)
        self.inventory = Inventory(self.db)
        self.jobs = JobStore(self.db)
        self.registry = Registry()
        self.presence = Presence(self.db, self.node_id)
        engine_settings = EngineSettings(node_id=self.node_id, **settings.engine)
        self.refusals = Refusals(AuditLog(self.db), engine_settings.refusal_audit_window)
        self.engine = Engine(
            self.jobs, self.registry, self.cipher, engine_settings, refusals=self.refusals
        )
        outbound = Outbound(parse_networks(settings.callback_allow), own_addresses(settings.host))
        self.callbacks = CallbackSender(self.db, engine_settings, settings.smtp, outbound)
        self.engine.on_job_finished.append(self.callbacks.wake)
        self.gateway = Gateway(
            self.identity, self.registry, self.presence, settings.heartbeat, self.refusals
        )
        self.gateway.events = self.engine
        self.blobs = BlobStore(self.db, settings.data_dir / "blobs")
        self.file_logs = FileLogStore(self.db)
        self.engine.file_steps = FileSteps(
            self.engine, self.blobs, self.file_logs, self.inventory, settings.max_file_size
        )
        self.submitter = Submitter(self.db, self.engine, self.inventory, self.cipher)
        self.scripts = ScriptStore(self.db)
        self.templates = TemplateStore(self.db, self.cipher)
        self.crons = CronStore(self.db)
        self.rules = RuleStore(self.db)
        self.plans = PlanLauncher(
            self.db,
            self.engine,
            self.submitter,
            self.scripts,
            self.templates,
            self.cipher,
            self.blobs,
            self.rules,
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
                failures=Throttle(
                    "failed authentications",
                    settings.auth_failure_rate,
                    settings.auth_failure_burst,
                ),
            ),
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
            crons=self.crons,
            plans=self.plans,
            rules=self.rules,
            enroll_throttle=Throttle("enrollments", settings.enroll_rate, settings.enroll_burst),
        )
        self.connection_limits = ConnectionLimits(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_pending=settings.max_pending_connections,
        )
        self.app: FastAPI = create_app(self.services)
        self.app.router.lifespan_context = self._lifespan

    @asynccontextmanager
    async def _lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        await wait_for(self.db)
        await self.db.migrate()
        await bootstrap(self.identity, self.settings.data_dir, self.settings.url)
        await self.inventory.reset_node(self.node_id)
        self.presence.start()
        await self.engine.start()
        self.callbacks.start()
        self.cron_scheduler.start()
        self.retention.start()
        log.info("server_started node=%s url=%s", self.node_id, self.settings.url)

    async def stop(self) -> None:
        # a stuck part must not keep the process from exiting: the store is the
        # truth, and the next start takes over whatever was in flight
        for name, part in (
            # no new cron job may reach an engine that is stopping
            ("cron", self.cron_scheduler.stop),
            ("retention", self.retention.stop),
            ("engine", self.engine.stop),
            ("callbacks", self.callbacks.stop),
            ("gateway", self.gateway.stop),
            ("presence", self.presence.stop),
            ("audit", self.audit.flush),
            ("database", self.db.close),
        ):
            try:
                await asyncio.wait_for(part(), STOP_TIMEOUT)
            except Exception:
                log.exception("stop_failed part=%s", name)

    def uvicorn_config(self) -> uvicorn.Config:
        return uvicorn.Config(
            self.app,
            host=self.settings.host,
            port=self.settings.port,
            log_level=self.settings.log_level,
            access_log=False,
            http=protocol_class(self.connection_limits),
            timeout_keep_alive=max(1, round(self.settings.idle_timeout)),
            # agents keep their frames well below this (see domain/protocol.py)
            ws_max_size=MAX_FRAME_BYTES,
            # agent frames are small JSON: compressing them costs more CPU than it
            # saves bytes, and ~40 KiB of zlib state per connection
            ws_per_message_deflate=False,
            ws_ping_interval=self.settings.heartbeat,
            ws_ping_timeout=self.settings.heartbeat,
            timeout_graceful_shutdown=5,
            lifespan="on",
            ssl_certfile=self.settings.tls_cert,
            ssl_keyfile=self.settings.tls_key,
        )

    async def serve(self) -> None:
        await uvicorn.Server(self.uvicorn_config()).serve()


def run(settings: ServerSettings) -> None:
    # Thousands of agent connections are long-lived objects that every full
    # collection scans (about 1.2 s at 10,000 agents); collect young objects
    # less often so that fewer of a job's objects live long enough to reach
    # the oldest generation.
    gc.set_threshold(100_000, 50, 100)
    loop.run(Server(settings).serve())


def read_bootstrap(data_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((data_dir / "bootstrap.json").read_text())
    return data
