"""Hosts: lookup for targeting, presence of agents, the GSE views."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, Column, Row, String, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.host_filters import HostFilter
from jobfleet.store.database import Database, now_ms
from jobfleet.store.tables import hosts

CHUNK = 5000
# up to this many cloud areas, hosts are looked up one cloud area after another
FEW_CLOUDS = 16
# the width of hosts.agent_id
AGENT_ID_LENGTH = 64
# the columns of a Host, in its fields' order (see Host.of_columns)
HOST_COLUMNS = tuple(
    hosts.c[name]
    for name in ("bk_host_id", "bk_biz_id", "bk_cloud_id", "ip", "ipv6", "agent_id", "hostname",
                 "os_type", "alive", "agent_version", "os_name", "labels", "last_seen")
)
# facts an agent reports at connect; one it did not report (None) keeps the stored value
PRESENCE_FACTS = ("hostname", "os_type", "agent_version", "ipv6")


@dataclass(frozen=True)
class Host:
    bk_host_id: int
    bk_biz_id: int
    bk_cloud_id: int
    ip: str
    ipv6: str
    agent_id: str | None
    hostname: str
    os_type: str
    alive: int
    agent_version: str
    os_name: str = ""
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # epoch ms of the last time a node saw the agent come or go (None: never)
    last_seen: int | None = field(default=None, compare=False, hash=False)

    @classmethod
    def of(cls, row: Row[Any]) -> Host:
        return cls(
            row.bk_host_id,
            row.bk_biz_id,
            row.bk_cloud_id,
            row.ip,
            row.ipv6,
            row.agent_id,
            row.hostname,
            row.os_type,
            row.alive,
            row.agent_version,
            row.os_name,
            dict(row.labels or {}),
            row.last_seen,
        )

    @classmethod
    def of_columns(cls, row: Iterable[Any]) -> Host:
        """A host from a row of :data:`HOST_COLUMNS`, read once as a tuple (each named
        attribute of a SQLAlchemy row costs microseconds: a 10,000-host job reads
        120,000 of them)."""
        (host_id, biz, cloud, ip, ipv6, agent_id, hostname, os_type, alive, version, os_name,
         labels, last_seen) = row
        return cls(host_id, biz, cloud, ip, ipv6, agent_id, hostname, os_type, alive, version,
                   os_name, dict(labels or {}), last_seen)

    def public(self) -> dict[str, Any]:
        return {
            "bk_host_id": self.bk_host_id,
            "bk_biz_id": self.bk_biz_id,
            "bk_cloud_id": self.bk_cloud_id,
            "ip": self.ip,
            "ipv6": self.ipv6,
            "hostname": self.hostname,
            "os_type": self.os_type,
            "os_name": self.os_name,
            "labels": self.labels,
            "agent_id": self.agent_id,
            "alive": self.alive,
            "agent_version": self.agent_version,
            "last_seen": self.last_seen,
        }


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Inventory:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def by_ids(self, host_ids: Sequence[int]) -> list[Host]:
        return await self._where_in(hosts.c.bk_host_id, host_ids)

    async def _where_in(self, column: Column[Any], values: Sequence[Any]) -> list[Host]:
        """Hosts whose indexed ``column`` is one of ``values``, a chunk at a time."""
        found: list[Host] = []
        async with self.db.connect() as conn:
            for part in chunks(values):
                rows = await conn.execute(select(*HOST_COLUMNS).where(column.in_(part)))
                found.extend(map(Host.of_columns, rows))
        return found

    async def by_ips(self, pairs: Sequence[tuple[int, str]]) -> list[Host]:
        """Hosts by (cloud, address): their ip, or for an IPv6 address also their ipv6;
        each once, though ``pairs`` name it by both (callers count the hosts that claim
        an IPv6 address, and one host twice would be two)."""
        by_cloud: dict[int, list[str]] = {}
        for cloud, ip in pairs:
            by_cloud.setdefault(cloud, []).append(ip)
        found: list[Host] = []
        async with self.db.connect() as conn:
            held = set(by_cloud)
            if len(by_cloud) > FEW_CLOUDS:
                # a request naming many cloud areas asks only those that hold a host (one
                # scan of the (bk_cloud_id, ip) key), not each of them in turn
                held = set()
                for clouds in chunks(sorted(by_cloud)):
                    rows = await conn.execute(
                        select(hosts.c.bk_cloud_id)
                        .where(hosts.c.bk_cloud_id.in_(clouds))
                        .distinct()
                    )
                    held.update(int(cloud) for (cloud,) in rows)
            for cloud, ips in by_cloud.items():
                if cloud not in held:
                    continue
                # one cloud and a plain IN list: the (bk_cloud_id, ip) key answers it
                for part in chunks(ips):
                    rows = await conn.execute(
                        select(*HOST_COLUMNS).where(
                            hosts.c.bk_cloud_id == cloud, hosts.c.ip.in_(part)
                        )
                    )
                    found.extend(map(Host.of_columns, rows))
                    v6 = [ip for ip in part if ":" in ip]
                    if v6:
                        rows = await conn.execute(
                            select(*HOST_COLUMNS).where(
                                hosts.c.bk_cloud_id == cloud, hosts.c.ipv6.in_(v6)
                            )
                        )
                        found.extend(map(Host.of_columns, rows))
        return list({h.bk_host_id: h for h in found}.values())

    async def by_agent_ids(self, agent_ids: Iterable[str]) -> list[Host]:
        """Hosts by their agents' ids (the indexed ``agent_id``), a chunk at a time."""
        # no stored id is longer than the column: a longer one names no host
        wanted = sorted({a for a in agent_ids if len(a) <= AGENT_ID_LENGTH})
        return await self._where_in(hosts.c.agent_id, wanted)

    async def matching(self, filters: Sequence[tuple[int, HostFilter]]) -> list[list[Host]]:
        """For each (business, filter), the hosts of that business it matches, by id."""
        biz_ids = sorted({biz for biz, _ in filters})
        if not biz_ids:
            return []
        query = select(hosts).where(hosts.c.bk_biz_id.in_(biz_ids)).order_by(hosts.c.bk_host_id)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        found: list[list[Host]] = []
        for biz, host_filter in filters:
            # a row's mapping has every field a condition may read, labels included
            found.append(
                [Host.of(r) for r in rows if r.bk_biz_id == biz and host_filter.matches(r._mapping)]
            )
        return found

    async def list(
        self,
        bk_biz_id: int | None = None,
        alive: bool | None = None,
        biz_ids: Iterable[int] | None = None,
    ) -> list[Host]:
        query = select(hosts).order_by(hosts.c.bk_host_id)
        if bk_biz_id is not None:
            query = query.where(hosts.c.bk_biz_id == bk_biz_id)
        if biz_ids is not None:
            query = query.where(hosts.c.bk_biz_id.in_(list(biz_ids)))
        if alive is not None:
            query = query.where(hosts.c.alive == (1 if alive else 0))
        async with self.db.connect() as conn:
            return [Host.of(r) for r in await conn.execute(query)]

    async def alive_counts(self, biz_ids: Iterable[int]) -> dict[int, tuple[int, int, int]]:
        """(alive, dead, no agent) hosts per business, in one grouped query: a host that
        never had an agent is not a dead one (the hosts page counts them apart too)."""
        counts = {int(b): (0, 0, 0) for b in biz_ids}
        installed = hosts.c.agent_id.is_not(None)
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(hosts.c.bk_biz_id, hosts.c.alive, installed, func.count())
                .where(hosts.c.bk_biz_id.in_(list(counts)))
                .group_by(hosts.c.bk_biz_id, hosts.c.alive, installed)
            )
            for biz, alive, has_agent, n in rows:
                up, down, none = counts[int(biz)]
                if alive:
                    up += int(n)
                elif has_agent:
                    down += int(n)
                else:
                    none += int(n)
                counts[int(biz)] = (up, down, none)
        return counts

    async def add(self, bk_biz_id: int, ip: str, bk_cloud_id: int = 0, hostname: str = "") -> Host:
        try:
            async with self.db.begin() as conn:
                res = await conn.execute(
                    insert(hosts).values(
                        bk_biz_id=bk_biz_id,
                        bk_cloud_id=bk_cloud_id,
                        ip=ip,
                        ipv6="",
                        agent_id=None,
                        hostname=hostname,
                        os_type="",
                        os_name="",
                        agent_version="",
                        labels={},
                        alive=0,
                        create_time=now_ms(),
                    )
                )
        except IntegrityError:
            raise JobError(ErrorCode.CONFLICT, f"Host {bk_cloud_id}:{ip} already exists") from None
        return (await self.by_ids([int(res.inserted_primary_key[0])]))[0]  # type: ignore[index]

    async def record_facts(self, facts: dict[int, dict[str, Any]]) -> None:
        """Store what agents said of their hosts at connect: ``{host: {os_name, labels}}``.

        A fact that is None keeps the stored value.
        """
        if not facts:
            return
        rows = [
            {"_h": host, "_os_name": f.get("os_name"), "_labels": f.get("labels")}
            for host, f in facts.items()
        ]
        values = {
            "os_name": func.coalesce(bindparam("_os_name", type_=String), hosts.c.os_name),
            # None must bind as SQL NULL, not as the JSON text null, for coalesce to keep
            "labels": func.coalesce(
                bindparam("_labels", type_=JSON(none_as_null=True)), hosts.c.labels
            ),
        }
        async with self.db.begin() as conn:
            await conn.execute(
                update(hosts).where(hosts.c.bk_host_id == bindparam("_h")).values(**values), rows
            )

    async def record_presence(
        self, node_id: str, online: dict[int, dict[str, Any]], offline: set[int], now: int
    ) -> None:
        """Hosts whose agent connected to ``node_id`` (with the facts it reported: a
        fact that is None keeps the stored value) and hosts whose agent left it, in one
        transaction. A host another node took over meanwhile stays alive."""
        async with self.db.begin() as conn:
            if online:
                rows = [
                    {
                        "_h": h,
                        "_node": node_id,
                        "_now": now,
                        **{f"_{k}": facts.get(k) for k in PRESENCE_FACTS},
                    }
                    for h, facts in online.items()
                ]
                values: dict[str, Any] = {
                    "alive": 1,
                    "node_id": bindparam("_node"),
                    "last_seen": bindparam("_now"),
                }
                for key in PRESENCE_FACTS:
                    values[key] = func.coalesce(bindparam(f"_{key}"), hosts.c[key])
                await conn.execute(
                    update(hosts).where(hosts.c.bk_host_id == bindparam("_h")).values(**values),
                    rows,
                )
            if offline:
                await conn.execute(
                    update(hosts)
                    .where(hosts.c.bk_host_id == bindparam("_h"), hosts.c.node_id == node_id)
                    .values(alive=0, last_seen=now),
                    [{"_h": h} for h in offline],
                )

    async def reset_node(self, node_id: str, held_within: float = 0.0) -> set[int]:
        """At start, nothing this node held is connected any more: the hosts it held.
        Those are the hosts alive under it, and those it had in the last ``held_within``
        seconds: a start that died again before its agents reconnected reset them."""
        held_since = [hosts.c.alive == 1]
        if held_within > 0:
            held_since.append(hosts.c.last_seen >= now_ms() - int(held_within * 1000))
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(hosts.c.bk_host_id).where(hosts.c.node_id == node_id, or_(*held_since))
            )
            held = {int(r[0]) for r in rows}
        await self.reset_nodes([node_id])
        return held

    async def holding_nodes(self) -> set[str | None]:
        """The node ids that alive hosts are recorded under (None: under none)."""
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(hosts.c.node_id).where(hosts.c.alive == 1).distinct()
            )
            return {r[0] for r in rows}

    async def reset_nodes(self, node_ids: Iterable[str | None]) -> int:
        """Hosts alive under these node ids (None: under none) are not connected any
        more; how many were reset."""
        nodes = set(node_ids)
        named = sorted(n for n in nodes if n is not None)
        held = [hosts.c.node_id.in_(named)] if named else []
        if None in nodes:
            held.append(hosts.c.node_id.is_(None))
        if not held:
            return 0
        async with self.db.begin() as conn:
            # last_seen is when the agent was last known connected: up to now
            res = await conn.execute(
                update(hosts)
                .where(hosts.c.alive == 1, or_(*held))
                .values(alive=0, last_seen=now_ms())
            )
            return int(res.rowcount)
