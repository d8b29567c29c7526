"""Peer-to-peer file distribution: the tracker's part.

When a file step sends files to several targets in one cloud area whose agents
serve pieces (``--peer-port``), the server tells each of them, in its download
task, the pieces of every file with their SHA-256 (computed once as the blob was
stored), the other members of the swarm, and a token for this transfer. The
server seeds each piece to one member first (piece g to member g mod n: no piece
is sent twice while every member lives); members take the rest from each other,
check every piece, and fall back to the server for what no peer gives them.

The token is an HMAC of the transfer and its expiry under a key of this server
process; peers compare it with the one they were given for the same transfer,
so a host that is not a target of this transfer cannot fetch its pieces.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections import defaultdict
from typing import Any

from jobfleet.domain import protocol
from jobfleet.domain.pieces import PIECE_SIZE
from jobfleet.engine.ports import AgentDirectory
from jobfleet.store.blobs import COMPLETE, BlobStore
from jobfleet.store.inventory import Inventory

log = logging.getLogger(__name__)

# a token outlives the step's timeout by this much (a late peer still finishes)
TOKEN_SLACK = 300


def swarm_address(agents: AgentDirectory, host_id: int) -> str:
    """``host:port`` of the host's peer port, or "" (no agent, or none opened)."""
    link = agents.for_host(host_id)
    return str(getattr(link, "swarm", "") or "") if link is not None else ""


class Swarms:
    def __init__(
        self,
        agents: AgentDirectory,
        blobs: BlobStore,
        inventory: Inventory,
        key: bytes | None = None,
    ) -> None:
        self.agents = agents
        self.blobs = blobs
        self.inventory = inventory
        self._key = key or secrets.token_bytes(32)

    def token(self, transfer: str, expires: int) -> str:
        return hmac.new(self._key, f"{transfer}|{expires}".encode(), hashlib.sha256).hexdigest()

    async def plan(
        self,
        transfer: str,
        items: list[protocol.DownloadItem],
        host_ids: list[int],
        timeout: int,
        batches: dict[int, int] | None = None,
    ) -> dict[int, dict[str, Any]]:
        """Each host's ``swarm`` (as ``StepRun.per_host``); adds ``pieces`` to ``items``.

        Hosts whose agent serves no pieces, or that are alone in their cloud
        area, get nothing: they download from the server as before. With rolling
        ``batches`` (host -> batch), a swarm is formed within a batch: hosts of a
        later batch are not downloading yet."""
        addresses: dict[int, str] = {}
        for host_id in host_ids:
            address = swarm_address(self.agents, host_id)
            if address:
                addresses[host_id] = address
        if len(addresses) < 2:
            return {}
        files = [i for i in items if i["blob"] and not i["is_dir"] and (i["size"] or 0) > 0]
        if not files:
            return {}
        clouds: dict[tuple[int, int], list[int]] = defaultdict(list)
        for host in await self.inventory.by_ids(sorted(addresses)):
            batch = (batches or {}).get(host.bk_host_id, 0)
            clouds[(host.bk_cloud_id, batch)].append(host.bk_host_id)
        if all(len(members) < 2 for members in clouds.values()):
            return {}
        stored = await self.blobs.get_many([i["blob"] for i in files if not i.get("pieces")])
        for item in files:
            if item.get("pieces"):
                continue  # hashed by its source agent, which serves it (``engine.seeding``)
            held = stored.get(item["blob"])
            if held is None or held.state != COMPLETE:
                # a served file its source could not upload after a restart: the
                # targets that need it are told by the server that it will not come
                continue
            digests = await self.blobs.pieces(item["blob"])
            item["pieces"] = base64.b64encode(b"".join(digests)).decode()
        expires = int(time.time()) + timeout + TOKEN_SLACK
        token = self.token(transfer, expires)
        per_host: dict[int, dict[str, Any]] = {}
        for cloud, hosts in clouds.items():
            if len(hosts) < 2:
                continue
            members = [addresses[h] for h in hosts]
            for me, host_id in enumerate(hosts):
                swarm: protocol.Swarm = {
                    "transfer": transfer,
                    "token": token,
                    "expires": expires,
                    "piece_size": PIECE_SIZE,
                    "members": members,
                    "me": me,
                }
                per_host[host_id] = {"swarm": swarm}
            log.info(
                "swarm transfer=%s cloud=%s batch=%s members=%d",
                transfer,
                cloud[0],
                cloud[1],
                len(members),
            )
        return per_host
