"""Group commit: batches in arrival order, each caller its own outcome, and a failing
batch written again item by item so that only the bad item fails."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from jobfleet.store.group_commit import GroupCommit


class Refused(Exception):
    pass


class Recorder:
    """A write that records its batches: "bad" items break the whole write, "no"
    items are refused alone, every other item is answered with its upper case."""

    def __init__(self, pause: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.pause = pause

    async def write(self, items: Sequence[str]) -> list[str | Exception]:
        self.batches.append(list(items))
        await asyncio.sleep(self.pause)
        if "bad" in items:
            raise RuntimeError("the database refused the batch")
        return [Refused(i) if i == "no" else i.upper() for i in items]


async def test_callers_that_come_together_share_one_write_in_arrival_order() -> None:
    rec = Recorder()
    commits = GroupCommit("t", rec.write)
    items = [f"item{i}" for i in range(50)]
    answers = await asyncio.gather(*(commits.submit(i) for i in items))
    assert answers == [i.upper() for i in items]
    assert rec.batches == [items]
    assert (commits.batches, commits.items) == (1, 50)


async def test_what_comes_during_a_write_waits_for_the_next_one() -> None:
    rec = Recorder(pause=0.05)
    commits = GroupCommit("t", rec.write)
    first = asyncio.create_task(commits.submit("a"))
    await asyncio.sleep(0.01)  # "a" is being written
    later = [asyncio.create_task(commits.submit(x)) for x in ("b", "c", "d")]
    assert await asyncio.gather(first, *later) == ["A", "B", "C", "D"]
    assert rec.batches == [["a"], ["b", "c", "d"]]


async def test_batches_hold_at_most_max_batch_items_and_keep_the_order() -> None:
    rec = Recorder()
    commits = GroupCommit("t", rec.write, max_batch=4)
    items = [str(i) for i in range(10)]
    assert await asyncio.gather(*(commits.submit(i) for i in items)) == items
    assert rec.batches == [items[0:4], items[4:8], items[8:10]]


async def test_a_refusal_is_its_own_callers_and_nobody_elses() -> None:
    rec = Recorder()
    commits = GroupCommit("t", rec.write)
    answers = await asyncio.gather(
        *(commits.submit(i) for i in ("x", "no", "y")), return_exceptions=True
    )
    assert answers[0] == "X" and answers[2] == "Y"
    assert isinstance(answers[1], Refused)
    assert rec.batches == [["x", "no", "y"]]


async def test_a_batch_that_fails_is_written_again_item_by_item() -> None:
    rec = Recorder()
    commits = GroupCommit("t", rec.write)
    answers = await asyncio.gather(
        *(commits.submit(i) for i in ("x", "bad", "no", "y")), return_exceptions=True
    )
    assert answers[0] == "X" and answers[3] == "Y"
    assert isinstance(answers[1], RuntimeError)
    assert isinstance(answers[2], Refused)
    assert rec.batches == [["x", "bad", "no", "y"], ["x"], ["bad"], ["no"], ["y"]]


async def test_a_write_with_the_wrong_number_of_outcomes_fails_no_caller_silently() -> None:
    async def short(items: Sequence[str]) -> list[str | Exception]:
        return [i.upper() for i in items][:1]

    commits = GroupCommit("t", short)
    answers = await asyncio.gather(*(commits.submit(i) for i in ("x", "y")), return_exceptions=True)
    # written again one by one, each batch of one gets its one outcome
    assert answers == ["X", "Y"]


async def test_a_caller_cancelled_while_waiting_leaves_the_queue() -> None:
    rec = Recorder(pause=0.05)
    commits = GroupCommit("t", rec.write)
    first = asyncio.create_task(commits.submit("a"))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(commits.submit("gone"))
    stays = asyncio.create_task(commits.submit("b"))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == "A" and await stays == "B"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert rec.batches == [["a"], ["b"]]


async def test_linger_gathers_callers_that_come_a_little_later() -> None:
    rec = Recorder()
    commits = GroupCommit("t", rec.write, linger=0.2)

    async def after(delay: float, item: str) -> str:
        await asyncio.sleep(delay)
        return await commits.submit(item)

    assert await asyncio.gather(after(0, "a"), after(0.05, "b")) == ["A", "B"]
    assert rec.batches == [["a", "b"]]


async def test_many_concurrent_callers_each_get_their_own_answer() -> None:
    rec = Recorder(pause=0.001)
    commits = GroupCommit("t", rec.write, max_batch=32)

    async def caller(n: int) -> None:
        for k in range(20):
            await asyncio.sleep(0)
            assert await commits.submit(f"c{n}-{k}") == f"C{n}-{k}"

    await asyncio.gather(*(caller(n) for n in range(40)))
    assert commits.items == 800
    assert commits.batches < 800
    assert all(len(b) <= 32 for b in rec.batches)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        GroupCommit("t", Recorder().write, max_batch=0)
    with pytest.raises(ValueError):
        GroupCommit("t", Recorder().write, linger=-1)


async def test_a_writer_stopped_while_retrying_item_by_item_leaves_nobody_waiting() -> None:
    rec = Recorder(pause=0.05)
    commits = GroupCommit("t", rec.write)
    callers = [asyncio.create_task(commits.submit(i)) for i in ("x", "bad", "y")]
    while len(rec.batches) < 2:  # the batch failed; its first item is being retried
        await asyncio.sleep(0.01)
    assert commits._writer is not None
    commits._writer.cancel()
    done, pending = await asyncio.wait(callers, timeout=2)
    assert not pending, "callers of the batch still wait after the writer stopped"
    for caller in done:
        assert caller.cancelled()
