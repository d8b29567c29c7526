"""GSE process operations: the task a caller polls, and each host's result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, bindparam, insert, select, update

from jobfleet.store.database import Database, now_ms
from jobfleet.store.tables import proc_operations, proc_results

# task ids in one statement's IN list
IN_CHUNK = 500


@dataclass(frozen=True)
class ProcTarget:
    """One host and process an operation touches (no host: the agent id names none)."""

    bk_host_id: int | None
    agent_id: str
    namespace: str
    name: str
    op: int


@dataclass(frozen=True)
class ProcAnswer:
    """What one host answered for one process of a task: its final code, message and
    state (``content``)."""

    task_id: str
    target: ProcTarget
    code: int
    message: str
    content: str


class ProcStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        task_id: str,
        targets: list[ProcTarget],
        *,
        biz_ids: list[int],
        operator: str,
        app_code: str,
        handling: int,
        answered: Sequence[tuple[ProcTarget, int, str]] = (),
        node_id: str = "",
    ) -> None:
        """The task and one ``handling`` row per target, in one transaction; ``answered``:
        targets refused on their own, with their final code and message; ``node_id``:
        the node that asks the agents."""
        now = now_ms()
        rows = [(t, handling, "handling") for t in targets] + list(answered)
        async with self.db.begin() as conn:
            await conn.execute(
                insert(proc_operations).values(
                    task_id=task_id,
                    biz_ids=biz_ids,
                    operator=operator,
                    app_code=app_code,
                    node_id=node_id,
                    create_time=now,
                )
            )
            if rows:
                await conn.execute(
                    insert(proc_results),
                    [
                        {
                            "task_id": task_id,
                            "bk_host_id": t.bk_host_id,
                            "agent_id": t.agent_id,
                            "namespace": t.namespace,
                            "name": t.name,
                            "op": t.op,
                            "error_code": code,
                            "error_msg": message,
                            "content": "",
                            "update_time": now,
                        }
                        for t, code, message in rows
                    ],
                )

    async def finish(self, answers: Sequence[ProcAnswer]) -> None:
        """Write each answer over its ``handling`` row, all of them in one transaction."""
        if not answers:
            return
        now = now_ms()
        statement = (
            update(proc_results)
            .where(
                proc_results.c.task_id == bindparam("b_task_id"),
                proc_results.c.bk_host_id == bindparam("b_host"),
                proc_results.c.namespace == bindparam("b_namespace"),
                proc_results.c.name == bindparam("b_name"),
            )
            .values(
                error_code=bindparam("b_code"),
                error_msg=bindparam("b_message"),
                content=bindparam("b_content"),
                update_time=now,
            )
        )
        async with self.db.begin() as conn:
            await conn.execute(
                statement,
                [
                    {
                        "b_task_id": a.task_id,
                        "b_host": a.target.bk_host_id,
                        "b_namespace": a.target.namespace,
                        "b_name": a.target.name,
                        "b_code": a.code,
                        "b_message": a.message,
                        "b_content": a.content,
                    }
                    for a in answers
                ],
            )

    async def abandon(
        self, task_ids: list[str], *, handling: int, code: int, message: str
    ) -> None:
        """Answer every host of ``task_ids`` still ``handling`` with ``code`` and ``message``."""
        async with self.db.begin() as conn:
            for start in range(0, len(task_ids), IN_CHUNK):
                await conn.execute(
                    update(proc_results)
                    .where(
                        proc_results.c.task_id.in_(task_ids[start : start + IN_CHUNK]),
                        proc_results.c.error_code == handling,
                    )
                    .values(error_code=code, error_msg=message, update_time=now_ms())
                )

    async def abandon_node(
        self, node_id: str, *, handling: int, code: int, message: str
    ) -> None:
        """Answer every host still ``handling`` in the operations ``node_id`` asks for."""
        mine = select(proc_operations.c.task_id).where(proc_operations.c.node_id == node_id)
        async with self.db.begin() as conn:
            await conn.execute(
                update(proc_results)
                .where(proc_results.c.task_id.in_(mine), proc_results.c.error_code == handling)
                .values(error_code=code, error_msg=message, update_time=now_ms())
            )

    async def operation(self, task_id: str) -> Row[Any] | None:
        async with self.db.connect() as conn:
            return (
                await conn.execute(
                    select(proc_operations).where(proc_operations.c.task_id == task_id)
                )
            ).first()

    async def results(self, task_id: str) -> list[Row[Any]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(proc_results)
                .where(proc_results.c.task_id == task_id)
                .order_by(proc_results.c.id)
            )
            return list(rows.all())
