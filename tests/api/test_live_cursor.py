"""The live stream's cursor (what an output event's id holds) and host selection."""

from __future__ import annotations

import pytest

from jobfleet.api.live import MAX_WATCHED, format_cursor, parse_cursor, parse_hosts
from jobfleet.domain.errors import JobError


def test_cursor_round_trip() -> None:
    cursor = {(12, 0, 3): 5, (12, 0, 1): 2, (13, 1, 3): 0}
    assert parse_cursor(format_cursor(cursor)) == cursor
    assert format_cursor({}) == "0"
    assert parse_cursor("0") == {}
    with pytest.raises(JobError):
        parse_cursor("a.b.c:d")


def test_hosts() -> None:
    assert parse_hosts("all") is None
    assert parse_hosts("1, 2,3") == {1, 2, 3}
    assert parse_hosts("") == set()
    with pytest.raises(JobError):
        parse_hosts("x")
    with pytest.raises(JobError):
        parse_hosts(",".join(str(i) for i in range(MAX_WATCHED + 1)))
