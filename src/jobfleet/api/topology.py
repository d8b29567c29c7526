"""jobfleet's own REST for what targets name: business topology, dynamic groups, whitelist.

docs/topology.md describes the model; docs/rest-api.md lists the routes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jobfleet.api.admin import admin_only
from jobfleet.api.auditing import audit
from jobfleet.api.params import get_bool, get_int, get_list, get_str, need_int
from jobfleet.api.routing import Call, Handler, add_own
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.host_filters import HostFilter, parse_filter
from jobfleet.domain.status import ScopeType
from jobfleet.domain.targets import normalize_ip
from jobfleet.engine.submit import Scope
from jobfleet.store.host_whitelist import ACTION_SCOPES, HostWhitelist, whitelist_view
from jobfleet.store.topology import (
    MODULE,
    SET,
    TopologyStore,
    group_view,
)

VIEW_TOPOLOGY = "view_topology"
MANAGE_TOPOLOGY = "manage_topology"
VIEW_GROUP = "view_dynamic_group"
MANAGE_GROUP = "manage_dynamic_group"


def _store(call: Call) -> TopologyStore:
    return TopologyStore(call.services.db)


def _whitelist(call: Call) -> HostWhitelist:
    return HostWhitelist(call.services.db)


async def _biz(call: Call, action: str) -> Scope:
    """Topology and dynamic groups belong to one business."""
    scope = await call.scope(action)
    if scope.scope_type != ScopeType.BIZ:
        raise JobError(
            ErrorCode.NOT_SUPPORTED,
            f"Topology and dynamic groups belong to a business: use bk_scope_type biz, "
            f"not {scope.scope_type}",
        )
    return scope


def _ids(params: dict[str, Any], name: str) -> list[int]:
    return [need_int({name: raw}, name, minimum=1) for raw in get_list(params, name)]


# --- sets and modules -------------------------------------------------------------------


async def get_topology(call: Call) -> dict[str, Any]:
    scope = await _biz(call, VIEW_TOPOLOGY)
    return await _store(call).tree(scope.bk_biz_id)


async def create_set(call: Call) -> dict[str, Any]:
    scope = await _biz(call, MANAGE_TOPOLOGY)
    node = await _store(call).create_set(scope.bk_biz_id, get_str(call.params, "name") or "")
    await audit(
        call, "create_set", "topo_node", node["id"], scope=scope, detail={"name": node["name"]}
    )
    return node


async def create_module(call: Call) -> dict[str, Any]:
    scope = await _biz(call, MANAGE_TOPOLOGY)
    set_id = need_int(call.params, "set_id", minimum=1)
    node = await _store(call).create_module(
        scope.bk_biz_id, set_id, get_str(call.params, "name") or ""
    )
    await audit(
        call,
        "create_module",
        "topo_node",
        node["id"],
        scope=scope,
        detail={"name": node["name"], "set": set_id},
    )
    return node


def _rename(node_type: str) -> Handler:
    async def handler(call: Call) -> dict[str, Any]:
        scope = await _biz(call, MANAGE_TOPOLOGY)
        node_id = need_int(call.params, "id", minimum=1)
        node = await _store(call).rename(
            scope.bk_biz_id, node_id, node_type, get_str(call.params, "name") or ""
        )
        await audit(
            call,
            f"update_{node_type}",
            "topo_node",
            node_id,
            scope=scope,
            detail={"name": node["name"]},
        )
        return node

    return handler


def _delete(node_type: str) -> Handler:
    async def handler(call: Call) -> dict[str, Any]:
        scope = await _biz(call, MANAGE_TOPOLOGY)
        node_id = need_int(call.params, "id", minimum=1)
        node = await _store(call).delete_node(scope.bk_biz_id, node_id, node_type)
        await audit(
            call,
            f"delete_{node_type}",
            "topo_node",
            node_id,
            scope=scope,
            detail={"name": node["name"]},
        )
        return node

    return handler


async def move_hosts(call: Call) -> dict[str, Any]:
    scope = await _biz(call, MANAGE_TOPOLOGY)
    p = call.params
    host_ids = _ids(p, "bk_host_ids")
    if not host_ids:
        raise JobError.missing("bk_host_ids")
    module_ids = _ids(p, "module_ids")
    increment = get_bool(p, "is_increment", False)
    if increment and not module_ids:
        raise JobError.missing("module_ids")
    await _store(call).move_hosts(scope.bk_biz_id, host_ids, module_ids, increment)
    detail = {"hosts": host_ids, "modules": module_ids, "is_increment": increment}
    await audit(call, "transfer_host_module", "host_module", "", scope=scope, detail=detail)
    return {"bk_host_ids": sorted(set(host_ids)), "module_ids": sorted(set(module_ids))}


# --- dynamic groups -----------------------------------------------------------------


async def list_groups(call: Call) -> list[dict[str, Any]]:
    scope = await _biz(call, VIEW_GROUP)
    return [group_view(r) for r in await _store(call).groups([scope.bk_biz_id])]


async def create_group(call: Call) -> dict[str, Any]:
    scope = await _biz(call, MANAGE_GROUP)
    p = call.params
    if p.get("filter") is None:
        raise JobError.missing("filter")
    row = await _store(call).create_group(
        scope.bk_biz_id,
        name=get_str(p, "name") or "",
        host_filter=parse_filter(p["filter"]),
        description=get_str(p, "description", max_length=1024) or "",
        creator=call.caller.username,
        group_id=get_str(p, "id", max_length=64),
    )
    await audit(
        call,
        "create_dynamic_group",
        "dynamic_group",
        row.id,
        scope=scope,
        detail={"name": row.name},
    )
    return group_view(row)


async def get_group(call: Call) -> dict[str, Any]:
    scope = await _biz(call, VIEW_GROUP)
    return group_view(await _store(call).group(scope.bk_biz_id, str(call.params["id"])))


async def update_group(call: Call) -> dict[str, Any]:
    scope = await _biz(call, MANAGE_GROUP)
    p = call.params
    raw_filter = p.get("filter")
    row = await _store(call).update_group(
        scope.bk_biz_id,
        str(p["id"]),
        user=call.caller.username,
        name=get_str(p, "name", required=True) if "name" in p else None,
        host_filter=None if raw_filter is None else parse_filter(raw_filter),
        description=(get_str(p, "description", max_length=1024) or "")
        if "description" in p
        else None,
    )
    await audit(
        call,
        "update_dynamic_group",
        "dynamic_group",
        row.id,
        scope=scope,
        detail={"name": row.name},
    )
    return group_view(row)


async def delete_group(call: Call) -> dict[str, Any]:
    scope = await _biz(call, MANAGE_GROUP)
    row = await _store(call).delete_group(scope.bk_biz_id, str(call.params["id"]))
    await audit(
        call,
        "delete_dynamic_group",
        "dynamic_group",
        row.id,
        scope=scope,
        detail={"name": row.name},
    )
    return group_view(row)


async def _matching(call: Call, scope: Scope, host_filter: HostFilter) -> dict[str, Any]:
    matched = (await call.services.inventory.matching([(scope.bk_biz_id, host_filter)]))[0]
    return {
        "bk_biz_id": scope.bk_biz_id,
        "total": len(matched),
        "hosts": [h.public() for h in matched],
    }


async def group_hosts(call: Call) -> dict[str, Any]:
    """The hosts a saved group matches now."""
    scope = await _biz(call, VIEW_GROUP)
    row = await _store(call).group(scope.bk_biz_id, str(call.params["id"]))
    return await _matching(call, scope, parse_filter(row.filter))


async def preview_filter(call: Call) -> dict[str, Any]:
    """The hosts a filter would match, before it is saved."""
    scope = await _biz(call, VIEW_GROUP)
    if call.params.get("filter") is None:
        raise JobError.missing("filter")
    return await _matching(call, scope, parse_filter(call.params["filter"]))


# --- host whitelist (administrators) ------------------------------------------------


async def list_whitelist(call: Call) -> list[dict[str, Any]]:
    rows = await _whitelist(call).whitelist()
    hosts = {
        h.bk_host_id: h for h in await call.services.inventory.by_ids([r.bk_host_id for r in rows])
    }
    return [whitelist_view(r, hosts.get(r.bk_host_id)) for r in rows]


async def add_whitelist(call: Call) -> dict[str, Any]:
    p = call.params
    inventory = call.services.inventory
    host_id = get_int(p, "bk_host_id", minimum=1)
    if host_id is not None:
        found = await inventory.by_ids([host_id])
        named = str(host_id)
    else:
        if get_str(p, "ip") is None:
            raise JobError.missing("bk_host_id|ip")
        ip = normalize_ip(p["ip"])
        cloud = get_int(p, "bk_cloud_id", default=0, minimum=0) or 0
        named = f"{cloud}:{ip}"
        found = [h for h in await inventory.by_ips([(cloud, ip)]) if h.ip == ip]
    if not found:
        code = ErrorCode.HOST_ID_NOT_IN_CMDB if host_id is not None else ErrorCode.IP_NOT_IN_CMDB
        raise JobError(code, f"Host {named} does not exist")
    biz_ids = _ids(p, "biz_ids")
    if not biz_ids:
        raise JobError.missing("biz_ids")
    scopes = [str(s) for s in get_list(p, "action_scopes")] or list(ACTION_SCOPES)
    bad = [s for s in scopes if s not in ACTION_SCOPES]
    if bad:
        raise JobError.invalid("action_scopes", f"{bad} not in {list(ACTION_SCOPES)}")
    row = await _whitelist(call).add_whitelist(
        found[0].bk_host_id,
        biz_ids,
        scopes,
        get_str(p, "remark", max_length=1024) or "",
        call.caller.username,
    )
    return whitelist_view(row, found[0])


async def delete_whitelist(call: Call) -> dict[str, Any]:
    row = await _whitelist(call).delete_whitelist(need_int(call.params, "id", minimum=1))
    found = await call.services.inventory.by_ids([row.bk_host_id])
    return whitelist_view(row, found[0] if found else None)


def register(router: APIRouter) -> None:
    def add(method: str, path: str, handler: Handler, *, admin: str | None = None) -> None:
        """``admin``: an administration route, audited under that name ("" for reads)."""
        # path parameters win over a body's keys of the same name
        add_own(router, method, path, admin_only(admin, handler) if admin is not None else handler)

    add("GET", "/topology", get_topology)
    add("POST", "/topology/sets", create_set)
    add("PUT", "/topology/sets/{id}", _rename(SET))
    add("DELETE", "/topology/sets/{id}", _delete(SET))
    add("POST", "/topology/modules", create_module)
    add("PUT", "/topology/modules/{id}", _rename(MODULE))
    add("DELETE", "/topology/modules/{id}", _delete(MODULE))
    add("POST", "/topology/hosts/move", move_hosts)
    add("GET", "/dynamic-groups", list_groups)
    add("POST", "/dynamic-groups", create_group)
    add("POST", "/dynamic-groups/preview", preview_filter)
    add("GET", "/dynamic-groups/{id}", get_group)
    add("PUT", "/dynamic-groups/{id}", update_group)
    add("DELETE", "/dynamic-groups/{id}", delete_group)
    add("GET", "/dynamic-groups/{id}/hosts", group_hosts)
    add("GET", "/host-whitelist", list_whitelist, admin="")
    add("POST", "/host-whitelist", add_whitelist, admin="add_whitelist")
    add("DELETE", "/host-whitelist/{id}", delete_whitelist, admin="delete_whitelist")
