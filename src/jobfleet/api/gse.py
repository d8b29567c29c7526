"""The GSE agent queries BlueKing clients make (1.0 over ESB, 2.0 over the gateway)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from fastapi import APIRouter

from jobfleet.api.auditing import audit
from jobfleet.api.auth import CONSOLE_APP, TOKEN_APP
from jobfleet.api.params import INT64, check_range, decimal_int, get_list, get_str, need_int
from jobfleet.api.routing import GSE_V1_PREFIXES, Call, add_api
from jobfleet.api.scope import seen_businesses
from jobfleet.domain import host_addresses, protocol
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.targets import normalize_ip
from jobfleet.engine.procs import (
    AGENT_ABNORMAL,
    OP_FAILED,
    ProcManager,
    ProcOperation,
    Refused,
    account_holders,
    account_of,
    unheld,
)
from jobfleet.store.agent_loads import AgentLoad, AgentLoads
from jobfleet.store.database import now_ms
from jobfleet.store.inventory import Host
from jobfleet.store.procs import ProcStore

RUNNING = 2
NOT_RUNNING = 0
MAX_MESSAGE = 1024 * 1024
MAX_PROC_HOSTS = 5000
# hosts one agent query names: bk-nodeman asks 500 to 2,000 at a time (list_agent_state,
# get_agent_status, get_agent_info), as GSE 2.0 bounds list_agent_state
MAX_QUERY_HOSTS = 5000
MAX_LABELS = 64
MAX_AGENT_ID = 255
GSE_V2_CLUSTER = ("/api/bk-gse/prod/api/v2/cluster",)
GSE_V2_PROC = ("/api/bk-gse/prod/api/v2/proc",)
NO_LOAD = AgentLoad(0.0, 0.0, 0, 0)
NOT_CONNECTED = "the agent is not connected"
UNREACHABLE = "the agent is not reachable"


async def _hosts_by_address(
    call: Call,
) -> tuple[list[tuple[int, str]], dict[tuple[int, str], Host]]:
    wanted: list[tuple[int, str]] = []
    items = get_list(call.params, "hosts")
    if len(items) > MAX_QUERY_HOSTS:
        raise JobError.invalid(
            "hosts", f"more than {MAX_QUERY_HOSTS} hosts: ask for them a part at a time"
        )
    for item in items:
        if not isinstance(item, dict) or not item.get("ip"):
            raise JobError.invalid("hosts")
        wanted.append((_cloud(item, "hosts.bk_cloud_id"), normalize_ip(item["ip"])))
    hosts = await visible(call, await call.services.inventory.by_ips(wanted))
    return wanted, host_addresses.first_by_address(hosts)


def _cloud(host: dict[str, Any], name: str) -> int:
    """A host's ``bk_cloud_id``: an integer, an integral number or ASCII decimal text (0 when
    absent). 0.9, true or other digits name no cloud: read as 0 or 1 they would name
    another host."""
    value = host.get("bk_cloud_id")
    if value is None or value == "":
        return 0
    number = decimal_int(value)
    if number is None:
        raise JobError.invalid(name, f"{str(value)[:64]!r} is not an integer")
    return check_range(name, number, "bk_cloud_id")


async def visible(call: Call, hosts: list[Host]) -> list[Host]:
    """Only hosts of businesses the caller may see (a business set's user: its members'):
    the others are answered as unknown. GSE queries may name no user (an app-level call):
    then the app's businesses decide."""
    caller = call.caller
    seen: set[int] | frozenset[int] | None
    if caller.username:
        seen = await seen_businesses(call.services.identity, caller)
    else:
        seen = caller.app.biz
    return [h for h in hosts if seen is None or h.bk_biz_id in seen]


async def get_agent_status(call: Call) -> dict[str, Any]:
    wanted, found = await _hosts_by_address(call)
    return {
        f"{cloud}:{ip}": {
            "ip": ip,
            "bk_cloud_id": cloud,
            "bk_agent_alive": 1 if (h := found.get((cloud, ip))) and h.alive else 0,
        }
        for cloud, ip in wanted
    }


