"""Tags on scripts: short labels people sort scripts by (``ops``, ``backup``).

Stored as one text, ``",ops,backup,"``, so that the scripts with a tag are a LIKE on
any database; a tag therefore holds no comma.
"""

from __future__ import annotations

from typing import Any

from jobfleet.domain.errors import JobError

MAX_TAGS = 10
MAX_TAG = 32


def check_tag(raw: Any, field: str = "tag") -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise JobError.invalid(field, "a tag is a non-empty string")
    tag = raw.strip()
    if len(tag) > MAX_TAG:
        raise JobError.invalid(field, f"a tag is at most {MAX_TAG} characters")
    if "," in tag or any(ord(c) < 32 or ord(c) == 127 for c in tag):
        raise JobError.invalid(field, "a tag holds no comma and no control character")
    return tag


def check_tags(raw: Any, field: str = "tags") -> list[str]:
    """A list of tags, each checked, duplicates dropped, in the order given."""
    if not isinstance(raw, list):
        raise JobError.invalid(field, "a list of strings")
    tags: list[str] = []
    for item in raw:
        tag = check_tag(item, field)
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise JobError.invalid(field, f"at most {MAX_TAGS} tags")
    return tags


def joined(tags: list[str]) -> str:
    return f",{','.join(tags)}," if tags else ""


def split(stored: str | None) -> list[str]:
    return [t for t in (stored or "").split(",") if t]
