"""The console's host list: a business's hosts filtered by topology node, agent state,
address text and label, counted per state first and read one page at a time, so that
a business of 10,000 hosts costs one grouped count and one page of rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, or_, select

from jobfleet.store.database import Database
from jobfleet.store.inventory import chunks
from jobfleet.store.tables import agents, host_modules, hosts, topo_nodes

ALIVE = "alive"
DEAD = "dead"
NO_AGENT = "none"
STATES = (ALIVE, DEAD, NO_AGENT)
SET = "set"
MODULE = "module"

_row_state = case(
    (hosts.c.agent_id.is_(None), NO_AGENT),
    (hosts.c.alive == 1, ALIVE),
    else_=DEAD,
)


@dataclass(frozen=True)
class HostQuery:
    """Which hosts of one business: every field that is set narrows the list."""

    bk_biz_id: int
    set_id: int | None = None
    module_id: int | None = None
    # a part of the IP, IPv6 address or host name
    text: str = ""
    # ``key`` (the host has the label) or ``key=value``
    label: str = ""
    state: str | None = None
    # the members of a dynamic group, found by the caller
    host_ids: Sequence[int] | None = None


def state_of(agent_id: str | None, alive: int) -> str:
    if agent_id is None:
        return NO_AGENT
    return ALIVE if alive else DEAD


def _with_revoked() -> Select[Any]:
    """Hosts with whether their agent's credential was revoked."""
    return select(hosts, agents.c.revoked).outerjoin(agents, agents.c.agent_id == hosts.c.agent_id)


def host_row(row: Any) -> dict[str, Any]:
    return {
        "bk_host_id": row.bk_host_id,
        "bk_cloud_id": row.bk_cloud_id,
        "ip": row.ip,
        "ipv6": row.ipv6,
        "hostname": row.hostname,
        "agent_id": row.agent_id,
        "state": state_of(row.agent_id, row.alive),
        "revoked": bool(row.revoked),
        "last_seen": row.last_seen,
        "agent_version": row.agent_version,
        "os_type": row.os_type,
        "os_name": row.os_name,
        "labels": dict(row.labels or {}),
    }


class HostPages:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _where(self, q: HostQuery) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = [hosts.c.bk_biz_id == q.bk_biz_id]
        if q.module_id is not None:
            found.append(
                hosts.c.bk_host_id.in_(
                    select(host_modules.c.bk_host_id).where(host_modules.c.module_id == q.module_id)
                )
            )
        if q.set_id is not None:
            modules = select(topo_nodes.c.id).where(
                topo_nodes.c.parent_id == q.set_id, topo_nodes.c.node_type == MODULE
            )
            found.append(
                hosts.c.bk_host_id.in_(
                    select(host_modules.c.bk_host_id).where(host_modules.c.module_id.in_(modules))
                )
            )
        text = q.text.strip()
        if text:
            found.append(
                or_(
                    hosts.c.ip.contains(text, autoescape=True),
                    hosts.c.ipv6.contains(text, autoescape=True),
                    hosts.c.hostname.contains(text, autoescape=True),
                )
            )
        if q.label.strip():
            key, sep, value = q.label.partition("=")
            # labels hold strings: the value at a key, as text, on SQLite and PostgreSQL
            at_key = hosts.c.labels[key.strip()].as_string()
            found.append(at_key == value.strip() if sep else at_key.is_not(None))
        return found

    async def _ids_of_group(self, q: HostQuery) -> list[tuple[int, str]]:
        assert q.host_ids is not None
        found: list[tuple[int, str]] = []
        where = self._where(q)
        async with self.db.connect() as conn:
            for part in chunks(sorted(set(q.host_ids))):
                rows = await conn.execute(
                    select(hosts.c.bk_host_id, hosts.c.agent_id, hosts.c.alive).where(
                        *where, hosts.c.bk_host_id.in_(part)
                    )
                )
                found.extend((int(r.bk_host_id), state_of(r.agent_id, r.alive)) for r in rows)
        return sorted(found)

    async def counts(self, q: HostQuery) -> dict[str, int]:
        """Hosts per agent state, whatever ``q.state`` says."""
        counts = dict.fromkeys(STATES, 0)
        if q.host_ids is not None:
            for _host, state in await self._ids_of_group(q):
                counts[state] += 1
            return counts
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(_row_state.label("state"), func.count())
                .where(*self._where(q))
                .group_by(_row_state)
            )
            for state, n in rows:
                counts[str(state)] = int(n)
        return counts

    async def page(self, q: HostQuery, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """(hosts that match, the page of them from ``offset``), by host id."""
        if q.host_ids is not None:
            ids = [h for h, state in await self._ids_of_group(q) if q.state in (None, state)]
            chosen = ids[offset : offset + limit]
            if not chosen:
                return len(ids), []
            async with self.db.connect() as conn:
                rows = await conn.execute(
                    _with_revoked()
                    .where(hosts.c.bk_host_id.in_(chosen))
                    .order_by(hosts.c.bk_host_id)
                )
                return len(ids), [host_row(r) for r in rows]
        where = self._where(q)
        if q.state is not None:
            where.append(_row_state == q.state)
        query = _with_revoked().where(*where).order_by(hosts.c.bk_host_id)
        async with self.db.connect() as conn:
            total = int(
                (await conn.execute(select(func.count()).select_from(hosts).where(*where))).scalar()
                or 0
            )
            rows = await conn.execute(query.offset(offset).limit(limit))
            return total, [host_row(r) for r in rows]

    async def tree(self, bk_biz_id: int) -> list[dict[str, Any]]:
        """The business's sets, each with its modules and how many hosts each holds."""
        async with self.db.connect() as conn:
            nodes = (
                await conn.execute(
                    select(topo_nodes)
                    .where(topo_nodes.c.bk_biz_id == bk_biz_id)
                    .order_by(topo_nodes.c.name, topo_nodes.c.id)
                )
            ).all()
            counted = await conn.execute(
                select(host_modules.c.module_id, func.count())
                .join(topo_nodes, topo_nodes.c.id == host_modules.c.module_id)
                .where(topo_nodes.c.bk_biz_id == bk_biz_id)
                .group_by(host_modules.c.module_id)
            )
            per_module = {int(m): int(n) for m, n in counted}
            # a host in two modules of a set counts once for the set
            counted = await conn.execute(
                select(topo_nodes.c.parent_id, func.count(host_modules.c.bk_host_id.distinct()))
                .join(topo_nodes, topo_nodes.c.id == host_modules.c.module_id)
                .where(topo_nodes.c.bk_biz_id == bk_biz_id)
                .group_by(topo_nodes.c.parent_id)
            )
            per_set = {int(p): int(n) for p, n in counted if p is not None}
        sets = {
            n.id: {"id": n.id, "name": n.name, "modules": [], "hosts": per_set.get(int(n.id), 0)}
            for n in nodes
            if n.node_type == SET
        }
        for n in nodes:
            if n.node_type == MODULE and n.parent_id in sets:
                count = per_module.get(int(n.id), 0)
                sets[n.parent_id]["modules"].append({"id": n.id, "name": n.name, "hosts": count})
        return list(sets.values())
