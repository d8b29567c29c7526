"""Durations written the way operators write them: ``3600``, ``2.5``, ``30m``, ``24h``,
``7d``, ``2w``. The server's configuration and the CLI's lifetimes read them alike."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_UNIT_LETTERS = "".join(_UNITS)
_DURATION = re.compile(rf"(\d+(?:\.\d+)?)([{_UNIT_LETTERS}]?)")
_WHOLE = re.compile(rf"(\d+)([{_UNIT_LETTERS}]?)")
MAX_SECONDS = 10 * 365 * 86400
_EXAMPLE = "write e.g. 3600, 30m, 24h or 7d"


def parse_duration(value: object, *, zero: bool = False, whole: bool = False) -> float:
    """Seconds from ``3600``, ``2.5``, ``"30m"``, ``"24h"``, ``"7d"``, ``"2w"``. Raises
    ValueError with a message fit for the operator.

    ``zero``: 0 is allowed (a retention period of 0 keeps forever). ``whole``: text must
    hold a whole number (``"90s"``, not ``"1.5h"``), for what the API takes in whole
    seconds."""
    if isinstance(value, bool):
        raise ValueError(f"is not a duration: {_EXAMPLE}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = (_WHOLE if whole else _DURATION).fullmatch(value.strip().lower())
        if not match:
            raise ValueError(f"{value!r} is not a duration: {_EXAMPLE}")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f"is not a duration: {_EXAMPLE}")
    # NaN (a TOML float) is neither below nor above any bound: refused by this form
    if not seconds >= 0 or (seconds == 0 and not zero):
        raise ValueError(f"{value!r} must be {'0 or more' if zero else 'more than 0'}")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{value!r} is longer than ten years")
    return seconds
