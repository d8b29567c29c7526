"""Output clustering: hosts whose outputs differ only in addresses, names and numbers
fall in one group, and the smallest groups (the outliers) come first."""

from __future__ import annotations

import re
from collections.abc import Iterable

_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b")
_IPV6 = re.compile(r"\b(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{0,4}\b")
# dotted names (web-01.example.com) and names ending in digits (db12, web-03)
_HOST = re.compile(
    r"\b[A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)+\b|\b[A-Za-z][A-Za-z-]*[-_]?\d+[A-Za-z0-9-]*\b"
)
_HEX = re.compile(r"\b[0-9a-fA-F]{8,}\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# outputs are compared on their first characters: enough to tell a group, cheap at scale
COMPARED_CHARS = 4096


def normalize(text: str) -> str:
    text = text[:COMPARED_CHARS]
    text = _IPV4.sub("<ip>", text)
    text = _IPV6.sub("<ip>", text)
    text = _HEX.sub("<hex>", text)
    text = _HOST.sub("<host>", text)
    text = _NUMBER.sub("<n>", text)
    return " ".join(text.split())


def group_outputs(outputs: Iterable[tuple[int, str]]) -> list[tuple[str, list[int]]]:
    """(normalized output, host ids) per group: smallest first, then by text."""
    groups: dict[str, list[int]] = {}
    for host, text in outputs:
        groups.setdefault(normalize(text), []).append(host)
    return sorted(groups.items(), key=lambda item: (len(item[1]), item[0]))
