"""Rolling expressions: how a step's hosts split into batches."""

from __future__ import annotations

import pytest

from jobfleet.domain.errors import JobError
from jobfleet.domain.rolling import batch_sizes, parse_expression


def test_batches() -> None:
    assert batch_sizes("1 30% *2", 10) == [1, 3, 6]
    assert batch_sizes("1 +2", 7) == [1, 3, 3]


@pytest.mark.parametrize("expression", [
    "9" * 5000, "9" * 5000 + "%", "1 +" + "9" * 5000, "1 *" + "9" * 5000, "1 " + "9" * 30,
])
def test_numbers_past_any_host_count_are_refused(expression: str) -> None:
    """More digits than a number is read from: the envelope's error, not a crash."""
    with pytest.raises(JobError) as err:
        parse_expression(expression)
    assert "Invalid rolling expression" in err.value.message


def test_a_huge_count_that_fits_still_means_every_host() -> None:
    assert batch_sizes("9" * 18, 3) == [3]
