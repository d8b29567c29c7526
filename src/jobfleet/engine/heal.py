"""Alert-driven self-healing: an inbound alert, checked against its rule, starts the
rule's plan on the hosts the alert names, or is converged, skipped or refused.

Convergence, in order: a rule that is off, a resolved alert and an alert the rule
does not match start nothing; an alert naming more hosts than the rule's cap is
refused; while a job started for the same fingerprint runs, the alert converges
into it; the rule's cool-down and rate limit, then each host's, hold back what
would start too often. Every outcome is recorded as a decision. The job's end is
reported like any job's, by the business's notification channels.

Decisions of one rule are taken one at a time, across every node of a cluster: the
rule's row is locked in the shared database while one is taken (``HealStore.deciding``),
so an alert posted twice at once, to one node or to two, starts one job, and the rate
limits and cool-downs count every node's jobs. The decisions of one call are written
together (``_Batch``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import Row

from jobfleet.domain import heal
from jobfleet.domain.callers import HEAL_APP_CODE
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.host_addresses import by_address
from jobfleet.domain.status import FINISHED_RUN_STATUSES, LaunchMode, ScopeType
from jobfleet.domain.targets import normalize_ip
from jobfleet.domain.throttle import Throttle
from jobfleet.domain.variables import MAX_VALUE
from jobfleet.engine.acting import refusal
from jobfleet.engine.plans import PlanLauncher
from jobfleet.engine.submit import Scope
from jobfleet.store.database import now_ms
from jobfleet.store.heal import HealStore, decision_view
from jobfleet.store.identity import IdentityStore
from jobfleet.store.inventory import Host, Inventory
from jobfleet.store.job_reads import JobReads

log = logging.getLogger(__name__)

# all of one alert's rendered variables together (each is also within MAX_VALUE)
MAX_RENDERED = 4 * MAX_VALUE

SIGNATURE_HEADER = "x-jobfleet-signature"
HEAL_APP = HEAL_APP_CODE
# rules whose alerts one node decides on at the same time
DECIDING_AT_ONCE = 4
# the largest id a database row has (a label past it names no host)
MAX_ID = 2**63 - 1


def authentic(secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """A bearer token equal to the secret, or an HMAC-SHA256 of the body keyed by it
    (``X-Jobfleet-Signature: sha256=<hex>``)."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return hmac.compare_digest(auth[7:].strip().encode(), secret.encode())
    signature = headers.get(SIGNATURE_HEADER, "")
    if signature:
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature.strip().encode(), expected.encode())
    return False


def _id(text: str) -> int | None:
    """A label's id: ASCII digits within a row id's range, or None."""
    if not (text.isascii() and text.isdecimal()) or len(text.lstrip("0")) > 19:
        return None
    value = int(text)
    return value if value <= MAX_ID else None


