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


def test_an_end_before_its_start_took_no_time() -> None:
    """An agent's or another server's clock behind this one's: not "-3 ms"."""
    start = 1_796_630_544_996
    assert _duration(start, start - 3) == "0 ms"
    assert _duration(start, start - 61_000) == "0 ms"
    # a running step whose start is ahead of this server's clock
    assert _duration(start + 10**9, None) == "0 ms"
