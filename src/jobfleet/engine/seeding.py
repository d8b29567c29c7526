"""Source agents that serve their files' pieces to a step's targets themselves.

Without this, a source file crosses to the server whole (``file_upload``) before
any target starts. When the source agent has a peer port, every target of the
step is in a swarm of the source's cloud area, and no speed limit applies, the
server first asks the source to hash its files' pieces and offer them on its
peer port (``file_seed``, one read of each file); the targets' download tasks
then carry those digests and the source's address, and take from the source what
they would have taken from the server. The file crosses to the server only when
a target falls back to it (a lying, refusing or unreachable source): the server
then has the source upload it, checks that what it received has the digests the
targets were given, and serves it (docs/peer-to-peer.md, "A source with a peer
port").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row

from jobfleet.engine.ports import AgentDirectory
from jobfleet.engine.swarms import TOKEN_SLACK, Swarms, swarm_address
from jobfleet.store.inventory import Inventory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedTicket:
    """What a seeding source and the targets share: the transfer, its token and the source."""

    transfer: str
    token: str
    expires: int
    peer: str


def seed_transfer(step: Row[Any], host_id: int) -> str:
    """The transfer under which a seeding source serves its files of ``step``."""
    return f"{step.id}.{step.execute_count}.s{host_id}"


class Seeding:
    def __init__(self, agents: AgentDirectory, inventory: Inventory, swarms: Swarms) -> None:
        self.agents = agents
        self.inventory = inventory
        self.swarms = swarms

    async def plan(
        self, step: Row[Any], cfg: dict[str, Any], targets: list[int]
    ) -> dict[int, SeedTicket]:
        """The source hosts of ``step`` that serve their files themselves, with their ticket."""
        if (
            cfg.get("direction") == "fetch"
            or step.rolling_config
            or cfg.get("upload_speed_limit")
            or cfg.get("download_speed_limit")
            or len(targets) < 2
        ):
            return {}
        sources = {
            int(h)
            for s in cfg.get("sources") or []
            if s.get("kind") not in ("blob", "third_party")
            for h in s.get("host_ids") or []
        }
        if not sources or sources & set(targets):
            return {}
        if not all(swarm_address(self.agents, t) for t in targets):
            return {}
        seeders = {s: a for s in sources if (a := swarm_address(self.agents, s))}
        if not seeders:
            return {}
        clouds = {
            h.bk_host_id: h.bk_cloud_id
            for h in await self.inventory.by_ids(sorted(set(targets) | set(seeders)))
        }
        target_clouds = {clouds.get(t) for t in targets}
        if len(target_clouds) != 1 or None in target_clouds:
            return {}
        expires = int(time.time()) + int(step.timeout) + TOKEN_SLACK
        tickets = {}
        for host_id, address in seeders.items():
            if clouds.get(host_id) not in target_clouds:
                continue
            transfer = seed_transfer(step, host_id)
            tickets[host_id] = SeedTicket(
                transfer, self.swarms.token(transfer, expires), expires, address
            )
        if tickets:
            log.info("seeding step=%s sources=%d targets=%d", step.id, len(tickets), len(targets))
        return tickets
