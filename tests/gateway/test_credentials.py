"""Agent credentials checked a batch at a time."""

from __future__ import annotations

import asyncio

import pytest

from jobfleet.gateway.credentials import CredentialChecks


class FakeStore:
    """The store's answer: the hosts of the valid credentials (a plain dict, no database)."""

    def __init__(self, valid: dict[tuple[str, str], int], fail: bool = False) -> None:
        self.valid = valid
        self.fail = fail
        self.calls: list[list[tuple[str, str]]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def check(self, creds: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        self.calls.append(list(creds))
        await self.release.wait()
        if self.fail:
            raise OSError("database gone")
        return {c: self.valid[c] for c in creds if c in self.valid}


async def test_a_lone_credential_is_checked_at_once() -> None:
    store = FakeStore({("a", "s"): 7})
    checks = CredentialChecks(store.check)
    assert await checks.check("a", "s") == 7
    assert await checks.check("a", "wrong") is None
    assert store.calls == [[("a", "s")], [("a", "wrong")]]


async def test_credentials_arriving_together_share_one_query() -> None:
    store = FakeStore({(f"a{i}", "s"): i for i in range(50)})
    checks = CredentialChecks(store.check)
    answers = await asyncio.gather(
        *(checks.check(f"a{i}", "s") for i in range(50)), checks.check("a1", "bad")
    )
    assert answers == [*range(50), None]
    assert len(store.calls) == 1


async def test_those_arriving_during_a_query_go_in_the_next_one() -> None:
    store = FakeStore({("a", "s"): 1, ("b", "s"): 2, ("c", "s"): 3})
    checks = CredentialChecks(store.check)
    store.release.clear()
    first = asyncio.ensure_future(checks.check("a", "s"))
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(checks.check(x, "s")) for x in ("b", "c")]
    await asyncio.sleep(0.01)
    store.release.set()
    assert await first == 1
    assert [await f for f in later] == [2, 3]
    assert store.calls == [[("a", "s")], [("b", "s"), ("c", "s")]]


async def test_batches_are_bounded() -> None:
    store = FakeStore({(f"a{i}", "s"): i for i in range(25)})
    checks = CredentialChecks(store.check, max_batch=10)
    answers = await asyncio.gather(*(checks.check(f"a{i}", "s") for i in range(25)))
    assert answers == list(range(25))
    assert [len(c) for c in store.calls] == [10, 10, 5]


async def test_a_failed_query_fails_its_waiters_and_the_next_one_runs() -> None:
    store = FakeStore({("a", "s"): 1}, fail=True)
    checks = CredentialChecks(store.check)
    results = await asyncio.gather(
        checks.check("a", "s"), checks.check("b", "s"), return_exceptions=True
    )
    assert all(isinstance(r, OSError) for r in results)
    store.fail = False
    assert await checks.check("a", "s") == 1


async def test_a_waiter_that_gives_up_does_not_disturb_the_others() -> None:
    store = FakeStore({("a", "s"): 1, ("b", "s"): 2})
    checks = CredentialChecks(store.check)
    store.release.clear()
    gone = asyncio.ensure_future(checks.check("a", "s"))
    stays = asyncio.ensure_future(checks.check("b", "s"))
    await asyncio.sleep(0.01)
    gone.cancel()
    store.release.set()
    assert await stays == 2
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_waiters_end_when_the_checks_are_cancelled() -> None:
    store = FakeStore({("a", "s"): 1, ("b", "s"): 2})
    checks = CredentialChecks(store.check)
    store.release.clear()
    in_query = asyncio.ensure_future(checks.check("a", "s"))
    await asyncio.sleep(0.01)
    queued = asyncio.ensure_future(checks.check("b", "s"))
    await asyncio.sleep(0.01)
    assert checks._task is not None
    checks._task.cancel()
    for waiter in (in_query, queued):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiter, 2)
