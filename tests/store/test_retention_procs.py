"""GSE process operations are history like jobs: older than the jobs' period they go,
their per-host results with them, younger ones stay."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update

from jobfleet.engine.retention import Retention, RetentionSettings
from jobfleet.store.database import Database
from jobfleet.store.procs import ProcStore, ProcTarget
from jobfleet.store.retention import RetentionStore
from jobfleet.store.tables import proc_operations, proc_results


async def test_old_process_operations_go_with_their_results(db: Database, tmp_path: Path) -> None:
    procs = ProcStore(db)
    for n in range(5):
        targets = [ProcTarget(h, f"0:127.0.0.{h}", "nodeman", f"p{n}", 0) for h in (1, 2)]
        await procs.create(f"task-{n}", targets, biz_ids=[2], operator="admin",
                           app_code="bk_nodeman", handling=115,
                           answered=[(ProcTarget(None, "0:x", "nodeman", f"p{n}", 0), 117, "")])
    async with db.begin() as conn:
        await conn.execute(update(proc_operations)
                           .where(proc_operations.c.task_id.in_(["task-0", "task-1", "task-2"]))
                           .values(create_time=1000))
    store = RetentionStore(db, tmp_path)
    off = Retention(store, RetentionSettings(jobs=0, audit=0, blobs=0, heal=0))
    assert (await off.run_once())["procs"] == 0
    retention = Retention(store, RetentionSettings(audit=0, blobs=0, heal=0, batch=2, pause=0))
    assert (await retention.run_once())["procs"] == 3
    async with db.connect() as conn:
        left = sorted((await conn.execute(select(proc_operations.c.task_id))).scalars())
        rows = sorted((await conn.execute(select(proc_results.c.task_id))).scalars())
    assert left == ["task-3", "task-4"]
    assert rows == ["task-3"] * 3 + ["task-4"] * 3
    assert await procs.operation("task-0") is None
    assert len(await procs.results("task-4")) == 3
