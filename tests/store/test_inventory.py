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


async def test_the_host_list_says_when_each_agent_was_last_seen(db: Database) -> None:
    """GET /hosts and `jobfleet hosts` show it: when a dead host's agent went away."""
    inv = Inventory(db)
    a = await inv.add(2, "127.0.0.21")
    b = await inv.add(2, "127.0.0.22")
    assert [h.public()["last_seen"] for h in await inv.list(bk_biz_id=2)] == [None, None]
    await inv.record_presence("node-1", {a.bk_host_id: {}, b.bk_host_id: {}}, set(), 1000)
    await inv.record_presence("node-1", {}, {b.bk_host_id}, 2500)
    listed = {h.bk_host_id: h.public() for h in await inv.list(bk_biz_id=2)}
    assert listed[a.bk_host_id]["last_seen"] == 1000
    assert listed[b.bk_host_id]["last_seen"] == 2500
    assert [h.public()["last_seen"] for h in await inv.by_ids([b.bk_host_id])] == [2500]


async def test_the_home_pages_counts_tell_a_dead_agent_from_none(db: Database) -> None:
    """A host added by hand that never had an agent is "not installed", as the hosts page
    counts it, not a dead agent."""
    from sqlalchemy import update

    from jobfleet.store.tables import hosts

    inv = Inventory(db)
    alive, dead, _bare = [await inv.add(2, f"127.0.0.3{i}") for i in range(3)]
    async with db.begin() as conn:
        for host in (alive, dead):
            await conn.execute(update(hosts).where(hosts.c.bk_host_id == host.bk_host_id)
                               .values(agent_id=f"agent-{host.bk_host_id}"))
    await inv.record_presence("node-1", {alive.bk_host_id: {}}, set(), 1000)
    assert await inv.alive_counts([2, 3]) == {2: (1, 1, 1), 3: (0, 0, 0)}


async def test_a_host_named_by_its_ip_and_its_ipv6_at_once_is_found_once(db: Database) -> None:
    """Alerts of one batch (or a log query) naming a host by both its addresses: the host
    is one claimant of its IPv6 address, not two, so the address still names it."""
    from sqlalchemy import update

    from jobfleet.store.tables import hosts

    inv = Inventory(db)
    host = await inv.add(2, "127.0.0.41")
    async with db.begin() as conn:
        await conn.execute(update(hosts).where(hosts.c.bk_host_id == host.bk_host_id)
                           .values(ipv6="::ffff:127.0.4.1"))
    found = await inv.by_ips([(0, "127.0.0.41"), (0, "::ffff:127.0.4.1")])
    assert [h.bk_host_id for h in found] == [host.bk_host_id]
