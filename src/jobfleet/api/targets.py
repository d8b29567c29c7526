"""What a launch form's target selection holds, before anything is launched.

``POST /api/jobfleet/v1/targets/count`` takes a bk-job ``target_server`` (ip_list,
host_id_list, topo_node_list, dynamic_group_list), resolves it exactly as
``fast_execute_script`` would, and answers how many hosts it names and how many of
them have an agent online. The console's quick-execute and file pages ask it as the
selection changes; ``target_choices`` gives those pages the business's sets, modules
and dynamic groups to pick from.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jobfleet.api.routing import Call, add_own
from jobfleet.api.services import Services
from jobfleet.domain.targets import parse_target
from jobfleet.store.topology import MODULE, SET, TopologyStore

# a count may name more hosts than one step may target: it says how many there are
MAX_COUNTED = 1_000_000
# hosts listed back by address, so a form can show which are offline
DEAD_SAMPLE = 20


async def count_targets(call: Call) -> dict[str, Any]:
    scope = await call.scope("quick_execute_script")
    spec = parse_target(call.params.get("target_server"))
    hosts = await call.services.submitter.resolve_hosts(spec, scope, limit=MAX_COUNTED)
    dead = [h for h in hosts if not h.alive]
    return {
        "total": len(hosts),
        "alive": len(hosts) - len(dead),
        "dead": len(dead),
        "dead_sample": [f"{h.bk_cloud_id}:{h.ip}" for h in dead[:DEAD_SAMPLE]],
    }


async def target_choices(services: Services, bk_biz_id: int) -> dict[str, Any]:
    """The sets (each with its modules) and dynamic groups of a business."""
    store = TopologyStore(services.db)
    nodes = await store.nodes_of(bk_biz_id)
    sets = {n.id: {"id": n.id, "name": n.name, "modules": []} for n in nodes if n.node_type == SET}
    for node in nodes:
        if node.node_type == MODULE and node.parent_id in sets:
            sets[node.parent_id]["modules"].append({"id": node.id, "name": node.name})
    groups = [{"id": g.id, "name": g.name} for g in await store.groups([bk_biz_id])]
    return {"sets": list(sets.values()), "groups": groups}


def register(router: APIRouter) -> None:
    add_own(router, "POST", "/targets/count", count_targets)
