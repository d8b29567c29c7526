"""Business topology (sets, modules, which hosts sit where) and dynamic groups.

A business holds sets; a set holds modules; a host sits in any number of modules of its
own business (none: it is idle). Targets name sets and modules by id (bk-job's
``topo_node_list``), dynamic groups by id (``dynamic_group_list``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Row, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.host_filters import DYNAMIC_GROUP_NOT_FOUND, HostFilter, parse_filter
from jobfleet.store.database import Database, change_stamps, lock_names, now_ms
from jobfleet.store.inventory import Host, chunks
from jobfleet.store.tables import (
    businesses,
    dynamic_groups,
    host_modules,
    hosts,
    topo_nodes,
)

SET = "set"
MODULE = "module"
GROUP_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def node_view(row: Row[Any]) -> dict[str, Any]:
    view = {
        "id": row.id,
        "node_type": row.node_type,
        "name": row.name,
        "bk_biz_id": row.bk_biz_id,
        "create_time": row.create_time,
    }
    if row.node_type == MODULE:
        view["set_id"] = row.parent_id
    return view


def group_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "bk_biz_id": row.bk_biz_id,
        "name": row.name,
        "description": row.description,
        "filter": row.filter,
        **change_stamps(row),
    }


def standard_group_id(value: str) -> str:
    """bk-job once prefixed dynamic group ids with the business: ``2:<id>`` is ``<id>``."""
    return value.split(":", 1)[1] if value.count(":") == 1 else value


def check_name(value: str | None, what: str) -> str:
    name = (value or "").strip()
    if not name:
        raise JobError.missing("name")
    if len(name) > 255 or any(ord(c) < 32 for c in name):
        raise JobError.invalid("name", f"a {what} name is 1-255 printable characters")
    return name


class TopologyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- sets and modules -----------------------------------------------------------

    async def tree(self, bk_biz_id: int) -> dict[str, Any]:
        """Every set, module and host of a business, hosts once each and referenced by id."""
        async with self.db.connect() as conn:
            name = (
                await conn.execute(
                    select(businesses.c.name).where(businesses.c.bk_biz_id == bk_biz_id)
                )
            ).scalar()
            nodes = (
                await conn.execute(
                    select(topo_nodes)
                    .where(topo_nodes.c.bk_biz_id == bk_biz_id)
                    .order_by(topo_nodes.c.id)
                )
            ).all()
            members = (
                await conn.execute(
                    select(host_modules.c.bk_host_id, host_modules.c.module_id)
                    .join(topo_nodes, topo_nodes.c.id == host_modules.c.module_id)
                    .where(topo_nodes.c.bk_biz_id == bk_biz_id)
                    .order_by(host_modules.c.bk_host_id)
                )
            ).all()
            host_rows = (
                await conn.execute(
                    select(hosts).where(hosts.c.bk_biz_id == bk_biz_id).order_by(hosts.c.bk_host_id)
                )
            ).all()
        in_module: dict[int, list[int]] = {}
        placed: set[int] = set()
        for host_id, module_id in members:
            in_module.setdefault(module_id, []).append(host_id)
            placed.add(host_id)
        sets = [{**node_view(n), "modules": []} for n in nodes if n.node_type == SET]
        by_id = {s["id"]: s for s in sets}
        for n in nodes:
            if n.node_type == MODULE and n.parent_id in by_id:
                module = {**node_view(n), "host_ids": in_module.get(n.id, [])}
                by_id[n.parent_id]["modules"].append(module)
        all_hosts = [Host.of(r) for r in host_rows]
        return {
            "bk_biz_id": bk_biz_id,
            "name": name,
            "sets": sets,
            "hosts": [h.public() for h in all_hosts],
            "idle_host_ids": [h.bk_host_id for h in all_hosts if h.bk_host_id not in placed],
        }

    async def node(self, bk_biz_id: int, node_id: int, node_type: str) -> Row[Any]:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(topo_nodes).where(
                        topo_nodes.c.id == node_id,
                        topo_nodes.c.bk_biz_id == bk_biz_id,
                        topo_nodes.c.node_type == node_type,
                    )
                )
            ).first()
        if row is None:
            raise JobError(
                ErrorCode.NOT_FOUND,
                f"{node_type.capitalize()} {node_id} does not exist in business {bk_biz_id}",
            )
        return row

    async def create_set(self, bk_biz_id: int, name: str) -> dict[str, Any]:
        name = check_name(name, SET)
        async with self.db.begin() as conn:
            # the unique key cannot see sets (their parent is null): the name is checked
            # after the write that takes it, name changes of the business one at a time
            await lock_names(conn, "topology", bk_biz_id)
            res = await conn.execute(
                insert(topo_nodes).values(
                    bk_biz_id=bk_biz_id,
                    node_type=SET,
                    name=name,
                    parent_id=None,
                    create_time=now_ms(),
                )
            )
            new_id = int(res.inserted_primary_key[0])  # type: ignore[index]
            if await _named(conn, bk_biz_id, SET, None, name) > 1:
                raise JobError(
                    ErrorCode.CONFLICT, f"Business {bk_biz_id} already has a set named {name!r}"
                )
        return node_view(await self.node(bk_biz_id, new_id, SET))

    async def create_module(self, bk_biz_id: int, set_id: int, name: str) -> dict[str, Any]:
        name = check_name(name, MODULE)
        await self.node(bk_biz_id, set_id, SET)
        try:
            async with self.db.begin() as conn:
                res = await conn.execute(
                    insert(topo_nodes).values(
                        bk_biz_id=bk_biz_id,
                        node_type=MODULE,
                        name=name,
                        parent_id=set_id,
                        create_time=now_ms(),
                    )
                )
                new_id = int(res.inserted_primary_key[0])  # type: ignore[index]
        except IntegrityError:
            raise JobError(
                ErrorCode.CONFLICT, f"Set {set_id} already has a module named {name!r}"
            ) from None
        return node_view(await self.node(bk_biz_id, new_id, MODULE))

    async def rename(
        self, bk_biz_id: int, node_id: int, node_type: str, name: str
    ) -> dict[str, Any]:
        name = check_name(name, node_type)
        row = await self.node(bk_biz_id, node_id, node_type)
        try:
            async with self.db.begin() as conn:
                await lock_names(conn, "topology", bk_biz_id)
                await conn.execute(
                    update(topo_nodes).where(topo_nodes.c.id == node_id).values(name=name)
                )
                if await _named(conn, bk_biz_id, node_type, row.parent_id, name) > 1:
                    raise _clash(node_type, name)
        except IntegrityError:
            # a module's unique key refused it (a set's cannot: their parent is null)
            raise _clash(node_type, name) from None
        return node_view(await self.node(bk_biz_id, node_id, node_type))

    async def delete_node(self, bk_biz_id: int, node_id: int, node_type: str) -> dict[str, Any]:
        """Delete a module, or a set with its modules, when no host sits in them."""
        row = await self.node(bk_biz_id, node_id, node_type)
        async with self.db.begin() as conn:
            modules = [node_id]
            if node_type == SET:
                modules = list(
                    (
                        await conn.execute(
                            select(topo_nodes.c.id).where(topo_nodes.c.parent_id == node_id)
                        )
                    ).scalars()
                )
            busy = (
                await conn.execute(
                    select(host_modules.c.module_id)
                    .where(host_modules.c.module_id.in_(modules))
                    .limit(1)
                )
            ).first()
            if busy is not None:
                raise JobError(
                    ErrorCode.CONFLICT,
                    f"{node_type.capitalize()} {node_id} still holds hosts (module {busy[0]}); "
                    "move them out first",
                )
            await conn.execute(
                delete(topo_nodes).where(
                    or_(topo_nodes.c.id == node_id, topo_nodes.c.id.in_(modules))
                )
            )
        return node_view(row)

    async def move_hosts(
        self, bk_biz_id: int, host_ids: Sequence[int], module_ids: Sequence[int], increment: bool
    ) -> None:
        """Put hosts in modules: in these alone, or (``increment``) in these as well.

        With no module and no ``increment`` the hosts leave every module (idle)."""
        host_ids = sorted(set(host_ids))
        module_ids = sorted(set(module_ids))
        async with self.db.begin() as conn:
            found: dict[int, int] = {}
            for part in chunks(host_ids):
                rows = await conn.execute(
                    select(hosts.c.bk_host_id, hosts.c.bk_biz_id).where(
                        hosts.c.bk_host_id.in_(part)
                    )
                )
                found.update({r.bk_host_id: r.bk_biz_id for r in rows})
            missing = [h for h in host_ids if h not in found]
            if missing:
                raise JobError(
                    ErrorCode.HOST_ID_NOT_IN_CMDB, f"Host ids not found: {_sample(missing)}"
                )
            foreign = [h for h in host_ids if found[h] != bk_biz_id]
            if foreign:
                raise JobError(
                    ErrorCode.HOST_INVALID,
                    f"Hosts {_sample(foreign)} do not belong to business {bk_biz_id}",
                )
            known: set[int] = set()
            if module_ids:
                rows = await conn.execute(
                    select(topo_nodes.c.id).where(
                        topo_nodes.c.id.in_(module_ids),
                        topo_nodes.c.bk_biz_id == bk_biz_id,
                        topo_nodes.c.node_type == MODULE,
                    )
                )
                known.update(rows.scalars())
            unknown = [m for m in module_ids if m not in known]
            if unknown:
                raise JobError(
                    ErrorCode.NOT_FOUND,
                    f"Modules {_sample(unknown)} do not exist in business {bk_biz_id}",
                )
            existing: set[tuple[int, int]] = set()
            for part in chunks(host_ids):
                if not increment:
                    await conn.execute(
                        delete(host_modules).where(host_modules.c.bk_host_id.in_(part))
                    )
                    continue
                rows = await conn.execute(
                    select(host_modules).where(host_modules.c.bk_host_id.in_(part))
                )
                existing.update((r.bk_host_id, r.module_id) for r in rows)
            pairs = [
                {"bk_host_id": h, "module_id": m}
                for h in host_ids
                for m in module_ids
                if (h, m) not in existing
            ]
            for part in chunks(pairs):
                await conn.execute(insert(host_modules), list(part))

    async def nodes_of(self, bk_biz_id: int) -> list[Row[Any]]:
        """A business's sets and modules, without their hosts (sets first, by name)."""
        async with self.db.connect() as conn:
            query = (
                select(topo_nodes)
                .where(topo_nodes.c.bk_biz_id == bk_biz_id)
                .order_by(topo_nodes.c.node_type.desc(), topo_nodes.c.name, topo_nodes.c.id)
            )
            return list((await conn.execute(query)).all())

    async def nodes(self, node_ids: Iterable[int]) -> list[Row[Any]]:
        ids = sorted(set(node_ids))
        if not ids:
            return []
        async with self.db.connect() as conn:
            return list(
                (await conn.execute(select(topo_nodes).where(topo_nodes.c.id.in_(ids)))).all()
            )

    async def hosts_under(self, set_ids: Sequence[int], module_ids: Sequence[int]) -> list[Host]:
        """The hosts in these modules and in every module of these sets (each host once)."""
        if not set_ids and not module_ids:
            return []
        modules_of_sets = select(topo_nodes.c.id).where(
            topo_nodes.c.parent_id.in_(list(set_ids)), topo_nodes.c.node_type == MODULE
        )
        which = or_(
            host_modules.c.module_id.in_(list(module_ids)),
            host_modules.c.module_id.in_(modules_of_sets),
        )
        query = select(hosts).where(
            hosts.c.bk_host_id.in_(select(host_modules.c.bk_host_id).where(which))
        )
        async with self.db.connect() as conn:
            return [Host.of(r) for r in await conn.execute(query)]

    # --- dynamic groups ---------------------------------------------------------------

    async def groups(
        self, biz_ids: Iterable[int], ids: Iterable[str] | None = None
    ) -> list[Row[Any]]:
        query = select(dynamic_groups).where(dynamic_groups.c.bk_biz_id.in_(sorted(biz_ids)))
        if ids is not None:
            query = query.where(dynamic_groups.c.id.in_(sorted(set(ids))))
        async with self.db.connect() as conn:
            return list((await conn.execute(query.order_by(dynamic_groups.c.name))).all())

    async def group(self, bk_biz_id: int, group_id: str) -> Row[Any]:
        rows = await self.groups([bk_biz_id], [standard_group_id(group_id)])
        if not rows:
            raise group_not_found([group_id], bk_biz_id)
        return rows[0]

    async def create_group(
        self,
        bk_biz_id: int,
        *,
        name: str,
        host_filter: HostFilter,
        description: str,
        creator: str,
        group_id: str | None = None,
    ) -> Row[Any]:
        name = check_name(name, "dynamic group")
        chosen = group_id is not None
        if group_id is None:
            group_id = uuid.uuid4().hex
        elif not group_id or len(group_id) > 64 or not set(group_id) <= GROUP_ID_CHARS:
            raise JobError.invalid("id", "1-64 letters, digits and _ - .")
        now = now_ms()
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    insert(dynamic_groups).values(
                        id=group_id,
                        bk_biz_id=bk_biz_id,
                        name=name,
                        description=description,
                        filter=host_filter.to_json(),
                        creator=creator,
                        create_time=now,
                        last_modify_user=creator,
                        last_modify_time=now,
                    )
                )
        except IntegrityError:
            raise await self._clash(bk_biz_id, name, group_id if chosen else None) from None
        return await self.group(bk_biz_id, group_id)

    async def _clash(self, bk_biz_id: int, name: str, group_id: str | None) -> JobError:
        """What a new group collided with: the group of the same name (with its id), or
        the id the caller chose; never an id made up for the refused group."""
        async with self.db.connect() as conn:
            holder = (
                await conn.execute(
                    select(dynamic_groups.c.id).where(
                        dynamic_groups.c.bk_biz_id == bk_biz_id, dynamic_groups.c.name == name
                    )
                )
            ).scalar()
        if holder is None and group_id is not None:
            return JobError(
                ErrorCode.CONFLICT, f"A dynamic group with id {group_id!r} already exists"
            )
        held = f" (id {holder!r})" if holder is not None else ""
        return JobError(
            ErrorCode.CONFLICT,
            f"A dynamic group named {name!r} already exists in business {bk_biz_id}{held}",
        )

    async def update_group(
        self,
        bk_biz_id: int,
        group_id: str,
        *,
        user: str,
        name: str | None = None,
        host_filter: HostFilter | None = None,
        description: str | None = None,
    ) -> Row[Any]:
        row = await self.group(bk_biz_id, group_id)
        values: dict[str, Any] = {"last_modify_user": user, "last_modify_time": now_ms()}
        if name is not None:
            values["name"] = check_name(name, "dynamic group")
        if host_filter is not None:
            values["filter"] = host_filter.to_json()
        if description is not None:
            values["description"] = description
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    update(dynamic_groups).where(dynamic_groups.c.id == row.id).values(**values)
                )
        except IntegrityError:
            raise JobError(
                ErrorCode.CONFLICT, f"A dynamic group named {name!r} already exists"
            ) from None
        return await self.group(bk_biz_id, row.id)

    async def delete_group(self, bk_biz_id: int, group_id: str) -> Row[Any]:
        row = await self.group(bk_biz_id, group_id)
        async with self.db.begin() as conn:
            await conn.execute(delete(dynamic_groups).where(dynamic_groups.c.id == row.id))
        return row


