"""Everything a request handler may use, built once at start."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from starlette.websockets import WebSocket

from jobfleet.api.auth import Authenticator
from jobfleet.api.health import Probes
from jobfleet.domain.enrollment import AgentChannel
from jobfleet.domain.throttle import Throttle
from jobfleet.engine.file_sources import ThirdPartyFiles
from jobfleet.engine.heal import Healer
from jobfleet.engine.jobs import Jobs
from jobfleet.engine.outbound import Outbound
from jobfleet.engine.plans import PlanLauncher
from jobfleet.engine.ports import LiveEvents, NoLiveEvents
from jobfleet.engine.procs import ProcManager
from jobfleet.engine.submit import Submitter
from jobfleet.store.accounts import AccountStore
from jobfleet.store.audit import AuditLog
from jobfleet.store.blobs import BlobStore
from jobfleet.store.crons import CronStore
from jobfleet.store.database import Database
from jobfleet.store.file_sources import FileSourceStore
from jobfleet.store.filelogs import FileLogStore
from jobfleet.store.identity import IdentityStore
from jobfleet.store.inventory import Inventory
from jobfleet.store.jobs import JobStore
from jobfleet.store.people import PeopleStore
from jobfleet.store.plans import PlanStore
from jobfleet.store.rules import RuleStore
from jobfleet.store.scripts import ScriptStore
from jobfleet.store.template_io import TemplateImporter
from jobfleet.store.templates import TemplateStore


class AgentSockets(Protocol):
    """What the API needs of the agent gateway: it serves the agents' WebSocket."""

    async def serve(self, ws: WebSocket) -> None: ...


@dataclass
class Limits:
    max_file_size: int = 5 * 1024**3
    # a request body on any route that does not take a file
    max_body: int = 32 * 1024 * 1024
    # API requests in flight at once (0: no cap); agents and /healthz are not counted
    max_api_requests: int = 512


@dataclass
class Services:
    db: Database
    identity: IdentityStore
    inventory: Inventory
    jobs: JobStore
    engine: Jobs
    submitter: Submitter
    gateway: AgentSockets
    auth: Authenticator
    audit: AuditLog
    accounts: AccountStore
    blobs: BlobStore
    file_logs: FileLogStore
    limits: Limits
    scripts: ScriptStore
    templates: TemplateStore
    job_plans: PlanStore
    template_import: TemplateImporter
    crons: CronStore
    plans: PlanLauncher
    rules: RuleStore
    file_sources: FileSourceStore
    third_party: ThirdPartyFiles
    # enrollment attempts per source address (default: no limit)
    enroll_throttle: Throttle = field(default_factory=lambda: Throttle("enrollments", 0, 1))
    # how agents reach this server (the plain-text default is for hand-built services)
    agent_channel: AgentChannel = field(default_factory=lambda: AgentChannel(None, None))
    # console passwords, sessions and personal tokens (none: people cannot log in)
    people: PeopleStore | None = None
    # wake-ups of live views (a job's event stream, the console's pages)
    live: LiveEvents = field(default_factory=NoLiveEvents)
    # GSE process management and messages to agents (None: not offered)
    procs: ProcManager | None = None
    # alert-driven self-healing (None: not offered)
    healer: Healer | None = None
    # /readyz and /metrics (none: only /healthz answers)
    probes: Probes | None = None
    # the guard outbound requests pass, asked when a webhook is saved (none: not asked)
    outbound: Outbound | None = None
    # False: the server has no mail server (smtp.host), so no mail can go out and email
    # notification configs are refused rather than saved to fail every delivery
    mail_relay: bool = True
