"""Variables in a file step's target path, as bk-job expands them.

``[FILESRCIP]`` becomes ``<bk_cloud_id>_<ip>`` of the source host (``0_0.0.0.0`` for
files uploaded to the server), ``[DATE:<pattern>]`` the time formatted with a Java
date pattern (``yyyy-MM-dd``), ``[DATEFMT:<format>]`` the time formatted with
``strftime``. A ``[DATE:…]`` whose pattern cannot be read stays as written.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jobfleet.domain.protocol import at_or_below

FILE_SRC_IP = "[FILESRCIP]"
LOCAL_SOURCE = "0_0.0.0.0"
# Linux's PATH_MAX and NAME_MAX; a file log keeps a path of up to MAX_PATH characters
MAX_PATH = 4096
MAX_NAME = 255

# Java DateTimeFormatter letters that have a strftime twin, longest first
_JAVA_TOKENS = [
    ("yyyy", "%Y"),
    ("yy", "%y"),
    ("MM", "%m"),
    ("dd", "%d"),
    ("HH", "%H"),
    ("mm", "%M"),
    ("ss", "%S"),
    ("SSS", "{ms}"),
    ("EEE", "%a"),
    ("MMM", "%b"),
]
_TOKEN = re.compile(
    "|".join(re.escape(t) for t, _ in sorted(_JAVA_TOKENS, key=lambda p: -len(p[0])))
)
_DATE = re.compile(r"\[DATE:([^\]]*)\]")
_DATEFMT = re.compile(r"\[DATEFMT:([^\]]*)\]")


def stays_below(rel: str) -> bool:
    """``rel`` names an entry below a directory, not the directory, above it or elsewhere.

    A source agent's listing gives each file the path it takes under the target
    directory; one that is absolute, empty or climbs with ``..`` would be written
    outside it."""
    if not rel or "\0" in rel or rel.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


# how an agent reads a source pattern (``agent.files.sources``)
REGEX_MARK = "REGEX:"
_GLOB_MAGIC = re.compile(r"[*?\[]")


def _named_by(pattern: str, full: str, rel: str) -> bool:
    """Whether an honest agent could list ``full`` under the name ``rel`` for ``pattern``
    (``agent.files.sources``): a plain path names itself and what lies below it, under
    its own name; a glob the entries matching it below the directory before its first
    wildcard, named from that directory; ``<dir>/REGEX:<expr>`` entries of ``dir``,
    named from ``dir``."""
    if REGEX_MARK in pattern:
        # the expression is not run here: an operator's expression that backtracks
        # badly, fed a name the source chose, would hold the server's loop
        base = posixpath.normpath(pattern.partition(REGEX_MARK)[0] or "/")
        return _below(full, base, rel)
    parts = pattern.split("/")
    wild = next((i for i, part in enumerate(parts) if _GLOB_MAGIC.search(part)), None)
    if wild is None:
        path = posixpath.normpath(pattern)
        return at_or_below(full, path) and _below(
            full, posixpath.dirname(path), rel
        )
    rest = [part for part in parts[wild:] if part]
    if ".." in rest:
        # a ".." after the wildcard climbs out of the directory: the entry keeps its name
        return full.endswith("/" + rel)
    names = rel.split("/")
    base = posixpath.normpath("/".join(parts[:wild]) or "/")
    return (
        _below(full, base, rel)
        and len(names) >= len(rest)
        and all(_glob_match(name, part) for name, part in zip(names, rest, strict=False))
    )


def _below(full: str, base: str, rel: str) -> bool:
    return full == posixpath.join(base, rel)


def _glob_match(name: str, part: str) -> bool:
    # as the agent and the shell match: a wildcard does not match a leading dot
    if name.startswith(".") and not part.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, part)


def listed_as_asked(patterns: list[str], path: str, rel: str) -> bool:
    """A source agent's listed entry is one the patterns name, under the name an honest
    agent gives it. A source that named any other would put a file of its choosing at a
    name of its choosing on every target."""
    full = posixpath.normpath(path)
    return any(_named_by(pattern, full, rel) for pattern in patterns)


def host_source_files(config: Mapping[str, Any] | None) -> dict[int, list[str]]:
    """A file step's source hosts (its config's ``sources`` of kind ``host``), each with
    the paths the step takes from it."""
    found: dict[int, list[str]] = {}
    for source in (config or {}).get("sources") or []:
        if isinstance(source, dict) and source.get("kind") == "host":
            for host in source.get("host_ids") or []:
                found.setdefault(int(host), []).extend(str(f) for f in source.get("files") or [])
    return found


def source_label(bk_cloud_id: int, ip: str) -> str:
    return f"{bk_cloud_id}:{ip}".replace(":", "_")


def java_date(pattern: str, when: datetime) -> str | None:
    """Format ``when`` with a Java date pattern; None if the pattern has other letters."""
    out: list[str] = []
    pos = 0
    table = dict(_JAVA_TOKENS)
    for match in _TOKEN.finditer(pattern):
        literal = pattern[pos : match.start()]
        if any(ch.isalpha() for ch in literal):
            return None
        out.append(literal)
        spec = table[match.group()]
        out.append(f"{when.microsecond // 1000:03d}" if spec == "{ms}" else when.strftime(spec))
        pos = match.end()
    tail = pattern[pos:]
    if any(ch.isalpha() for ch in tail):
        return None
    out.append(tail)
    return "".join(out)


def expand_path(path: str, *, source: str | None, when: datetime) -> str:
    """Expand the variables of a target path for one source host (``source_label``)."""
    if source is not None:
        path = path.replace(FILE_SRC_IP, source)

    def date(match: re.Match[str]) -> str:
        formatted = java_date(match.group(1), when)
        return match.group(0) if formatted is None else formatted

    def datefmt(match: re.Match[str]) -> str:
        try:
            return when.strftime(match.group(1))
        except ValueError:
            return match.group(1)

    return _DATEFMT.sub(datefmt, _DATE.sub(date, path))
