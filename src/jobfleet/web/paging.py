"""Paging of the catalog's console lists: a page's size and the offset from the address."""

from __future__ import annotations

from collections.abc import Mapping

PAGE = 100
# an offset past this is past every list (and beyond what a database takes)
MAX_OFFSET = 2**31 - 1


def offset_of(query: Mapping[str, str]) -> int:
    raw = query.get("offset", "")
    return min(int(raw), MAX_OFFSET) if raw.isdigit() and len(raw) < 19 else 0