async def get_agent_info(call: Call) -> dict[str, Any]:
    wanted, found = await _hosts_by_address(call)
    # the known hosts among those asked for (a host found by another address is not)
    return {
        f"{cloud}:{ip}": {
            "ip": ip,
            "bk_cloud_id": cloud,
            "bk_agent_alive": h.alive,
            # what the host's agent said it is ("" for a host no agent ever connected for)
            "version": h.agent_version,
            "parent_ip": "",
            "parent_port": 0,
        }
        for cloud, ip in wanted
        if (h := found.get((cloud, ip))) is not None
    }


async def _agents(call: Call, ids: list[str]) -> dict[str, Host]:
    """The hosts the caller may see, by the agent ids (``"<cloud>:<ip>"`` or an agent id)."""
    return (await KnownHosts.fetch(call, ids)).resolve(ids)


def _split(ids: Iterable[str]) -> tuple[list[tuple[int, str]], set[str]]:
    """(cloud, ip) pairs and the other agent ids."""
    pairs: list[tuple[int, str]] = []
    agent_ids: set[str] = set()
    for agent_id in ids:
        pair = _pair(agent_id)
        if pair is not None:
            pairs.append(pair)
        else:
            agent_ids.add(agent_id)
    return pairs, agent_ids


class KnownHosts:
    """The hosts the caller may see among those many lists of agent ids name, looked up
    once; each list is answered from the hosts its own lookup would have found (by ip,
    by IPv6 address, by agent id), so that one list's hosts never change another's."""

    def __init__(self, hosts: list[Host]) -> None:
        self.by_ip: dict[tuple[int, str], list[Host]] = {}
        self.by_ipv6: dict[tuple[int, str], list[Host]] = {}
        self.by_agent_id: dict[str, list[Host]] = {}
        seen: set[int] = set()
        for h in hosts:
            if h.bk_host_id in seen:
                continue
            seen.add(h.bk_host_id)
            self.by_ip.setdefault((h.bk_cloud_id, h.ip), []).append(h)
            if h.ipv6:
                self.by_ipv6.setdefault((h.bk_cloud_id, h.ipv6), []).append(h)
            if h.agent_id:
                self.by_agent_id.setdefault(h.agent_id, []).append(h)

    @classmethod
    async def fetch(cls, call: Call, ids: Iterable[str]) -> KnownHosts:
        pairs, agent_ids = _split(ids)
        inventory = call.services.inventory
        hosts = await inventory.by_ips(pairs) if pairs else []
        if agent_ids:
            hosts += await inventory.by_agent_ids(agent_ids)
        return cls(await visible(call, hosts))

    def resolve(self, ids: list[str]) -> dict[str, Host]:
        """The host each of ``ids`` names (ids naming none are left out)."""
        # each id parsed once: a request may name thousands
        named = [(agent_id, _pair(agent_id)) for agent_id in ids]
        hosts: list[Host] = []
        for agent_id, address in named:
            if address is None:
                hosts += self.by_agent_id.get(agent_id, [])
                continue
            hosts += self.by_ip.get(address, [])
            if ":" in address[1]:
                hosts += self.by_ipv6.get(address, [])
        by_pair = host_addresses.first_by_address(hosts)
        by_agent = {h.agent_id: h for h in hosts if h.agent_id}
        found: dict[str, Host] = {}
        for agent_id, pair in named:
            host = by_agent.get(agent_id)
            if host is None and pair is not None:
                host = by_pair.get(pair)
            if host is not None:
                found[agent_id] = host
        return found


def _pair(agent_id: str) -> tuple[int, str] | None:
    cloud, sep, ip = agent_id.partition(":")
    # ASCII digits within a row id's range (a cloud past it is no cloud's)
    digits = cloud.lstrip("0")
    if not sep or not (cloud.isascii() and cloud.isdecimal()) or len(digits) > 19:
        return None
    if int(cloud) > INT64[1]:
        return None
    try:
        return int(cloud), normalize_ip(ip)
    except JobError:
        return None


def _agent_ids(call: Call, *, at_most: int = MAX_QUERY_HOSTS) -> list[str]:
    ids = get_list(call.params, "agent_id_list")
    if len(ids) > at_most:
        raise JobError.invalid("agent_id_list", f"more than {at_most} agents")
    return _texts(ids, "agent_id_list")


