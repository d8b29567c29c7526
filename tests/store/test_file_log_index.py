"""The file log's index covers a row's full key, so a step's per-file updates are look-ups."""

from __future__ import annotations

from sqlalchemy import text

from jobfleet.store.database import Database
from jobfleet.store.filelogs import DOWNLOAD, FileLogStore, update_row


async def test_a_file_result_updates_its_row_through_the_full_key_index(db: Database) -> None:
    logs = FileLogStore(db)
    await logs.add([
        {"step_instance_id": 1, "execute_count": 0, "bk_host_id": 7, "mode": DOWNLOAD,
         "seq": n, "src_path": f"/src/f{n}", "status": 1, "progress": 0, "log_content": ""}
        for n in range(50)])
    await logs.update([update_row(1, 0, 7, DOWNLOAD, 42, status=4, size=3, speed=1.0,
                                  progress=100, log="done")])
    rows = await logs.rows(1, 0, host_ids=[7], mode=DOWNLOAD)
    assert [r.seq for r in rows if r.status == 4] == [42]
    if db.is_sqlite:
        async with db.connect() as conn:
            plan = " ".join(str(r[-1]) for r in await conn.execute(text(
                "EXPLAIN QUERY PLAN UPDATE file_logs SET status = 4 WHERE step_instance_id = 1 "
                "AND execute_count = 0 AND bk_host_id = 7 AND mode = 1 AND seq = 42")))
        assert "mode=? AND seq=?" in plan, plan
