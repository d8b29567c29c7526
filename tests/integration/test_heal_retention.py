"""Self-healing decisions are purged by the retention task like other history:
older than ``retention.heal`` (default 90 days) they go, younger ones stay."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select, update
from tests.integration.harness import Running
from tests.integration.test_self_healing import IPS, OWN, SECRET, make_plan, post

from jobfleet.engine.retention import DAY, Retention, RetentionSettings
from jobfleet.server_config import load
from jobfleet.store.retention import RetentionStore
from jobfleet.store.tables import heal_decisions


async def test_old_heal_decisions_are_purged(running: Running) -> None:
    await running.start_agents(IPS[:1])
    plan_id = await make_plan(running.wire)
    made = await running.wire.post(f"{OWN}/businesses/2/heal-rules", {
        "name": "dry", "job_plan_id": plan_id, "secret": SECRET, "host_variable": "target",
        "dry_run": True})
    assert made["result"], made
    for _ in range(3):
        answer = await post(running.url, made["data"]["id"],
                            {"alertname": "HighDisk", "labels": {"instance": IPS[0]}})
        assert answer["result"], answer
    db = running.server.db
    async with db.begin() as conn:
        first = (await conn.execute(select(func.min(heal_decisions.c.id)))).scalar_one()
        await conn.execute(update(heal_decisions).where(heal_decisions.c.id <= first + 1)
                           .values(create_time=1000))
    assert RetentionSettings().heal == 90 * DAY
    store = RetentionStore(db, running.server.blobs.root)
    off = Retention(store, RetentionSettings(jobs=0, audit=0, blobs=0, heal=0))
    assert (await off.run_once())["heal"] == 0
    retention = Retention(store, RetentionSettings(jobs=0, audit=0, blobs=0, batch=1, pause=0))
    assert (await retention.run_once())["heal"] == 2
    async with db.connect() as conn:
        left = list((await conn.execute(select(heal_decisions.c.id))).scalars())
    assert left == [first + 2]
    # the page of decisions still answers
    page = await running.wire.get(f"{OWN}/businesses/2/heal-decisions", {})
    assert page["result"] and len(page["data"]["data"]) == 1, page


def test_the_period_is_a_setting(tmp_path: Path) -> None:
    settings = load(None, {"data_dir": tmp_path, "retention.heal": "30d"})
    assert settings.retention.heal == 30 * DAY
