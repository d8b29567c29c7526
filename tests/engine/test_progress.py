"""Progress: a job driver that shows no turn past what it expected counts as stalled."""

from __future__ import annotations

import time

from jobfleet.engine.progress import Progress


def test_a_driver_is_stalled_only_past_its_last_turn_and_what_it_expected() -> None:
    progress = Progress()
    progress.touch(1)
    progress.expect(2, 60.0)
    time.sleep(0.05)
    assert set(progress.stalled(0.01)) == {1}
    assert progress.stalled(1.0) == {}
    progress.touch(1)
    assert progress.stalled(0.01) == {}
    progress.forget(1)
    progress.forget(2)
    time.sleep(0.02)
    assert progress.stalled(0.0) == {}


def test_what_a_step_expected_ends_with_it() -> None:
    """A file step expects its whole timeout (a day, say); the next step's driver stuck
    on an await counts as stalled after the limit, not after that day."""
    progress = Progress()
    progress.expect(1, 86_400.0)
    progress.step(1)
    time.sleep(0.05)
    assert set(progress.stalled(0.01)) == {1}


def test_a_shorter_wait_leaves_what_the_step_expected() -> None:
    """A file step expects its timeout; a staggered pause within it expects less: the
    step's sources still settle at its end with no turn shown, as it expected."""
    progress = Progress()
    progress.expect(1, 60.0)
    progress.expect(1, 0.0)
    time.sleep(0.05)
    assert progress.stalled(0.01) == {}
