"""The last load each host's agent reported: CPU and memory in use, and when the agent
started (GSE's ``list_agent_info``). One row per host, overwritten a batch at a time."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from jobfleet.store.database import Database
from jobfleet.store.tables import agent_loads


@dataclass(frozen=True)
class AgentLoad:
    cpu: float
    mem: float
    # epoch ms
    started: int
    report_time: int


class AgentLoads:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._dialect = sqlite if db.is_sqlite else postgresql

    async def record(self, loads: dict[int, AgentLoad]) -> None:
        """Each host's load, replacing what it reported before, in one transaction."""
        if not loads:
            return
        insert = self._dialect.insert(agent_loads)
        upsert = insert.on_conflict_do_update(
            index_elements=[agent_loads.c.bk_host_id],
            set_={
                "cpu": insert.excluded.cpu,
                "mem": insert.excluded.mem,
                "started": insert.excluded.started,
                "report_time": insert.excluded.report_time,
            },
        )
        rows = [
            {
                "bk_host_id": host,
                "cpu": load.cpu,
                "mem": load.mem,
                "started": load.started,
                "report_time": load.report_time,
            }
            for host, load in sorted(loads.items())
        ]
        async with self.db.begin() as conn:
            await conn.execute(upsert, rows)

    async def of(self, hosts: Collection[int]) -> dict[int, AgentLoad]:
        if not hosts:
            return {}
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(agent_loads).where(agent_loads.c.bk_host_id.in_(list(hosts)))
            )
            return {
                int(r.bk_host_id): AgentLoad(
                    float(r.cpu), float(r.mem), int(r.started), int(r.report_time)
                )
                for r in rows
            }
