"""Token buckets per source address, on a clock the test moves."""

from __future__ import annotations

import pytest

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate_per_address() -> None:
    clock = Clock()
    throttle = Throttle("enrollments", rate=2.0, burst=3, clock=clock)
    assert [throttle.take("a") for _ in range(4)] == [True, True, True, False]
    assert throttle.take("b")  # another address has its own bucket
    assert throttle.exhausted("a") and not throttle.exhausted("b")
    clock.now += 0.5  # one token back at 2/s
    assert throttle.take("a") and not throttle.take("a")
    clock.now += 100
    assert [throttle.take("a") for _ in range(4)] == [True, True, True, False]


def test_refusal_is_a_429_in_the_envelope_with_a_wait() -> None:
    clock = Clock()
    throttle = Throttle("failed authentications", rate=0.1, burst=1, clock=clock)
    throttle.check("127.0.0.1")
    assert throttle.take("127.0.0.1")
    with pytest.raises(JobError) as caught:
        throttle.check("127.0.0.1")
    assert caught.value.http_status == 429
    assert caught.value.code == ErrorCode.TOO_MANY_REQUESTS
    assert caught.value.message == (
        "Too many failed authentications from 127.0.0.1: try again in 10 s")


def test_rate_zero_turns_it_off() -> None:
    throttle = Throttle("enrollments", rate=0, burst=1)
    assert all(throttle.take("a") for _ in range(1000))
    throttle.check("a")


def test_memory_is_bounded_under_a_flood_of_addresses() -> None:
    clock = Clock()
    throttle = Throttle("x", rate=1.0, burst=2, clock=clock, max_addresses=100)
    for i in range(1000):
        throttle.take(f"a{i}")
    assert len(throttle._buckets) <= 100
    # buckets that refilled are forgotten first, the busy one stays
    clock.now += 10
    for _ in range(2):
        throttle.take("busy")
    for i in range(200):
        throttle.take(f"b{i}")
    assert len(throttle._buckets) <= 100