async def _named(
    conn: AsyncConnection, bk_biz_id: int, node_type: str, parent_id: int | None, name: str
) -> int:
    """How many sets (or modules of one set) of a business have this name."""
    siblings = (
        topo_nodes.c.parent_id.is_(None)
        if parent_id is None
        else topo_nodes.c.parent_id == parent_id
    )
    return int(
        (
            await conn.execute(
                select(func.count())
                .select_from(topo_nodes)
                .where(
                    topo_nodes.c.bk_biz_id == bk_biz_id,
                    topo_nodes.c.node_type == node_type,
                    topo_nodes.c.name == name,
                    siblings,
                )
            )
        ).scalar_one()
    )


def _clash(node_type: str, name: str) -> JobError:
    return JobError(ErrorCode.CONFLICT, f"A {node_type} named {name!r} already exists")


def group_not_found(ids: Sequence[str], bk_biz_id: int | str) -> JobError:
    return JobError(
        DYNAMIC_GROUP_NOT_FOUND,
        f"Failed to find hosts by dynamic group {', '.join(ids)}: no such group in "
        f"business {bk_biz_id}",
    )


def groups_filters(rows: Sequence[Row[Any]]) -> list[tuple[int, HostFilter]]:
    return [(row.bk_biz_id, parse_filter(row.filter)) for row in rows]


def _sample(items: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