class Healer:
    def __init__(
        self,
        store: HealStore,
        plans: PlanLauncher,
        inventory: Inventory,
        jobs: JobReads,
        identity: IdentityStore,
        failures: Throttle | None = None,
    ) -> None:
        self.store = store
        self.plans = plans
        self.inventory = inventory
        self.jobs = jobs
        self.identity = identity
        # wrong credentials per source address, counted with every other kind
        self.failures = failures or Throttle("failed authentications", 0, 1)
        self._locks: dict[int, asyncio.Lock] = {}
        self._slots = asyncio.Semaphore(DECIDING_AT_ONCE)

    async def receive(
        self, rule_id: int, body: bytes, headers: Mapping[str, str], source: str = ""
    ) -> list[dict[str, Any]]:
        """The decisions on the alerts of one webhook call from the address ``source``.

        Wrong credentials count against the address's budget of failed authentications;
        past it they are refused unchecked and unrecorded, while a right secret still
        passes."""
        try:
            rule = await self.store.rule(None, rule_id)
        except JobError:
            self._failed(source)
            raise JobError(ErrorCode.SERVICE_AUTH_FAIL, "Unknown rule or bad credentials") from None
        if not authentic(self.store.secret(rule), body, headers):
            self._failed(source)
            await self.store.record(
                rule, decision=heal.REFUSED, reason="bad signature or token", hosts=[], variables={}
            )
            log.warning("heal_refused rule=%s reason=credentials", rule_id)
            raise JobError(ErrorCode.SERVICE_AUTH_FAIL, "Unknown rule or bad credentials")
        try:
            alerts = heal.read_alerts(orjson.loads(body))
        except (orjson.JSONDecodeError, heal.PayloadError) as exc:
            await self.store.record(
                rule, decision=heal.REFUSED, reason=f"bad payload: {exc}", hosts=[], variables={}
            )
            raise JobError.invalid("body", str(exc)) from None
        lock = self._locks.setdefault(rule.id, asyncio.Lock())
        # this node's lock first (a waiter holds nothing), then a slot (each holds a
        # database connection while it decides), then the rule across the cluster
        async with lock, self._slots, self.store.deciding(rule.id) as current:
            batch = await _Batch.load(self.store, self.inventory, current, alerts)
            try:
                for alert in alerts:
                    fields = await self._decide(current, alert, batch)
                    log.info(
                        "heal_decision rule=%s fingerprint=%s decision=%s job=%s",
                        rule.id,
                        alert.fingerprint,
                        fields["decision"],
                        fields["job_instance_id"],
                    )
            finally:
                # written before the rule is let go (the next call's decisions see them),
                # also those taken before an error
                await batch.flush()
        return [decision_view(r) for r in batch.rows]

    def _failed(self, source: str) -> None:
        """Count a wrong credential from ``source``; JobError (429) past the budget."""
        if not self.failures.take(source):
            raise self.failures.refusal(source)

    async def _decide(self, rule: Row[Any], alert: heal.Alert, batch: _Batch) -> dict[str, Any]:
        async def record(
            decision: str,
            reason: str,
            hosts: list[int] | None = None,
            variables: dict[str, str] | None = None,
            job: int | None = None,
        ) -> dict[str, Any]:
            return await batch.add(
                alert.fingerprint,
                {
                    "fingerprint": alert.fingerprint,
                    "alertname": alert.alertname[:255],
                    "alert_status": alert.status,
                    "decision": decision,
                    "reason": reason,
                    "hosts": hosts or [],
                    "variables": variables or {},
                    "job_instance_id": job,
                    "create_time": now_ms(),
                },
            )

        if not rule.enabled:
            return await record(heal.SKIPPED, "the rule is off")
        if alert.status == heal.RESOLVED:
            return await record(heal.SKIPPED, "a resolved alert starts nothing")
        if not heal.matches(rule.match or {}, alert):
            return await record(heal.SKIPPED, "the alert does not match the rule")
        hosts = batch.hosts_of(alert)
        ids = [h.bk_host_id for h in hosts]
        if not hosts:
            return await record(
                heal.SKIPPED, f"no host of business {rule.bk_biz_id} in label {rule.host_label!r}"
            )
        if len(hosts) > rule.max_hosts:
            return await record(
                heal.REFUSED, f"{len(hosts)} hosts, over the rule's cap of {rule.max_hosts}", ids
            )
        plan_variables = await batch.plan_variables(self.plans) if rule.variables else []
        secret = heal.password_names(plan_variables, rule.variables or {})
        if secret:
            # a rule stored before this was refused, or a plan changed since: the value
            # would be kept in clear in the decision
            return await record(
                heal.REFUSED,
                f"{', '.join(secret)[:500]} of plan {rule.job_plan_id} is a password "
                "variable, which a rule does not set",
                ids,
            )
        variables = {str(k): heal.render(str(v), alert) for k, v in (rule.variables or {}).items()}
        oversized = [k for k, v in variables.items() if len(v.encode()) > MAX_VALUE]
        if oversized:
            # a plan refuses such a value anyway; the decision keeps only the names
            return await record(
                heal.REFUSED,
                f"variables {', '.join(sorted(oversized))[:500]} rendered longer than "
                f"{MAX_VALUE} bytes (a plan variable's limit)",
                ids,
            )
        rendered = sum(len(v.encode()) for v in variables.values())
        if rendered > MAX_RENDERED:
            # each decision stores its variables: a rule must not turn one alert into
            # megabytes of decisions
            return await record(
                heal.REFUSED,
                f"the variables rendered {rendered} bytes in all, over {MAX_RENDERED}",
                ids,
            )
        last = batch.last.get(alert.fingerprint)
        if last is not None and last.job_instance_id is not None:
            job = await self.jobs.job(last.job_instance_id)
            if job is not None and job.status not in FINISHED_RUN_STATUSES:
                return await record(
                    heal.CONVERGED,
                    "a job for this alert is still running",
                    ids,
                    variables,
                    last.job_instance_id,
                )
        now = now_ms()
        window = max(rule.rate_window, rule.cooldown, rule.host_cooldown) * 1000
        started = [d for d in batch.started if d.create_time >= now - window]
        if rule.cooldown and started and started[0].create_time > now - rule.cooldown * 1000:
            return await record(
                heal.CONVERGED, f"the rule is cooling down ({rule.cooldown}s)", ids, variables
            )
        in_window = [d for d in started if d.create_time >= now - rule.rate_window * 1000]
        if len(in_window) >= rule.rate_limit:
            return await record(
                heal.SKIPPED,
                f"rate limit: {rule.rate_limit} jobs in {rule.rate_window}s",
                ids,
                variables,
            )
        held: list[int] = []
        for host in ids:
            runs = [d for d in in_window if host in (d.hosts or [])]
            cooling = rule.host_cooldown and any(
                d.create_time > now - rule.host_cooldown * 1000
                for d in started
                if host in (d.hosts or [])
            )
            if cooling or len(runs) >= rule.host_rate_limit:
                held.append(host)
        chosen = [h for h in ids if h not in held]
        if not chosen:
            return await record(
                heal.CONVERGED,
                f"every host is cooling down or at its rate limit: {held}",
                ids,
                variables,
            )
        note = f"; held back (cool-down or rate limit): {held}" if held else ""
        # the rule acts for its user through the app it was made with: once either lost
        # the business (or the app is gone or disabled) it no longer starts its plan
        refused = await refusal(
            self.identity,
            rule.operator,
            rule.app_code,
            ScopeType.BIZ,
            str(rule.bk_biz_id),
            {int(rule.bk_biz_id)},
        )
        if refused is not None:
            return await record(heal.REFUSED, refused, chosen, variables)
        if rule.dry_run:
            return await record(
                heal.DRY_RUN,
                f"dry run: would start plan {rule.job_plan_id}{note}",
                chosen,
                variables,
            )
        overrides: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in variables.items()]
        if rule.host_variable:
            overrides.append({"name": rule.host_variable, "server": {"host_id_list": chosen}})
        biz = int(rule.bk_biz_id)
        scope = Scope(ScopeType.BIZ, str(biz), biz, {biz})
        # what is decided so far is written first: a launch is a transaction of its own
        await batch.flush()
        try:
            job_id, _name = await self.plans.launch(
                plan_id=rule.job_plan_id,
                scope=scope,
                overrides=overrides,
                launch_mode=LaunchMode.API,
                operator=rule.operator,
                app_code=rule.app_code or HEAL_APP,
            )
        except JobError as exc:
            return await record(
                heal.REFUSED, f"the plan did not start: {exc.message}", chosen, variables
            )
        return await record(
            heal.STARTED, f"started plan {rule.job_plan_id}{note}", chosen, variables, job_id
        )


