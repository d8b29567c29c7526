"""RuleStore.check on a real database: a crafted script against a careless rule is checked
off the event loop, within the store's limits, while the loop goes on; enforce refuses."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from jobfleet.domain.dangerous import RuleAction, RuleStatus, ScanLimits
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.database import Database
from jobfleet.store.rules import RuleStore

CRAFTED = "rm " + "a" * 60 + "!"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[RuleStore]:
    db = Database(database_url)
    await db.migrate()
    try:
        yield RuleStore(db, limits=ScanLimits(rule=1.0, total=2.0))
    finally:
        await db.close()


async def test_a_careless_rule_is_checked_off_the_loop_and_refuses(
    store: RuleStore, caplog: pytest.LogCaptureFixture
) -> None:
    rule = await store.create(expression=r"^rm (a|aa)+$", languages=[1],
                              action=RuleAction.INTERCEPT, description="careless",
                              user="u", status=RuleStatus.ENABLED)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    begun = time.monotonic()
    with caplog.at_level(logging.WARNING, "jobfleet.store.rules"), \
            pytest.raises(JobError) as info:
        await store.enforce(f"echo a\n{CRAFTED}\n", 1, where="step 'x'")
    took = time.monotonic() - begun
    ticker.cancel()
    assert info.value.code == ErrorCode.DANGEROUS_SCRIPT_BLOCKED
    assert f"(id {rule['id']})" in info.value.message and "line 2" in info.value.message
    assert "took too long" in info.value.message
    # the store's 1 s per rule, loosely; the loop ran meanwhile (a frozen one: 0 ticks)
    assert 0.5 < took < 20, took
    assert ticks >= 5, ticks
    assert f"dangerous_rule_timeout rule={rule['id']} action=INTERCEPT line=2" in caplog.text
    assert CRAFTED not in caplog.text
    # a usual script is checked as before: matches, and lines without them
    found = await store.check("echo hi\nrm aaa\nrm -rf aaa\n", 1)
    assert [(f.line, f.match_content, f.timed_out) for f in found] == [(2, "rm aaa", False)]
