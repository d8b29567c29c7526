"""The newest migration this program ships, read from the migration files' text.

A server starting on a database already at that revision needs nothing of Alembic:
its modules (and Mako's, and Pygments' under them) hold ~10 MiB that would stay
loaded for the life of the process. Alembic itself still runs every upgrade.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

VERSIONS = Path(__file__).parent / "migrations" / "versions"

_REVISION = re.compile(r'^revision = "([^"\n]+)"$', re.MULTILINE)
_DOWN = re.compile(r'^down_revision = (?:"([^"\n]+)"|None)$', re.MULTILINE)


@cache
def shipped_head() -> str | None:
    """The one revision no other revises; none when the files say anything less plain
    (a file without both lines, a merge, branches), so that Alembic decides."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.findall(text), _DOWN.findall(text)
        if len(revision) != 1 or len(down) != 1:
            return None
        revisions.add(revision[0])
        if down[0]:
            revised.add(down[0])
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 and revised <= revisions else None
