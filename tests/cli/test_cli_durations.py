"""Token lifetimes as operators write them."""

from __future__ import annotations

import pytest

from jobfleet.cli._durations import parse_ttl


@pytest.mark.parametrize(("text", "seconds"), [("3600", 3600), ("90s", 90), ("30m", 1800),
                                               ("24h", 86400), ("7d", 604800), (" 2H ", 7200)])
def test_lifetimes(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "1.5h", "h", "24 h", "5w", "99999d"])
def test_bad_lifetimes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ttl(text)


def test_zero_keeps_forever_where_allowed() -> None:
    assert parse_ttl("0", zero=True) == 0
    assert parse_ttl("90d", zero=True) == 90 * 86400
    with pytest.raises(ValueError):
        parse_ttl("0")
    for bad in ("", "d", "-1d", "ten", "nan"):
        with pytest.raises(ValueError):
            parse_ttl(bad, zero=True)
