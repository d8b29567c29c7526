"""The console's host list on a real database: counts per agent state, filters by
topology node, text, label and group members, and paging."""

from __future__ import annotations

import time

from sqlalchemy import insert

from jobfleet.store.database import Database
from jobfleet.store.host_pages import ALIVE, DEAD, NO_AGENT, HostPages, HostQuery
from jobfleet.store.inventory import Inventory
from jobfleet.store.outbox import OutboxStore
from jobfleet.store.tables import agents, hosts
from jobfleet.store.topology import TopologyStore


async def _fill(db: Database) -> tuple[list[int], int, int, int]:
    """25 hosts of business 2 (10 alive, 10 dead, 5 without an agent), one of
    business 3; a set with two modules holding hosts 0-4 and 5-6."""
    now = int(time.time() * 1000)
    rows = []
    for i in range(25):
        agent = None if i >= 20 else f"agent-{i}"
        rows.append({
            "bk_biz_id": 2, "bk_cloud_id": 0, "ip": f"127.0.{i // 10}.{i}", "ipv6": "",
            "agent_id": agent, "hostname": f"web-{i}" if i % 2 else f"db-{i}",
            "alive": 1 if i < 10 else 0, "labels": {"role": "web" if i % 2 else "db"},
            "last_seen": now if agent else None, "agent_version": "1.2.3",
            "os_type": "linux", "os_name": "Debian", "create_time": now,
        })
    rows.append({**rows[0], "bk_biz_id": 3, "ip": "127.9.9.9", "agent_id": "other"})
    async with db.begin() as conn:
        await conn.execute(insert(hosts), rows)
    ids = sorted(h.bk_host_id for h in await Inventory(db).list(bk_biz_id=2))
    topo = TopologyStore(db)
    a_set = await topo.create_set(2, "backend")
    m1 = await topo.create_module(2, a_set["id"], "api")
    m2 = await topo.create_module(2, a_set["id"], "worker")
    await topo.move_hosts(2, ids[:5], [m1["id"]], False)
    await topo.move_hosts(2, ids[5:7], [m2["id"]], False)
    return ids, a_set["id"], m1["id"], m2["id"]


async def test_counts_and_pages_by_state(db: Database) -> None:
    ids, *_ = await _fill(db)
    pages = HostPages(db)
    everything = HostQuery(bk_biz_id=2)
    assert await pages.counts(everything) == {ALIVE: 10, DEAD: 10, NO_AGENT: 5}
    total, rows = await pages.page(everything, 0, 10)
    assert total == 25 and [r["bk_host_id"] for r in rows] == ids[:10]
    total, rows = await pages.page(everything, 20, 10)
    assert total == 25 and [r["bk_host_id"] for r in rows] == ids[20:]
    assert {r["state"] for r in rows} == {NO_AGENT}
    total, rows = await pages.page(HostQuery(bk_biz_id=2, state=DEAD), 0, 100)
    assert total == 10 and {r["state"] for r in rows} == {DEAD}
    assert rows[0]["agent_version"] == "1.2.3" and rows[0]["os_name"] == "Debian"
    # a revoked credential shows
    async with db.begin() as conn:
        await conn.execute(insert(agents), [
            {"agent_id": "agent-10", "secret_hash": "x", "bk_host_id": ids[10], "revoked": True,
             "create_time": 0, "revoked_at": 0},
            {"agent_id": "agent-11", "secret_hash": "x", "bk_host_id": ids[11], "revoked": False,
             "create_time": 0, "revoked_at": None}])
    _total, rows = await pages.page(HostQuery(bk_biz_id=2, state=DEAD), 0, 2)
    assert [r["revoked"] for r in rows] == [True, False]
    _total, rows = await pages.page(HostQuery(bk_biz_id=2, host_ids=ids[10:11]), 0, 2)
    assert rows[0]["revoked"] is True
    # the state filter narrows the page, not the counts
    assert await pages.counts(HostQuery(bk_biz_id=2, state=DEAD)) == await pages.counts(everything)


