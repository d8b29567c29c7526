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


@pytest.mark.parametrize("text", [
    f"1.0.1:{2**31}", f"1.0.1:{-(2**31) - 1}", f"1.{2**31}.1:1", f"{2**63}.0.1:1",
    f"1.0.{2**63}:1", f"1.0.1:{'9' * 5000}",
])
def test_a_cursor_past_what_the_store_holds_is_refused(text: str) -> None:
    """Every number of a cursor fits its column: the sequence reaches the database."""
    with pytest.raises(JobError):
        parse_cursor(text)
    assert parse_cursor(f"{2**63 - 1}.{2**31 - 1}.{2**63 - 1}:{2**31 - 1}") == {
        (2**63 - 1, 2**31 - 1, 2**63 - 1): 2**31 - 1}


def test_hosts() -> None:
    assert parse_hosts("all") is None
    assert parse_hosts("1, 2,3") == {1, 2, 3}
    assert parse_hosts("") == set()
    with pytest.raises(JobError):
        parse_hosts("x")
    with pytest.raises(JobError):
        parse_hosts(",".join(str(i) for i in range(MAX_WATCHED + 1)))