def _texts(ids: list[Any], name: str) -> list[str]:
    """Agent ids are text, as GSE reads them: anything else is refused."""
    for i, agent_id in enumerate(ids):
        if not isinstance(agent_id, str):
            raise JobError.invalid(f"{name}[{i}]", "an agent id is text")
    return ids


async def list_agent_state(call: Call) -> list[dict[str, Any]]:
    found = await _agents(call, _agent_ids(call))
    if not found:
        raise JobError(ErrorCode.GSE_AGENT_NOT_FOUND, "None of the agent ids were found")
    return [
        {
            "bk_agent_id": agent_id,
            "bk_cloud_id": host.bk_cloud_id,
            "version": host.agent_version,
            "run_mode": 0,
            "status_code": RUNNING if host.alive else NOT_RUNNING,
        }
        for agent_id, host in found.items()
    ]


async def list_agent_info(call: Call) -> list[dict[str, Any]]:
    """GSE 2.0 ``cluster/list_agent_info``: every field bk-nodeman reads."""
    found = await _agents(call, _agent_ids(call))
    if not found:
        raise JobError(ErrorCode.GSE_AGENT_NOT_FOUND, "None of the agent ids were found")
    now = now_ms()
    loads = await AgentLoads(call.services.db).of({h.bk_host_id for h in found.values()})
    out = []
    for agent_id, host in found.items():
        code = RUNNING if host.alive else NOT_RUNNING
        # what the agent last reported (an agent before it reports nothing: zeros)
        load = loads.get(host.bk_host_id) or NO_LOAD
        out.append(
            {
                "code": 0,
                "message": "OK",
                "bk_agent_id": agent_id,
                "bk_cloud_id": host.bk_cloud_id,
                "bk_host_ip": host.ip,
                "bk_os_type": (host.os_type or "linux").lower(),
                "report_time": (load.report_time or now) if host.alive else 0,
                "parent_ip": "",
                "parent_port": 0,
                "version": host.agent_version,
                "cpu_rate": load.cpu,
                "mem_rate": load.mem,
                # seconds, as GSE reports it
                "start_time": load.started // 1000,
                "run_mode": 0,
                "status_code": code,
                "status": "running" if host.alive else "stopped",
                "last_status_code": code,
                "last_status": "running" if host.alive else "stopped",
                "remark": "",
            }
        )
    return out


async def dispatch_message(call: Call) -> dict[str, Any]:
    """GSE 2.0 ``cluster/dispatch_message`` (bk-monitor's shape): hand ``content`` to the
    local plugins listening on ``slot_id`` on each agent."""
    p = call.params
    message_id = get_str(p, "message_id", max_length=64)
    if not message_id:
        raise JobError.missing("message_id")
    ids = _agent_ids(call, at_most=1000)
    if not ids:
        raise JobError.invalid("agent_id_list", "name at least one agent")
    slot_id = need_int(p, "slot_id", minimum=0)
    content = p.get("content")
    if content is None:
        raise JobError.missing("content")
    text = content if isinstance(content, str) else orjson.dumps(content).decode()
    if len(text) > MAX_MESSAGE:
        raise JobError.invalid("content", f"longer than {MAX_MESSAGE} characters")
    found = await _agents(call, ids)
    # a host named by several ids gets the message once; one whose agent is not connected
    # is answered at once, not waited for
    errors = await _procs(call).dispatch(
        sorted({h.bk_host_id for h in found.values() if h.alive}), message_id, slot_id, text
    )
    results = []
    for agent_id in ids:
        host = found.get(agent_id)
        if host is None:
            error: str | None = "the agent does not exist"
        elif not host.alive:
            error = NOT_CONNECTED
        else:
            error = errors.get(host.bk_host_id)
        results.append(
            {
                "bk_agent_id": agent_id,
                "error_code": 0 if error is None else AGENT_ABNORMAL,
                "error_msg": error or "success",
            }
        )
    await audit(
        call,
        "gse_dispatch_message",
        "gse_message",
        message_id,
        detail={"slot_id": slot_id, "agents": len(found)},
    )
    return {"message_id": message_id, "results": results}


# process management ----------------------------------------------------------------------


