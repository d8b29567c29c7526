"""agent/backoff.py: full jitter within bounds that grow, then stop at the cap."""

from __future__ import annotations

import random

from jobfleet.agent.backoff import FLOOR, STABLE_SESSION, attempts_after, reconnect_delay


def test_the_window_doubles_then_stops_at_the_cap() -> None:
    highest = lambda low, high: high  # noqa: E731 - the top of the window
    assert [reconnect_delay(n, 10.0, highest) for n in range(1, 7)] == [
        1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert reconnect_delay(10_000, 10.0, highest) == 10.0  # no overflow, still the cap
    assert reconnect_delay(0, 10.0, highest) == 0.5
    # a cap under the floor leaves the floor
    assert reconnect_delay(3, 0.0, highest) == FLOOR


def test_delays_spread_over_the_whole_window() -> None:
    rng = random.Random(7)
    delays = [reconnect_delay(20, 10.0, rng.uniform) for _ in range(10_000)]
    assert min(delays) >= FLOOR and max(delays) <= 10.0
    # full jitter: agents that lost the server together do not come back together
    per_second = [sum(1 for d in delays if s <= d < s + 1) for s in range(10)]
    assert min(per_second[1:]) > 800 and max(per_second) < 1200


def test_a_session_that_held_starts_the_count_again_however_it_ended() -> None:
    # five failed tries while the server was down, then a session that held, then a crash
    assert attempts_after(5, established=True, lasted=STABLE_SESSION + 1) == 0
    # dropped right after it began, or never established: the window keeps growing
    assert attempts_after(5, established=True, lasted=0.2) == 5
    assert attempts_after(5, established=False, lasted=STABLE_SESSION * 10) == 5
