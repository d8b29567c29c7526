"""Line differences between two script versions, for the console to show.

Computed on the server with ``difflib``; the rows carry plain text, and the
templates escape it like everything else they render.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

# above this many lines a side, the diff is of the first lines only
MAX_LINES = 20_000


@dataclass(frozen=True)
class Row:
    """One row of a side-by-side view: ``kind`` is equal, replace, delete or insert;
    a side with no line has number None and empty text."""

    kind: str
    left_no: int | None
    left: str
    right_no: int | None
    right: str


def _lines(text: str) -> list[str]:
    return text.splitlines()[:MAX_LINES]


def side_by_side(old: str, new: str) -> list[Row]:
    a, b = _lines(old), _lines(new)
    rows: list[Row] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows += [Row("equal", i + 1, a[i], j + 1, b[j]) for i, j in zip(
                range(i1, i2), range(j1, j2), strict=True)]
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            i, j = i1 + k, j1 + k
            left = (i + 1, a[i]) if i < i2 else (None, "")
            right = (j + 1, b[j]) if j < j2 else (None, "")
            kind = tag if left[0] is not None and right[0] is not None else (
                "delete" if right[0] is None else "insert")
            rows.append(Row(kind, left[0], left[1], right[0], right[1]))
    return rows


def unified(old: str, new: str, old_name: str, new_name: str) -> list[tuple[str, str]]:
    """``(kind, line)`` pairs of a unified diff: kind is head, hunk, delete, insert or equal."""
    out: list[tuple[str, str]] = []
    for line in difflib.unified_diff(
        _lines(old), _lines(new), old_name, new_name, lineterm="", n=3
    ):
        if line.startswith(("---", "+++")):
            kind = "head"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("-"):
            kind = "delete"
        elif line.startswith("+"):
            kind = "insert"
        else:
            kind = "equal"
        out.append((kind, line))
    return out