def _procs(call: Call) -> ProcManager:
    procs = call.services.procs
    if procs is None:
        raise JobError(ErrorCode.NOT_SUPPORTED, "Process management is not available here")
    return procs


def _text(value: Any, name: str, limit: int = 1024) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise JobError.invalid(name)
    text = str(value)
    if len(text) > limit or "\x00" in text:
        raise JobError.invalid(name, f"longer than {limit} characters or holds NUL")
    return text


def _meta(item: dict[str, Any], name: str) -> tuple[str, str]:
    meta = item.get("meta")
    if meta is None:
        raise JobError.missing(f"{name}.meta")
    if not isinstance(meta, dict):
        raise JobError.invalid(f"{name}.meta", "must be an object {namespace, name, labels}")
    namespace = _text(meta.get("namespace"), f"{name}.meta.namespace", 255)
    proc = _text(meta.get("name"), f"{name}.meta.name", 255)
    if not namespace or not proc:
        raise JobError.missing(f"{name}.meta.namespace and name")
    _labels(meta, name)
    return namespace, proc


def _labels(meta: dict[str, Any], name: str) -> dict[str, str]:
    """``meta.labels``: a small object of text (a status answer echoes it for every host)."""
    labels = meta.get("labels") or {}
    where = f"{name}.meta.labels"
    if not isinstance(labels, dict):
        raise JobError.invalid(where, "must be an object")
    if len(labels) > MAX_LABELS:
        raise JobError.invalid(where, f"more than {MAX_LABELS} labels")
    return {_text(k, where, 255): _text(v, where, 1024) for k, v in labels.items()}


def _spec(item: dict[str, Any], name: str, *, need: bool) -> protocol.ProcSpec:
    """GSE's ``meta`` + ``spec`` (identity, control, monitor policy) as the agent reads it."""
    namespace, proc = _meta(item, name)
    spec = item.get("spec") or {}
    if not isinstance(spec, dict):
        raise JobError.invalid(f"{name}.spec")
    identity = spec.get("identity") or {}
    control = spec.get("control") or {}
    policy = spec.get("alive_monitor_policy") or spec.get("monitor_policy") or {}
    if not all(isinstance(x, dict) for x in (identity, control, policy)):
        raise JobError.invalid(f"{name}.spec")

    def ident(key: str, limit: int = 4096) -> str:
        return _text(identity.get(key), f"{name}.spec.identity.{key}", limit)

    def cmd(key: str) -> str:
        return _text(control.get(key), f"{name}.spec.control.{key}", 8192)

    setup_path = ident("setup_path")
    pid_file = ident("pid_path")
    if need and (not setup_path or not pid_file):
        raise JobError.missing(f"{name}.spec.identity.setup_path and pid_path")
    for path, key in ((setup_path, "setup_path"), (pid_file, "pid_path")):
        if path and not path.startswith("/"):
            raise JobError.invalid(f"{name}.spec.identity.{key}", "must be an absolute path")
    # null (a CMDB process that sets none, as bk-nodeman passes it on) is the default
    check = policy.get("start_check_secs")
    if check is None:
        check = 5
    if not isinstance(check, int) or isinstance(check, bool) or not 0 <= check <= 600:
        raise JobError.invalid(f"{name}.spec.alive_monitor_policy.start_check_secs")
    return {
        "namespace": namespace,
        "name": proc,
        "proc_name": ident("proc_name", 255) or proc,
        "setup_path": setup_path,
        "pid_file": pid_file,
        "account": ident("user", 255),
        "start_cmd": cmd("start_cmd"),
        "stop_cmd": cmd("stop_cmd"),
        "restart_cmd": cmd("restart_cmd"),
        "reload_cmd": cmd("reload_cmd"),
        "kill_cmd": cmd("kill_cmd"),
        "start_check_secs": check or 5,
    }


async def _targets(call: Call, item: dict[str, Any], name: str) -> dict[str, Host]:
    """The hosts of one request item, by ``agent_id_list`` or by ``hosts`` [{ip, bk_cloud_id}];
    ids naming no host the caller may use are left out (bk-nodeman counts a host missing
    from a status answer as unregistered)."""
    ids = _target_ids(item, name)
    hosts, _missing = _named_hosts(ids, await _agents(call, ids))
    return hosts


