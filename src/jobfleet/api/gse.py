"""The GSE agent queries BlueKing clients make (1.0 over ESB, 2.0 over the gateway)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jobfleet import __version__
from jobfleet.api.params import get_list
from jobfleet.api.routing import GSE_V1_PREFIXES, Call, add_api
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import ScopeType
from jobfleet.domain.targets import normalize_ip
from jobfleet.store.inventory import Host

RUNNING = 2
NOT_RUNNING = 0


async def _hosts_by_address(
    call: Call,
) -> tuple[list[tuple[int, str]], dict[tuple[int, str], Host]]:
    wanted: list[tuple[int, str]] = []
    for item in get_list(call.params, "hosts"):
        if not isinstance(item, dict) or not item.get("ip"):
            raise JobError.invalid("hosts")
        try:
            wanted.append((int(item.get("bk_cloud_id") or 0), normalize_ip(item["ip"])))
        except (TypeError, ValueError):
            raise JobError.invalid("hosts.bk_cloud_id") from None
    hosts = visible(call, await call.services.inventory.by_ips(wanted))
    found = {(h.bk_cloud_id, h.ip): h for h in hosts}
    return wanted, found


def visible(call: Call, hosts: list[Host]) -> list[Host]:
    """Only hosts of businesses the caller may see: the others are answered as unknown.
    GSE queries may name no user (an app-level call): then the app's businesses decide."""
    caller = call.caller
    return [
        h
        for h in hosts
        if caller.app.may_touch({h.bk_biz_id})
        and (not caller.username or caller.user.holds(ScopeType.BIZ, str(h.bk_biz_id)))
    ]


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
    _wanted, found = await _hosts_by_address(call)
    return {
        f"{cloud}:{ip}": {
            "ip": ip,
            "bk_cloud_id": cloud,
            "bk_agent_alive": h.alive,
            "version": h.agent_version or __version__,
            "parent_ip": "",
            "parent_port": 0,
        }
        for (cloud, ip), h in found.items()
    }


async def list_agent_state(call: Call) -> list[dict[str, Any]]:
    ids = [str(i) for i in get_list(call.params, "agent_id_list")]
    pairs: list[tuple[int, str]] = []
    agent_ids: list[str] = []
    for agent_id in ids:
        cloud, sep, ip = agent_id.partition(":")
        if sep and cloud.isdigit():
            try:
                pairs.append((int(cloud), normalize_ip(ip)))
                continue
            except JobError:
                pass
        agent_ids.append(agent_id)
    inventory = call.services.inventory
    hosts = await inventory.by_ips(pairs) if pairs else []
    if agent_ids:
        hosts += [h for h in await inventory.list() if h.agent_id in set(agent_ids)]
    hosts = visible(call, hosts)
    out: list[dict[str, Any]] = []
    by_pair = {(h.bk_cloud_id, h.ip): h for h in hosts}
    by_agent = {h.agent_id: h for h in hosts if h.agent_id}
    for agent_id in ids:
        cloud, _sep, ip = agent_id.partition(":")
        host = by_agent.get(agent_id)
        if host is None and cloud.isdigit():
            try:
                host = by_pair.get((int(cloud), normalize_ip(ip)))
            except JobError:
                host = None
        if host is not None:
            out.append(
                {
                    "bk_agent_id": agent_id,
                    "bk_cloud_id": host.bk_cloud_id,
                    "version": host.agent_version or __version__,
                    "run_mode": 0,
                    "status_code": RUNNING if host.alive else NOT_RUNNING,
                }
            )
    if not out:
        raise JobError(ErrorCode.GSE_AGENT_NOT_FOUND, "None of the agent ids were found")
    return out


def register(router: APIRouter) -> None:
    for name, handler in (
        ("get_agent_status", get_agent_status),
        ("get_agent_info", get_agent_info),
    ):
        add_api(router, name, handler, query=True, prefixes=GSE_V1_PREFIXES, need_user=False)
    add_api(
        router,
        "list_agent_state",
        list_agent_state,
        query=True,
        prefixes=("/api/bk-gse/prod/api/v2/cluster",),
        need_user=False,
    )
