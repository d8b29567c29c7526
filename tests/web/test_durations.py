"""How long a job or step took, on the console's pages."""

from __future__ import annotations

from jobfleet.web.pages import _duration


def test_a_short_step_shows_its_milliseconds() -> None:
    start = 1_796_630_544_996
    assert _duration(start, start + 28) == "28 ms"
    assert _duration(start, start + 999) == "999 ms"
    assert _duration(start, start + 1_250) == "1.2 s"
    assert _duration(start, start + 61_000) == "61.0 s"
    assert _duration(None, start) == ""
