"""Reads for live views of one step: counts per status and tag, a page of hosts,
and the output chunks a viewer has not seen yet. Each costs what it returns (rows of
groups, a page, the bytes asked for), not the number of hosts of the step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Row, and_, func, or_, select

from jobfleet.store.database import Database
from jobfleet.store.tables import log_chunks, step_hosts

MAX_CURSOR_HOSTS = 1000


class JobViews:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def groups(self, step_id: int, execute_count: int) -> list[tuple[int, str, int]]:
        """(status, tag, hosts) of a step's attempt."""
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(step_hosts.c.status, step_hosts.c.tag, func.count())
                .where(
                    step_hosts.c.step_instance_id == step_id,
                    step_hosts.c.execute_count == execute_count,
                )
                .group_by(step_hosts.c.status, step_hosts.c.tag)
            )
            return [(int(s), str(t or ""), int(n)) for s, t, n in rows]

    async def host_page(
        self,
        step_id: int,
        execute_count: int,
        *,
        status: int | None = None,
        ip: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[int, list[Row[Any]]]:
        cond = [
            step_hosts.c.step_instance_id == step_id,
            step_hosts.c.execute_count == execute_count,
        ]
        if status is not None:
            cond.append(step_hosts.c.status == status)
        if ip:
            cond.append(step_hosts.c.ip.contains(ip, autoescape=True))
        async with self.db.connect() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(step_hosts).where(*cond))
            ).scalar_one()
            rows = await conn.execute(
                select(step_hosts)
                .where(*cond)
                .order_by(step_hosts.c.bk_host_id)
                .offset(offset)
                .limit(limit)
            )
            return int(total), list(rows.all())

    async def ips(self, step_id: int, execute_count: int, host_ids: list[int]) -> list[str]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(step_hosts.c.bk_cloud_id, step_hosts.c.ip)
                .where(
                    step_hosts.c.step_instance_id == step_id,
                    step_hosts.c.execute_count == execute_count,
                    step_hosts.c.bk_host_id.in_(host_ids[: MAX_CURSOR_HOSTS * 10]),
                )
                .order_by(step_hosts.c.bk_host_id)
            )
            return [str(ip) for _cloud, ip in rows]

    async def host_ids(self, step_id: int, execute_count: int, limit: int) -> list[int]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(step_hosts.c.bk_host_id)
                .where(
                    step_hosts.c.step_instance_id == step_id,
                    step_hosts.c.execute_count == execute_count,
                )
                .order_by(step_hosts.c.bk_host_id)
                .limit(limit)
            )
            return [int(r[0]) for r in rows]

    async def chunks_after(
        self, step_id: int, execute_count: int, cursors: Mapping[int, int]
    ) -> list[tuple[int, int, str]]:
        """(host, seq, content) of the chunks past each host's cursor, in order."""
        if not cursors:
            return []
        found: list[tuple[int, int, str]] = []
        items = list(cursors.items())
        async with self.db.connect() as conn:
            for start in range(0, len(items), 200):
                part = items[start : start + 200]
                rows = await conn.execute(
                    select(log_chunks.c.bk_host_id, log_chunks.c.seq, log_chunks.c.content)
                    .where(
                        log_chunks.c.step_instance_id == step_id,
                        log_chunks.c.execute_count == execute_count,
                        or_(
                            *[
                                and_(log_chunks.c.bk_host_id == h, log_chunks.c.seq > seq)
                                for h, seq in part
                            ]
                        ),
                    )
                    .order_by(log_chunks.c.bk_host_id, log_chunks.c.seq)
                )
                found.extend((int(h), int(s), str(c)) for h, s, c in rows)
        return found
