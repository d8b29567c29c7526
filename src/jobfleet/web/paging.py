"""Paging of the catalog's console lists: a page's size and the offset from the address."""

from __future__ import annotations

from collections.abc import Mapping

PAGE = 100
# an offset past this is past every list (and beyond what a database takes)
MAX_OFFSET = 2**31 - 1


def number(value: str | None) -> int | None:
    """An id from the address: digits that fit in 64 bits, else None."""
    return int(value) if value and value.isdecimal() and len(value) < 19 else None


def offset_of(query: Mapping[str, str]) -> int:
    return min(number(query.get("offset")) or 0, MAX_OFFSET)
