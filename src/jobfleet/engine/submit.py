"""Turning a validated request into a job: resolve targets and accounts, then submit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import HostStatus, LaunchMode, RunStatus, StepType, TaskType
from jobfleet.domain.targets import MAX_SCRIPT_TARGETS, TargetSpec
from jobfleet.engine.core import Engine
from jobfleet.store.database import Database, now_ms
from jobfleet.store.inventory import Host, Inventory
from jobfleet.store.jobs import NewJob, NewStep
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import accounts


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
    script: str
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


def default_name(kind: str) -> str:
    now = datetime.now()
    return f"{kind}_{now:%Y%m%d%H%M%S}{now.microsecond // 1000:03d}"


class Submitter:
    def __init__(self, db: Database, engine: Engine, inventory: Inventory, cipher: Cipher) -> None:
        self.db = db
        self.engine = engine
        self.inventory = inventory
        self.cipher = cipher

    async def resolve_hosts(
        self, spec: TargetSpec, scope: Scope, limit: int = MAX_SCRIPT_TARGETS
    ) -> list[Host]:
        if spec.topo_nodes or spec.dynamic_groups:
            raise JobError(
                ErrorCode.NOT_SUPPORTED,
                "Targeting by topo_node_list or dynamic_group_list is not supported yet",
            )
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
            pairs = [(t.bk_cloud_id, t.ip) for t in spec.ips]
            hosts_by_ip: dict[tuple[int, str], Host] = {}
            for host in await self.inventory.by_ips(pairs):
                hosts_by_ip[(host.bk_cloud_id, host.ip)] = host
                if host.ipv6:
                    hosts_by_ip[(host.bk_cloud_id, host.ipv6)] = host
            missing_ips = [f"{c}:{ip}" for c, ip in pairs if (c, ip) not in hosts_by_ip]
            if missing_ips:
                raise JobError(ErrorCode.IP_NOT_IN_CMDB, f"Hosts not found: {_sample(missing_ips)}")
            for host in hosts_by_ip.values():
                found.setdefault(host.bk_host_id, host)
        foreign = [
            f"{h.bk_cloud_id}:{h.ip}" for h in found.values() if h.bk_biz_id not in scope.biz_ids
        ]
        if foreign:
            raise JobError(
                ErrorCode.HOST_INVALID,
                f"Hosts not in {scope.scope_type} {scope.scope_id}: {_sample(foreign)}",
            )
        if len(found) > limit:
            raise JobError(
                ErrorCode.SCRIPT_TARGETS_EXCEED,
                f"A script step may target at most {limit} hosts, got {len(found)}",
            )
        return sorted(found.values(), key=lambda h: h.bk_host_id)

    async def resolve_account(
        self, scope: Scope, account_id: int | None, alias: str | None
    ) -> Account:
        if account_id is None and not alias:
            raise JobError.missing("account_id|account_alias")
        query = select(accounts).where(
            accounts.c.bk_biz_id.in_(scope.biz_ids), accounts.c.category == 1
        )
        if account_id is not None:
            query = query.where(accounts.c.id == account_id)
        else:
            query = query.where(accounts.c.alias == alias)
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            named = account_id if account_id is not None else alias
            raise JobError(
                ErrorCode.ACCOUNT_NOT_EXIST,
                f"Account {named!r} does not exist in {scope.scope_type} {scope.scope_id}",
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
) -> NewJob:
    """The job of a fast_* call: one step, run on ``hosts`` as ``account``."""
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
            "batch_count": 1,
            "current_batch": 0,
            **step_values,
        },
        hosts=host_rows(hosts),
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


def host_rows(hosts: list[Host]) -> list[dict[str, Any]]:
    return [
        {
            "execute_count": 0,
            "bk_host_id": h.bk_host_id,
            "batch": 0,
            "bk_cloud_id": h.bk_cloud_id,
            "ip": h.ip,
            "ipv6": h.ipv6,
            "agent_id": h.agent_id,
            "status": int(HostStatus.WAITING),
            "error_code": 0,
            "tag": "",
            "log_size": 0,
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
        step_values={"config": req.config},
    )
    job_id, step_ids = await submitter.engine.submit(job, req.start)
    return job_id, name, step_ids[0]


def _sample(items: list[Any], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