def _target_ids(item: dict[str, Any], name: str) -> list[str]:
    """The agent ids one request item names (``"<cloud>:<ip>"`` for its ``hosts``)."""
    ids: list[str] = []
    if item.get("agent_id_list") is not None:
        ids = _texts(get_list(item, "agent_id_list"), f"{name}.agent_id_list")
    for host in get_list(item, "hosts") if item.get("hosts") is not None else []:
        if not isinstance(host, dict) or not host.get("ip"):
            raise JobError.invalid(f"{name}.hosts")
        # an address that is none is a malformed request, not an agent nobody knows; the
        # answer keeps the address as the caller wrote it
        try:
            normalize_ip(host["ip"])
        except JobError:
            raise JobError.invalid(
                f"{name}.hosts.ip", f"{str(host['ip'])[:64]!r} is not an IP address"
            ) from None
        ids.append(f"{_cloud(host, f'{name}.hosts.bk_cloud_id')}:{host['ip']}")
    if not ids:
        raise JobError.missing(f"{name}.agent_id_list")
    if len(ids) > MAX_PROC_HOSTS:
        raise JobError.invalid(f"{name}.agent_id_list", f"more than {MAX_PROC_HOSTS} hosts")
    # each result keeps the id its host was named by, in a column this wide
    if any(len(i) > MAX_AGENT_ID for i in ids):
        raise JobError.invalid(
            f"{name}.agent_id_list", f"an agent id is longer than {MAX_AGENT_ID} characters"
        )
    return ids


def _named_hosts(ids: list[str], found: dict[str, Host]) -> tuple[dict[str, Host], list[str]]:
    """Each host ``ids`` name once, by the first id naming it; and the ids naming no host
    the caller may use, each once, in order."""
    missing = list(dict.fromkeys(i for i in ids if i not in found))
    # a host named twice ("0:10.0.0.1" and its bk_agent_id, or "00:10.0.0.1") is one host
    seen: set[int] = set()
    unique: dict[str, Host] = {}
    for agent_id, host in found.items():
        if host.bk_host_id not in seen:
            seen.add(host.bk_host_id)
            unique[agent_id] = host
    return unique, missing


def _entry(item: Any, where: str) -> tuple[int, protocol.ProcSpec, list[str]]:
    """What one entry asks, checked as far as it can be without the database."""
    if not isinstance(item, dict):
        raise JobError.invalid(where)
    op = item.get("op_type")
    if not isinstance(op, int) or isinstance(op, bool) or op not in protocol.PROC_OPS:
        raise JobError.invalid(f"{where}.op_type", f"one of {list(protocol.PROC_OPS)}")
    starts = op in (protocol.PROC_START, protocol.PROC_RESTART, protocol.PROC_DELEGATE)
    spec = _spec(item, where, need=starts)
    return op, spec, _target_ids(item, where)


