"""Durations as operators write them: the CLI's token lifetimes and the server's
configuration read them with one function."""

from __future__ import annotations

import pytest

from jobfleet.domain.durations import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [("3600", 3600), ("90s", 90), ("30m", 1800),
                                               ("24h", 86400), ("7d", 604800), (" 2H ", 7200),
                                               ("2w", 1209600)])
def test_lifetimes(text: str, seconds: int) -> None:
    assert parse_duration(text, whole=True) == seconds
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "1.5h", "h", "24 h", "5y", "99999d"])
def test_bad_lifetimes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text, whole=True)


def test_zero_keeps_forever_where_allowed() -> None:
    assert parse_duration("0", zero=True, whole=True) == 0
    assert parse_duration("90d", zero=True, whole=True) == 90 * 86400
    with pytest.raises(ValueError):
        parse_duration("0", whole=True)
    for bad in ("", "d", "-1d", "ten", "nan"):
        with pytest.raises(ValueError):
            parse_duration(bad, zero=True, whole=True)


@pytest.mark.parametrize(("value", "seconds"), [(2.5, 2.5), ("1.5h", 5400.0), (60, 60.0)])
def test_configuration_takes_fractions_and_numbers(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [True, None, [1], -1, 0.0, float("inf"), float("nan")])
def test_bad_configuration_values_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)
