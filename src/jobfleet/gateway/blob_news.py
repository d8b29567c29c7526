"""News of seeded files between the nodes of a cluster.

A target that cannot use a seeding source asks the server for the file
(``engine.seeding``); its request may reach a node other than the one that drives the
step (a load balancer, an agent connected elsewhere). That node tells the others that
the file is wanted, and the driving node has the source upload it; when that upload
fails, the driving node tells the others the file is lost, so every node answers the
targets 410 instead of letting them wait until their token expires. The news goes on
the bus's fire-and-forget topics: a target asks again every two seconds or so, and a
demand heard for a file lost on the driving node is answered with the loss again, so
news that went astray is sent again.
"""

from __future__ import annotations

import asyncio
import logging

from jobfleet.bus.base import Bus
from jobfleet.logs import Spell
from jobfleet.store.blobs import DEMANDED, LOST, BlobStore

log = logging.getLogger(__name__)

TOPIC = "blob_news"
RETRY = 1.0


class BlobNews:
    def __init__(self, bus: Bus, blobs: BlobStore) -> None:
        self.bus = bus
        self.blobs = blobs
        self._listening: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        # targets ask again every two seconds or so, each time news to send
        self._not_sent = Spell(log, "blob_news_not_sent", back="blob_news_sent_again")

    def start(self) -> None:
        """Only nodes of a cluster need news (one node on its own holds every mark)."""
        if not self.bus.clustered:
            return
        self.blobs.others = self.tell
        self._listening = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        self.blobs.others = None
        tasks = [t for t in (self._listening, *self._sending) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    def tell(self, kind: str, blob_id: str, why: str) -> None:
        task = asyncio.get_running_loop().create_task(self._publish(kind, blob_id, why))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _publish(self, kind: str, blob_id: str, why: str) -> None:
        try:
            await self.bus.publish(
                TOPIC, {"kind": kind, "blob": blob_id, "why": why, "node": self.bus.node_id}
            )
            self._not_sent.ok()
        except Exception as exc:  # the bus is away: the target's next request tells again
            self._not_sent.failed("kind=%s reason=%s", kind, exc)

    async def _listen(self) -> None:
        spell = Spell(log, "blob_news_listen_failed")
        while True:
            try:
                async for event in self.bus.subscribe(TOPIC):
                    self._heard(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                spell.failed("reason=%s", exc)
            await asyncio.sleep(RETRY)

    def _heard(self, event: dict[str, object]) -> None:
        if event.get("node") == self.bus.node_id:
            return  # this node's own news
        blob_id, why = str(event.get("blob") or ""), str(event.get("why") or "")
        if not blob_id:
            return
        if event.get("kind") == DEMANDED:
            self.blobs.heard_demand(blob_id)
        elif event.get("kind") == LOST:
            self.blobs.heard_lost(blob_id, why)
