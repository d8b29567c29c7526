"""Per-file progress of file steps: what each host uploaded or downloaded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, bindparam, delete, insert, select, update

from jobfleet.domain.status import FileLogMode, FileLogStatus
from jobfleet.store.database import Database
from jobfleet.store.inventory import chunks
from jobfleet.store.tables import file_logs

UPLOAD = int(FileLogMode.UPLOAD)
DOWNLOAD = int(FileLogMode.DOWNLOAD)
WAITING = int(FileLogStatus.WAITING)
UPLOADING = int(FileLogStatus.UPLOADING)
DOWNLOADING = int(FileLogStatus.DOWNLOADING)
SUCCESS = int(FileLogStatus.SUCCESS)
FAILED = int(FileLogStatus.FAILED)


def file_log_update() -> Any:
    """An executemany update of file log rows keyed by (step, count, host, mode, seq)."""
    return (
        update(file_logs)
        .where(
            file_logs.c.step_instance_id == bindparam("_step"),
            file_logs.c.execute_count == bindparam("_count"),
            file_logs.c.bk_host_id == bindparam("_host"),
            file_logs.c.mode == bindparam("_mode"),
            file_logs.c.seq == bindparam("_seq"),
        )
        .values(
            status=bindparam("_status"),
            size=bindparam("_size"),
            speed=bindparam("_speed"),
            progress=bindparam("_progress"),
            log_content=bindparam("_log"),
        )
    )


def update_row(
    step_id: int,
    execute_count: int,
    host_id: int,
    mode: int,
    seq: int,
    *,
    status: int,
    size: int | None = None,
    speed: float | None = None,
    progress: int = 0,
    log: str = "",
) -> dict[str, Any]:
    return {
        "_step": step_id,
        "_count": execute_count,
        "_host": host_id,
        "_mode": mode,
        "_seq": seq,
        "_status": status,
        "_size": size,
        "_speed": speed,
        "_progress": progress,
        "_log": log,
    }


class FileLogStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, rows: list[dict[str, Any]]) -> None:
        async with self.db.begin() as conn:
            for part in chunks(rows):
                await conn.execute(insert(file_logs), list(part))

    async def rows(
        self,
        step_id: int,
        execute_count: int,
        *,
        host_ids: Sequence[int] | None = None,
        mode: int | None = None,
    ) -> list[Row[Any]]:
        query = select(file_logs).where(
            file_logs.c.step_instance_id == step_id, file_logs.c.execute_count == execute_count
        )
        if mode is not None:
            query = query.where(file_logs.c.mode == mode)
        query = query.order_by(file_logs.c.bk_host_id, file_logs.c.mode, file_logs.c.seq)
        async with self.db.connect() as conn:
            if host_ids is None:
                return list((await conn.execute(query)).all())
            found: list[Row[Any]] = []
            for part in chunks(list(host_ids)):
                found.extend(await conn.execute(query.where(file_logs.c.bk_host_id.in_(part))))
            return found

    async def update(self, updates: list[dict[str, Any]]) -> None:
        if updates:
            async with self.db.begin() as conn:
                await conn.execute(file_log_update(), updates)

    async def remove(self, step_id: int, execute_count: int, mode: int, seqs: range) -> None:
        """Drop the rows of ``seqs`` (a phase started again after a restart writes them anew)."""
        async with self.db.begin() as conn:
            await conn.execute(
                delete(file_logs).where(
                    file_logs.c.step_instance_id == step_id,
                    file_logs.c.execute_count == execute_count,
                    file_logs.c.mode == mode,
                    file_logs.c.seq >= seqs.start,
                    file_logs.c.seq < seqs.stop,
                )
            )
