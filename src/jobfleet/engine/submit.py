"""Turning a validated request into a job: resolve targets and accounts, then submit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.rolling import RollingConfig
from jobfleet.domain.scripts import ScriptText
from jobfleet.domain.status import (
    AccountCategory,
    HostStatus,
    LaunchMode,
    RunStatus,
    StepType,
    TaskType,
)
from jobfleet.domain.targets import MAX_SCRIPT_TARGETS, TargetSpec
from jobfleet.engine.jobs import Jobs
from jobfleet.store.accounts import AccountStore
from jobfleet.store.database import Database, now_ms
from jobfleet.store.host_whitelist import SCRIPT_EXECUTE, HostWhitelist
from jobfleet.store.inventory import Host, Inventory
from jobfleet.store.jobs import HOST_ROW_DEFAULTS, NewJob, NewStep
from jobfleet.store.secrets import Cipher
from jobfleet.store.topology import (
    MODULE,
    SET,
    TopologyStore,
    group_not_found,
    groups_filters,
    standard_group_id,
)


@dataclass
class Scope:
    scope_type: str
    scope_id: str
    bk_biz_id: int
    # the businesses whose hosts and accounts this scope may use
    biz_ids: set[int]

    def public(self) -> dict[str, Any]:
        return {
            "bk_scope_type": self.scope_type,
            "bk_scope_id": self.scope_id,
            "bk_biz_id": self.bk_biz_id,
        }


@dataclass
class Account:
    id: int
    alias: str
    account: str


@dataclass
class ScriptRequest:
    name: str | None
    # read once where the launch began: the rules matched these readings, and the
    # job keeps the script from them
    script: ScriptText
    language: int
    param: str
    sensitive: bool
    timeout: int
    account: Account
    hosts: list[Host]
    callback_url: str | None
    start: bool
    operator: str
    app_code: str
    rolling: tuple[RollingConfig, list[int]] | None = None


def default_name(kind: str) -> str:
    now = datetime.now()
    return f"{kind}_{now:%Y%m%d%H%M%S}{now.microsecond // 1000:03d}"


class Submitter:
    def __init__(self, db: Database, engine: Jobs, inventory: Inventory, cipher: Cipher) -> None:
        self.db = db
        self.accounts = AccountStore(db)
        self.whitelist = HostWhitelist(db)
        self.engine = engine
        self.inventory = inventory
        self.cipher = cipher

    async def resolve_hosts(
        self,
        spec: TargetSpec,
        scope: Scope,
        limit: int = MAX_SCRIPT_TARGETS,
        action: str = SCRIPT_EXECUTE,
    ) -> list[Host]:
        """The hosts a target names, each once, by host id (docs/topology.md).

        Hosts of businesses outside the scope need a whitelist entry for ``action``
        (SCRIPT_EXECUTE or FILE_DISTRIBUTION).
        """
        topology = TopologyStore(self.db)
        found: dict[int, Host] = {}
        if spec.host_ids:
            hosts = {h.bk_host_id: h for h in await self.inventory.by_ids(spec.host_ids)}
            missing = [h for h in spec.host_ids if h not in hosts]
            if missing:
                raise JobError(
                    ErrorCode.HOST_ID_NOT_IN_CMDB, f"Host ids not found: {_sample(missing)}"
                )
            found.update(hosts)
        if spec.ips:
            for host in await self._by_ips(spec):
                found.setdefault(host.bk_host_id, host)
        if spec.topo_nodes:
            for host in await self._by_topo(topology, spec, scope):
                found.setdefault(host.bk_host_id, host)
        if spec.dynamic_groups:
            for host in await self._by_groups(topology, spec, scope):
                found.setdefault(host.bk_host_id, host)
        foreign = [h.bk_host_id for h in found.values() if h.bk_biz_id not in scope.biz_ids]
        if foreign:
            allowed = await self.whitelist.whitelisted(foreign, scope.biz_ids, action)
            refused = [found[h] for h in foreign if h not in allowed]
            if refused:
                # a host named by its id is answered by its id: its address is another
                # business's to know
                by_id = set(spec.host_ids or ())
                named = [
                    f"host id {h.bk_host_id}"
                    if h.bk_host_id in by_id
                    else f"{h.bk_cloud_id}:{h.ip}"
                    for h in refused
                ]
                raise JobError(
                    ErrorCode.HOST_INVALID,
                    f"Hosts not in {scope.scope_type} {scope.scope_id} and not whitelisted "
                    f"for {action}: {_sample(named)}",
                )
        if not found:
            raise JobError(
                ErrorCode.STEP_TARGET_EMPTY,
                "The target has no host: its topology nodes and dynamic groups match none",
            )
        if len(found) > limit:
            raise JobError(
                ErrorCode.SCRIPT_TARGETS_EXCEED,
                f"A script step may target at most {limit} hosts, got {len(found)}",
            )
        return sorted(found.values(), key=lambda h: h.bk_host_id)

    async def _by_ips(self, spec: TargetSpec) -> list[Host]:
        """An address names the host whose ip it is, else the one host reporting it as ipv6.

        An agent chooses the IPv6 address it reports, so a host whose ip is the address
        wins over one that only claims it, and two claimants are refused.
        """
        pairs = [(t.bk_cloud_id, t.ip) for t in spec.ips]
        by_ip: dict[tuple[int, str], Host] = {}
        by_v6: dict[tuple[int, str], dict[int, Host]] = {}
        for host in await self.inventory.by_ips(pairs):
            by_ip[(host.bk_cloud_id, host.ip)] = host
            if host.ipv6:
                by_v6.setdefault((host.bk_cloud_id, host.ipv6), {})[host.bk_host_id] = host
        chosen: list[Host] = []
        missing: list[str] = []
        for pair in pairs:
            owner = by_ip.get(pair)
            claimants = by_v6.get(pair, {})
            if owner is None and len(claimants) > 1:
                raise JobError.invalid(
                    "target_server.ip_list",
                    f"{pair[0]}:{pair[1]} is the IPv6 address of hosts "
                    f"{_sample(sorted(claimants))}; name the host by host_id_list",
                )
            owner = owner or next(iter(claimants.values()), None)
            if owner is None:
                missing.append(f"{pair[0]}:{pair[1]}")
            else:
                chosen.append(owner)
        if missing:
            raise JobError(ErrorCode.IP_NOT_IN_CMDB, f"Hosts not found: {_sample(missing)}")
        return chosen

    async def _by_topo(self, topology: TopologyStore, spec: TargetSpec, scope: Scope) -> list[Host]:
        """Hosts under ``topo_node_list``: a business (all its hosts), a set or a module."""
        field = "target_server.topo_node_list"
        biz_ids: set[int] = set()
        wanted: dict[str, set[int]] = {SET: set(), MODULE: set()}
        for node_type, node_id in spec.topo_nodes:
            if node_type == "biz":
                if node_id not in scope.biz_ids:
                    raise JobError.invalid(
                        field, f"business {node_id} is not in {scope.scope_type} {scope.scope_id}"
                    )
                biz_ids.add(node_id)
            elif node_type in wanted:
                wanted[node_type].add(node_id)
            else:
                raise JobError.invalid(field, f"node_type {node_type!r} is not biz, set or module")
        known = {
            (row.node_type, row.id)
            for row in await topology.nodes(wanted[SET] | wanted[MODULE])
            if row.bk_biz_id in scope.biz_ids
        }
        unknown = [
            f"{t} {i}" for t in (SET, MODULE) for i in sorted(wanted[t]) if (t, i) not in known
        ]
        if unknown:
            raise JobError.invalid(
                field,
                f"{_sample(unknown)} not found in {scope.scope_type} {scope.scope_id}",
            )
        hosts = await topology.hosts_under(sorted(wanted[SET]), sorted(wanted[MODULE]))
        if biz_ids:
            hosts += await self.inventory.list(biz_ids=sorted(biz_ids))
        return hosts

    async def _by_groups(
        self, topology: TopologyStore, spec: TargetSpec, scope: Scope
    ) -> list[Host]:
        wanted = [standard_group_id(g) for g in spec.dynamic_groups]
        rows = await topology.groups(scope.biz_ids, wanted)
        unknown = sorted(set(wanted) - {r.id for r in rows})
        if unknown:
            raise group_not_found(unknown, scope.scope_id)
        matched = await self.inventory.matching(groups_filters(rows))
        return [host for hosts in matched for host in hosts]

    async def scope_account(
        self,
        scope: Scope,
        category: int,
        *,
        account_id: int | None,
        alias: str | None,
        missing: str,
        kind: str,
    ) -> Row[Any]:
        """The scope's own account (a business set's accounts are made under the set's
        id), else one of its businesses'. Refused when none is named (``missing``: the
        parameters that name one) or none is found (``kind``: what the message calls it)."""
        if account_id is None and not alias:
            raise JobError.missing(missing)
        row = await self.accounts.find(
            [scope.bk_biz_id], category, account_id=account_id, alias=alias
        )
        if row is None and scope.biz_ids != {scope.bk_biz_id}:
            row = await self.accounts.find(
                scope.biz_ids, category, account_id=account_id, alias=alias
            )
        if row is None:
            named = account_id if account_id is not None else alias
            raise JobError(
                ErrorCode.ACCOUNT_NOT_EXIST,
                f"{kind} {named!r} does not exist in {scope.scope_type} {scope.scope_id}",
            )
        return row

    async def resolve_account(
        self, scope: Scope, account_id: int | None, alias: str | None
    ) -> Account:
        row = await self.scope_account(
            scope,
            AccountCategory.SYSTEM,
            account_id=account_id,
            alias=alias,
            missing="account_id|account_alias",
            kind="Account",
        )
        return Account(row.id, row.alias, row.account)

    async def fast_script(self, scope: Scope, req: ScriptRequest) -> tuple[int, str, int]:
        name = req.name or default_name("Script Execution")
        param = req.param
        if req.sensitive and param:
            param = self.cipher.encrypt(param)
        job = one_step_job(
            scope,
            name,
            TaskType.FAST_SCRIPT,
            StepType.SCRIPT,
            req.account,
            req.hosts,
            timeout=req.timeout,
            operator=req.operator,
            app_code=req.app_code,
            callback_url=req.callback_url,
            rolling=req.rolling,
            step_values={
                "script_language": req.language,
                "script_content": req.script,
                "script_param": param or None,
                "is_param_sensitive": req.sensitive,
            },
        )
        job_id, step_ids = await self.engine.submit(job, req.start)
        return job_id, name, step_ids[0]


def one_step_job(
    scope: Scope,
    name: str,
    task_type: TaskType,
    step_type: StepType,
    account: Account,
    hosts: list[Host],
    *,
    timeout: int,
    operator: str,
    app_code: str,
    callback_url: str | None,
    step_values: dict[str, Any],
    rolling: tuple[RollingConfig, list[int]] | None = None,
) -> NewJob:
    """The job of a fast_* call: one step, run on ``hosts`` as ``account``."""
    rows = host_rows(hosts)
    rolling_values: dict[str, Any] = {"batch_count": 1, "current_batch": 0}
    if rolling is not None:
        config, sizes = rolling
        at = 0
        for number, size in enumerate(sizes, start=1):
            for row in rows[at : at + size]:
                row["batch"] = number
            at += size
        rolling_values = {
            "rolling_config": config.to_dict(),
            "batch_count": len(sizes),
            "current_batch": 0,
        }
    step = NewStep(
        name=name,
        type=int(step_type),
        values={
            "status": int(RunStatus.BLANK),
            "execute_count": 0,
            "ignore_error": False,
            "timeout": timeout,
            "account_id": account.id,
            "account_alias": account.alias,
            "account_name": account.account,
            "operator": operator,
            "create_time": now_ms(),
            **rolling_values,
            **step_values,
        },
        hosts=rows,
    )
    return NewJob(
        values={
            "bk_biz_id": scope.bk_biz_id,
            "scope_type": scope.scope_type,
            "scope_id": scope.scope_id,
            "name": name,
            "type": int(task_type),
            "launch_mode": int(LaunchMode.API),
            "operator": operator,
            "app_code": app_code,
            "plan_id": -1,
            "template_id": -1,
            "callback_url": callback_url,
        },
        steps=[step],
    )


@dataclass
class FileRequest:
    name: str | None
    default_name: str
    task_type: int
    config: dict[str, Any]
    timeout: int
    account: Account
    hosts: list[Host]
    callback_url: str | None
    start: bool
    operator: str
    app_code: str
    rolling: tuple[RollingConfig, list[int]] | None = None


def host_rows(hosts: list[Host]) -> list[dict[str, Any]]:
    return [
        {
            **HOST_ROW_DEFAULTS,
            "execute_count": 0,
            "bk_host_id": h.bk_host_id,
            "bk_cloud_id": h.bk_cloud_id,
            "ip": h.ip,
            "ipv6": h.ipv6,
            "agent_id": h.agent_id,
            "status": int(HostStatus.WAITING),
        }
        for h in hosts
    ]


async def submit_file(submitter: Submitter, scope: Scope, req: FileRequest) -> tuple[int, str, int]:
    """A one-step file job: a transfer to targets, or a fetch from hosts to the server."""
    name = req.name or default_name(req.default_name)
    job = one_step_job(
        scope,
        name,
        TaskType(req.task_type),
        StepType.FILE,
        req.account,
        req.hosts,
        timeout=req.timeout,
        operator=req.operator,
        app_code=req.app_code,
        callback_url=req.callback_url,
        rolling=req.rolling,
        step_values={"config": req.config},
    )
    job_id, step_ids = await submitter.engine.submit(job, req.start)
    return job_id, name, step_ids[0]


def _sample(items: list[Any], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
