"""The inventory's presence writes on a real database."""

from __future__ import annotations

from jobfleet.store.database import Database
from jobfleet.store.inventory import Inventory


async def test_presence_is_written_in_one_batch_and_only_the_owner_marks_offline(
    db: Database,
) -> None:
    inv = Inventory(db)
    a = await inv.add(2, "127.0.0.11", hostname="old-name")
    b = await inv.add(2, "127.0.0.12")
    await inv.record_presence(
        "node-1", {a.bk_host_id: {"hostname": None, "os_type": "linux"},
                   b.bk_host_id: {"hostname": "b-host"}}, set(), 1000)
    hosts = {h.bk_host_id: h for h in await inv.by_ids([a.bk_host_id, b.bk_host_id])}
    # a fact not reported (None) keeps the stored value
    assert hosts[a.bk_host_id].hostname == "old-name"
    assert hosts[b.bk_host_id].hostname == "b-host"
    assert all(h.alive for h in hosts.values())
    # b moved to another node: node-1 saying it left does not mark it offline
    await inv.record_presence("node-2", {b.bk_host_id: {}}, set(), 2000)
    await inv.record_presence("node-1", {}, {a.bk_host_id, b.bk_host_id}, 3000)
    hosts = {h.bk_host_id: h for h in await inv.by_ids([a.bk_host_id, b.bk_host_id])}
    assert not hosts[a.bk_host_id].alive
    assert hosts[b.bk_host_id].alive