def _wanted(rule: Row[Any], alert: heal.Alert) -> list[Any]:
    """The hosts an alert names: ids, or (cloud, address) pairs, as the rule reads them."""
    refs = heal.host_refs(alert, rule.host_label, rule.host_kind)[: rule.max_hosts + 1]
    if rule.host_kind == "host_id":
        return [i for i in map(_id, refs) if i is not None]
    cloud_label = alert.labels.get("bk_cloud_id", "0")
    cloud = _id(cloud_label) if cloud_label.isdecimal() else 0
    if cloud is None:  # a cloud id past any row's
        return []
    pairs = []
    for ref in refs:
        try:
            pairs.append((cloud, normalize_ip(ref)))
        except JobError:
            continue
    return pairs


class _Batch:
    """The decisions of one webhook call on a rule, taken in order while the rule is held
    (``HealStore.deciding``) and written together, in one transaction, each with the
    moment it was taken. What they depend on is read once: the hosts the alerts name,
    the rule's plan's variables, the rule's started jobs of the longest window and each
    fingerprint's last started job, the last two kept up to date with the jobs this
    call starts (a started decision is written at once). No other
    decision on the rule can be taken meanwhile, so each one sees what it would have
    seen taken and written alone."""

    def __init__(
        self,
        store: HealStore,
        rule: Row[Any],
        started: list[Row[Any]],
        last: dict[str, Row[Any]],
        found: dict[Any, list[Host]],
    ) -> None:
        self.store = store
        # the hosts the alerts name, by id or by (cloud, address)
        self.found = found
        self.rule = rule
        # newest first, as ``HealStore.started_since``
        self.started = started
        self.last = last
        self.pending: list[dict[str, Any]] = []
        self.rows: list[Row[Any]] = []
        self._plan_variables: Any = None

    @classmethod
    async def load(
        cls, store: HealStore, inventory: Inventory, rule: Row[Any], alerts: list[heal.Alert]
    ) -> _Batch:
        window = max(rule.rate_window, rule.cooldown, rule.host_cooldown) * 1000
        started = await store.started_since(rule.id, now_ms() - window)
        last = await store.last_started_of(rule.id, [a.fingerprint for a in alerts])
        wanted = list(dict.fromkeys(w for a in alerts for w in _wanted(rule, a)))
        found: dict[Any, list[Host]] = {}
        if rule.host_kind == "host_id":
            for host in await inventory.by_ids(wanted):
                found.setdefault(host.bk_host_id, []).append(host)
        elif wanted:
            # an address names the hosts whose ip it is, else the one host whose agent
            # reports it as its IPv6 address (as in a job's ``ip_list``): an agent says
            # what it likes in its hello, and its claim must not take another host's alerts
            named = by_address(
                await inventory.by_ips(wanted), lambda h: (h.bk_cloud_id, h.ip, h.ipv6)
            )
            found.update(named)
        return cls(store, rule, started, last, found)

    def hosts_of(self, alert: heal.Alert) -> list[Host]:
        """The hosts of the rule's business that the alert names, each once."""
        seen: dict[int, Host] = {}
        for key in _wanted(self.rule, alert):
            for host in self.found.get(key, []):
                if host.bk_biz_id == self.rule.bk_biz_id:
                    seen.setdefault(host.bk_host_id, host)
        return list(seen.values())

    async def plan_variables(self, plans: PlanLauncher) -> Any:
        """The rule's plan's stored variables, read once a call."""
        if self._plan_variables is None:
            plan = await plans.plans.plan(self.rule.job_plan_id)
            self._plan_variables = plan.variables if plan else []
        return self._plan_variables

    async def add(self, fingerprint: str, fields: dict[str, Any]) -> dict[str, Any]:
        self.pending.append(fields)
        if fields["decision"] == heal.STARTED:
            await self.flush()
            row = self.rows[-1]
            self.started.insert(0, row)
            self.last[fingerprint] = row
        return fields

    async def flush(self) -> None:
        if self.pending:
            pending, self.pending = self.pending, []
            self.rows.extend(await self.store.record_many(self.rule, pending))
