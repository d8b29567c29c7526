"""Lifetimes written the way operators write them: ``3600``, ``30m``, ``24h``, ``7d``."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TTL = re.compile(r"(\d+)([smhd]?)")
MAX_SECONDS = 10 * 365 * 86400


def parse_ttl(text: str, *, zero: bool = False) -> int:
    """Seconds; raises ValueError with a message fit for the operator.

    ``zero``: ``0`` is allowed (a retention period of 0 keeps forever)."""
    match = _TTL.fullmatch(text.strip().lower())
    if not match or int(match.group(1)) < (0 if zero else 1):
        raise ValueError(f"{text!r} is not a lifetime: write e.g. 3600, 30m, 24h or 7d")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds > MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than ten years")
    return seconds
