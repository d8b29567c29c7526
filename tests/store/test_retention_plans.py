"""Each retention batch finds its rows through the creation time's index: a pass costs
the rows it deletes, not a scan of a table of a year (nor one more scan at the end,
when nothing is left to find)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.store.query_plans import plan_for, plans_of, sorts_all

from jobfleet.store.database import Database
from jobfleet.store.retention import RetentionStore


@pytest.mark.parametrize(
    ("table", "purge"),
    [
        ("audit_log", "purge_audit"),
        ("heal_decisions", "purge_heal_decisions"),
        ("proc_operations", "purge_proc_operations"),
        ("job_instances", "purge_jobs"),
    ],
)
async def test_a_retention_batch_searches_by_creation_time(
    db: Database, tmp_path: Path, table: str, purge: str
) -> None:
    store = RetentionStore(db, tmp_path)
    plan = plan_for(await plans_of(db, lambda: getattr(store, purge)(1_000, 500)), table)
    assert f"ix_{table}_create_time" in plan, plan
    # rows found in index order: no sort of every old row to keep the first 500
    assert not sorts_all(plan), plan


async def test_blobs_in_use_finds_the_unfinished_jobs_by_their_status(
    db: Database, tmp_path: Path
) -> None:
    """The files of jobs still running are kept: those jobs are found in the status
    index by each unfinished status, not by reading the status of every job kept."""
    plans = await plans_of(db, RetentionStore(db, tmp_path).blobs_in_use)
    live = [p for p in plans if "FROM job_instances" in p]
    assert len(live) == 2, plans
    for plan in live:
        found = plan.split(" => ", 1)[1]
        assert "SCAN job_instances" not in found, found
        assert "<> ALL" not in found, found