async def test_text_label_topology_and_members(db: Database) -> None:
    ids, set_id, api_module, worker_module = await _fill(db)
    pages = HostPages(db)
    # text: part of the IP or the host name; a LIKE wildcard is taken literally
    total, rows = await pages.page(HostQuery(bk_biz_id=2, text="127.0.2."), 0, 100)
    assert total == 5 and all(r["ip"].startswith("127.0.2.") for r in rows)
    assert (await pages.page(HostQuery(bk_biz_id=2, text="web-1"), 0, 100))[0] == 6
    assert (await pages.page(HostQuery(bk_biz_id=2, text="%"), 0, 100))[0] == 0
    # labels: a key, or key=value
    assert await pages.counts(HostQuery(bk_biz_id=2, label="role=web")) == {
        ALIVE: 5, DEAD: 5, NO_AGENT: 2}
    assert (await pages.page(HostQuery(bk_biz_id=2, label="role"), 0, 100))[0] == 25
    assert (await pages.page(HostQuery(bk_biz_id=2, label="zone"), 0, 100))[0] == 0
    for odd in ('we"ird=1', "it's", "=", "$.role", "role=web' OR 1=1 --"):
        assert (await pages.page(HostQuery(bk_biz_id=2, label=odd), 0, 100))[0] == 0, odd
    total, rows = await pages.page(HostQuery(bk_biz_id=2, label="role=db", state=ALIVE), 2, 2)
    assert total == 5 and len(rows) == 2
    # topology: a module, or every module of a set
    total, rows = await pages.page(HostQuery(bk_biz_id=2, module_id=api_module), 0, 100)
    assert [r["bk_host_id"] for r in rows] == ids[:5]
    assert (await pages.page(HostQuery(bk_biz_id=2, set_id=set_id), 0, 100))[0] == 7
    assert await pages.counts(HostQuery(bk_biz_id=2, module_id=worker_module)) == {
        ALIVE: 2, DEAD: 0, NO_AGENT: 0}
    # a dynamic group's members, narrowed by the other filters
    members = HostQuery(bk_biz_id=2, host_ids=[ids[0], ids[15], ids[24]])
    assert await pages.counts(members) == {ALIVE: 1, DEAD: 1, NO_AGENT: 1}
    total, rows = await pages.page(HostQuery(bk_biz_id=2, host_ids=ids[:3], state=ALIVE), 1, 5)
    assert total == 3 and [r["bk_host_id"] for r in rows] == ids[1:3]
    assert (await pages.page(HostQuery(bk_biz_id=2, host_ids=[]), 0, 5)) == (0, [])
    # nothing of another business
    assert (await pages.page(HostQuery(bk_biz_id=2, text="127.9.9.9"), 0, 5))[0] == 0


async def test_tree_counts_hosts_per_module(db: Database) -> None:
    ids, _set, api_module, worker_module = await _fill(db)
    # a host in both modules counts once for the set
    await TopologyStore(db).move_hosts(2, ids[:1], [api_module, worker_module], False)
    tree = await HostPages(db).tree(2)
    assert [(s["name"], s["hosts"]) for s in tree] == [("backend", 7)]
    assert [(m["name"], m["hosts"]) for m in tree[0]["modules"]] == [("api", 5), ("worker", 3)]
    assert await HostPages(db).tree(3) == []


async def test_an_outbox_row_without_a_job(db: Database) -> None:
    store = OutboxStore(db)
    row_id = await store.add("webhook", "http://127.0.0.1:9/hook", '{"body": "{}"}', 3)
    row = await store.get(row_id)
    assert row is not None and row.job_instance_id is None and row.state == "pending"
    assert [r.id for r in await store.due(time.time() + 1, 10)] == [row_id]
    assert await store.get(row_id + 1000) is None
