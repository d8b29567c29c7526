"""The index of step attempts a node drives."""

from __future__ import annotations

from jobfleet.engine.tracking import REFUSED, SENT, WAITING, StepRun, Tracker


def test_a_result_finishes_a_host_and_the_run_once_all_are_in() -> None:
    tracker = Tracker()
    run = StepRun(1, 10, 0, {"script": "x"})
    run.pending = {1: SENT, 2: WAITING}
    tracker.track(run)
    assert tracker.pending() == 2
    assert tracker.is_live((10, 0, 1)) and not tracker.is_live((10, 0, 2))
    assert [r.step_id for r in tracker.for_host(2)] == [10]
    tracker.finish((10, 0), 1)
    assert not run.done.is_set() and tracker.for_host(1) == []
    tracker.finish((10, 0), 2)
    assert run.done.is_set() and tracker.by_host == {}
    assert tracker.pending_for(10) is None


def test_untrack_returns_what_was_still_pending() -> None:
    tracker = Tracker()
    run = StepRun(1, 10, 0, {})
    run.pending = {1: SENT}
    tracker.track(run)
    assert tracker.pending_for(10) is run
    assert tracker.untrack(run) == [1]
    assert tracker.runs == {} and tracker.by_host == {}


def test_a_host_message_carries_its_own_values() -> None:
    template = {"t": "run", "id": "", "script": "x"}
    run = StepRun(1, 10, 2, template, per_host={5: {"env": {"A": "1"}}})
    assert run.message(5) == {"t": "run", "id": "10:2:5", "script": "x", "env": {"A": "1"}}
    assert run.message(6) == {"t": "run", "id": "10:2:6", "script": "x"}


def test_a_refusal_is_per_host_and_never_sent_to_an_agent() -> None:
    template = {"t": "run", "id": "", "script": "x", REFUSED: "shared value from a host"}
    run = StepRun(1, 10, 2, template, per_host={5: {"script": "y", REFUSED: ""},
                                               6: {"script": "z"}})
    assert (run.refusal(4), run.refusal(5), run.refusal(6)) == (
        "shared value from a host", "", "shared value from a host")
    for host in (4, 5, 6):
        assert REFUSED not in run.message(host)
