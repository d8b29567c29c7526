"""The sizes a file task log shows, as bk-job writes them."""

from __future__ import annotations

import pytest

from jobfleet.api.transfer import human_size


@pytest.mark.parametrize(("size", "text"), [
    (None, "0.0 Bytes"),
    (1023, "1023.0 Bytes"),
    (1536, "1.5 KB"),
    (128 * 1024**2, "128.0 MB"),
    (1024**3, "1.0 GB"),
    (5 * 1024**4, "5120.0 GB"),
])
def test_a_size_is_shown_in_its_largest_unit_up_to_gigabytes(size: int | None,
                                                             text: str) -> None:
    assert human_size(size) == text