async def _operate(call: Call, items: list[Any], name: str) -> dict[str, Any]:
    if not items:
        raise JobError.missing(name)
    # bk-nodeman sends an entry for each host and plugin: what bounds a request is the
    # host operations it asks for in all
    if len(items) > MAX_PROC_HOSTS:
        raise JobError.invalid(name, f"more than {MAX_PROC_HOSTS} host operations")
    # the entries in order, up to the first one refused before the database is asked: its
    # answer comes once every entry before it has passed every check
    entries: list[tuple[str, int, protocol.ProcSpec, list[str]]] = []
    refused: JobError | None = None
    for i, item in enumerate(items):
        where = f"{name}[{i}]"
        try:
            entries.append((where, *_entry(item, where)))
        except JobError as exc:
            refused = exc
            break
    # every entry's hosts, and every account on every business it names, in a few queries
    known = await KnownHosts.fetch(call, [i for *_, ids in entries for i in ids])
    targets: list[tuple[dict[str, Host], list[str]]] = []
    wanted: dict[str, set[int]] = {}
    for where, op, spec, ids in entries:
        hosts, missing = _named_hosts(ids, known.resolve(ids))
        targets.append((hosts, missing))
        with contextlib.suppress(JobError):
            if (account := account_of(op, spec, where)) is not None:
                wanted.setdefault(account, set()).update(h.bk_biz_id for h in hosts.values())
    holders = await account_holders(call.services.accounts, wanted)
    total = 0
    operations: list[ProcOperation] = []
    biz_ids: set[int] = set()
    # one operation per process per host: a task stores one result for each
    taken: set[tuple[int | str, str, str]] = set()
    for (where, op, spec, _ids), (hosts, missing) in zip(entries, targets, strict=True):
        total += len(hosts) + len(missing)
        if total > MAX_PROC_HOSTS:
            raise JobError.invalid(name, f"more than {MAX_PROC_HOSTS} host operations")
        # an unknown agent is answered under the id it was named by: one answer an id
        named: list[tuple[int | str, str]] = [(h.bk_host_id, a) for a, h in hosts.items()]
        for agent_id, target in [*named, *((a, a) for a in missing)]:
            key = (target, spec["namespace"], spec["name"])
            if key in taken:
                raise JobError.invalid(
                    where,
                    f"process {spec['namespace']}/{spec['name']} on agent {agent_id} is "
                    "already operated on in this request",
                )
            taken.add(key)
        businesses = {h.bk_biz_id for h in hosts.values()}
        # a host of a business that lacks the account is refused on its own; one whose
        # agent is not connected is answered at once, not waited for in a slot others need
        lacking = unheld(op, spec, businesses, where, holders)
        biz_ids.update(businesses)
        asked: list[tuple[int, str]] = []
        refusals: list[Refused] = []
        for a, h in hosts.items():
            if h.bk_biz_id in lacking:
                refusals.append(Refused(h.bk_host_id, a, OP_FAILED, lacking[h.bk_biz_id]))
            elif not h.alive:
                refusals.append(Refused(h.bk_host_id, a, AGENT_ABNORMAL, NOT_CONNECTED))
            else:
                asked.append((h.bk_host_id, a))
        refusals += (Refused.not_found(a) for a in missing)
        operations.append(ProcOperation(op, spec, asked, refusals))
    if refused is not None:
        raise refused
    task_id = await _procs(call).operate(
        operations,
        biz_ids=sorted(biz_ids),
        operator=call.caller.username,
        app_code=call.caller.app_code,
    )
    await audit(
        call,
        "gse_operate_proc",
        "gse_proc_task",
        task_id,
        detail={
            "operations": [
                {
                    "op_type": o.op,
                    "namespace": o.spec["namespace"],
                    "name": o.spec["name"],
                    "hosts": [h for h, _a in o.hosts],
                    # what each refused host was named by, in part: the row stays small
                    "refused": [
                        {"host": r.bk_host_id, "agent_id": r.agent_id[:64], "code": r.code}
                        for r in o.refused
                    ],
                }
                for o in operations
            ]
        },
    )
    return {"task_id": task_id}


async def operate_proc_multi(call: Call) -> dict[str, Any]:
    return await _operate(call, get_list(call.params, "proc_operate_req"), "proc_operate_req")


async def operate_proc(call: Call) -> dict[str, Any]:
    """GSE 1.0: one operation, ``meta`` + ``hosts`` + ``op_type`` (+ ``spec``) at the top."""
    return await _operate(call, [call.params], "request")


async def get_proc_operate_result(call: Call) -> dict[str, Any]:
    task_id = get_str(call.params, "task_id", max_length=64)
    if not task_id:
        raise JobError.missing("task_id")
    store = ProcStore(call.services.db)
    task = await store.operation(task_id)
    # a task that touched no host (every agent unknown) is its own app's only, and of
    # the console or personal tokens, which all people share, its own person's
    caller = call.caller
    people = caller.app_code in (CONSOLE_APP.app_code, TOKEN_APP.app_code)
    if (
        task is None
        or not caller.app.may_touch(set(task.biz_ids))
        or (
            not task.biz_ids
            and (
                task.app_code != caller.app_code
                or (people and task.operator != caller.username)
            )
        )
    ):
        raise JobError(ErrorCode.NOT_FOUND, f"Process operation task {task_id} does not exist")
    seen = await seen_businesses(call.services.identity, caller) if caller.username else None
    if seen is not None and not seen.issuperset(task.biz_ids):
        raise JobError(ErrorCode.NOT_FOUND, f"Process operation task {task_id} does not exist")
    return {
        f"{r.agent_id}:{r.namespace}:{r.name}": {
            "bk_agent_id": r.agent_id,
            "error_code": r.error_code,
            "error_msg": r.error_msg,
            "content": r.content,
        }
        for r in await store.results(task_id)
    }


