"""A cron's firings are history like jobs: older than the jobs' period they go, but the
latest firing of each cron stays, for the cron pages."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update

from jobfleet.engine.retention import Retention, RetentionSettings
from jobfleet.store.crons import CronStore
from jobfleet.store.database import Database
from jobfleet.store.retention import RetentionStore
from jobfleet.store.tables import cron_firings


async def test_old_firings_go_but_each_crons_latest_stays(db: Database, tmp_path: Path) -> None:
    async with db.begin() as conn:
        for slot in range(1, 6):
            await CronStore.record(conn, 1, slot * 60, "fired", node="n1")
        await CronStore.record(conn, 2, 60, "skipped", node="n1")
        await CronStore.record(conn, 3, 60, "fired", node="n1")
        await CronStore.record(conn, 3, 120, "fired", node="n1")
        # cron 1's slots 1-4, cron 2's only firing and cron 3's first are old
        await conn.execute(update(cron_firings)
                           .where((cron_firings.c.cron_id == 1) & (cron_firings.c.slot <= 240))
                           .values(create_time=1000))
        await conn.execute(update(cron_firings)
                           .where(cron_firings.c.cron_id.in_([2, 3]) & (cron_firings.c.slot == 60))
                           .values(create_time=1000))
    store = RetentionStore(db, tmp_path)
    off = Retention(store, RetentionSettings(jobs=0, audit=0, blobs=0, heal=0))
    assert (await off.run_once())["firings"] == 0
    retention = Retention(store, RetentionSettings(audit=0, blobs=0, heal=0, batch=2, pause=0))
    assert (await retention.run_once())["firings"] == 5
    async with db.connect() as conn:
        rows = await conn.execute(select(cron_firings.c.cron_id, cron_firings.c.slot))
        left = sorted(rows.all())
    assert [tuple(r) for r in left] == [(1, 300), (2, 60), (3, 120)]
    # the latest of each stays even when old: cron 1's newest becomes old too
    async with db.begin() as conn:
        await conn.execute(update(cron_firings).values(create_time=1000))
    assert (await retention.run_once())["firings"] == 0