async def get_proc_status(call: Call) -> dict[str, Any]:
    """``get_proc_status_v2`` (and 1.0's ``get_proc_status``): each host's process, asked live.
    ``status``: 0 unregistered, 1 running, 2 stopped; ``isauto``: delegated (kept alive)."""
    p = call.params
    spec = _spec(p, "request", need=False)
    hosts = await _targets(call, p, "request")
    labels = _labels(p["meta"], "request")
    # an agent that is not connected is answered at once: waiting for each in turn would
    # hold the answer for every other host
    asked = await _procs(call).status(
        [(h.bk_host_id, agent_id) for agent_id, h in hosts.items() if h.alive], spec
    )
    states = {host_id: (state, why) for host_id, _agent_id, state, why in asked}
    infos = []
    for agent_id, host in hosts.items():
        answered, why = states.get(host.bk_host_id) or (None, "")
        state = answered or {}
        # no state from a connected agent: it did not answer (the status is not known), or
        # said why it has none
        message = NOT_CONNECTED if not host.alive else "" if state else why or UNREACHABLE
        infos.append(
            {
                "bk_agent_id": agent_id,
                "host": {"ip": host.ip, "bk_cloud_id": host.bk_cloud_id, "bk_agent_id": agent_id},
                "meta": {
                    "namespace": spec["namespace"],
                    "name": spec["name"],
                    "labels": labels,
                },
                "status": int(state.get("status", 0)),
                "isauto": bool(state.get("delegated")),
                "version": "",
                "pid": int(state.get("pid", -1)),
                "restarts": int(state.get("restarts", 0)),
                "last_start_time": int(state.get("start_time", 0)) // 1000,
                "message": message,
            }
        )
    return {"proc_infos": infos}


async def proc_create_session(call: Call) -> dict[str, Any]:
    """GSE 1.0 (bk-log's SDK): a session to run process commands in; sessions hold nothing."""
    return {"session_id": uuid.uuid4().hex}


def register(router: APIRouter) -> None:
    v1 = GSE_V1_PREFIXES
    # bk-nodeman's GSE 1.0 adapter makes its process calls over ESB by the 2.0 names
    for name, handler in (
        ("get_agent_status", get_agent_status),
        ("get_agent_info", get_agent_info),
        ("get_proc_status", get_proc_status),
        ("get_proc_status_v2", get_proc_status),
        ("get_proc_operate_result", get_proc_operate_result),
        ("get_proc_operate_result_v2", get_proc_operate_result),
        ("proc_get_task_result_by_id", get_proc_operate_result),
    ):
        add_api(router, name, handler, query=True, prefixes=v1, need_user=False)
    for name, handler in (
        ("operate_proc", operate_proc),
        ("operate_proc_v2", operate_proc),
        ("operate_proc_multi", operate_proc_multi),
        ("proc_run_command", operate_proc),
        ("proc_create_session", proc_create_session),
    ):
        add_api(router, name, handler, query=False, prefixes=v1, need_user=False)
    for name, listing in (
        ("list_agent_state", list_agent_state),
        ("list_agent_info", list_agent_info),
    ):
        add_api(router, name, listing, query=True, prefixes=GSE_V2_CLUSTER, need_user=False)
    add_api(
        router,
        "dispatch_message",
        dispatch_message,
        query=False,
        prefixes=GSE_V2_CLUSTER,
        need_user=False,
    )
    for name, handler in (
        ("get_proc_status_v2", get_proc_status),
        ("get_proc_operate_result_v2", get_proc_operate_result),
    ):
        add_api(router, name, handler, query=True, prefixes=GSE_V2_PROC, need_user=False)
    add_api(
        router,
        "operate_proc_multi",
        operate_proc_multi,
        query=False,
        prefixes=GSE_V2_PROC,
        need_user=False,
    )
