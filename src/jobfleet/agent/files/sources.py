"""Listing what a file step's source patterns name, as the step's account."""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
from dataclasses import dataclass

from jobfleet.agent import credentials
from jobfleet.agent.accounts import (
    READ,
    SEARCH,
    lookup_account,
)
from jobfleet.agent.files.rights import Rights
from jobfleet.domain.protocol import transferred_mode

logger = logging.getLogger(__name__)

REGEX_MARK = "REGEX:"
_GLOB_MAGIC = re.compile(r"[*?\[]")


class MissingSource(str):
    """A source pattern (or a file under it) that yields nothing, with the reason."""

    reason: str

    def __new__(cls, value: str, reason: str) -> MissingSource:
        # the listing goes to the server as JSON, which carries only valid UTF-8
        missing = super().__new__(cls, printable(value))
        missing.reason = printable(reason)
        return missing


def printable(name: str) -> str:
    """``name`` with the bytes that are not UTF-8 (held as surrogates) shown as ``\\xff``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class SourceFile:
    path: str  # absolute path on the source host
    rel: str  # relative path the file gets under the target directory
    size: int
    mode: int  # what the copies get (``protocol.transferred_mode``)
    is_dir: bool  # an (empty or not) directory entry to recreate


def expand_sources(patterns: list[str], account: str) -> tuple[list[SourceFile], list[str]]:
    """The files and directory entries ``patterns`` name, listed as ``account``.

    A pattern is an absolute path to a file or a directory (copied with everything in
    it, under its own name), a glob (``*``, ``?``, ``[a-z]``; ``rel`` starts at the
    last directory before the first wildcard), or ``<dir>/REGEX:<expr>`` (entries of
    ``<dir>`` whose name fully matches ``expr``). Directory entries come before what
    they contain. Symlinks named by a pattern are followed; inside a directory,
    symlinked files are copied as files and symlinked directories are skipped. Sockets,
    fifos and devices are skipped.

    Returns ``(found, missing)``: every item of ``missing`` is a :class:`MissingSource`
    (a ``str`` equal to the pattern, or to a file under it that ``account`` may not
    read) whose ``reason`` says why. Raises ``AccountError`` (status 311) if this agent
    cannot act as ``account``. Blocking: run it with ``asyncio.to_thread``.
    """
    rights = Rights(lookup_account(account))
    lister = _Lister(rights)

    def expand_all() -> None:
        for pattern in patterns:
            lister.expand(pattern)

    credentials.run_as(rights.account, expand_all)
    logger.info(
        "sources listed account=%s patterns=%d found=%d missing=%d",
        account,
        len(patterns),
        len(lister.found),
        len(lister.missing),
    )
    return lister.found, lister.missing


class _Lister:
    def __init__(self, rights: Rights) -> None:
        self.rights = rights
        self.found: list[SourceFile] = []
        self.missing: list[str] = []
        self._seen: set[tuple[str, str]] = set()
        # entries matched so far, an earlier pattern's duplicates included
        self._matched = 0

    def expand(self, pattern: str) -> None:
        before = (self._matched, len(self.missing))
        reason = "no such file or directory"
        if not os.path.isabs(pattern):
            reason = "not an absolute path"
        elif REGEX_MARK in pattern:
            reason = self._regex(pattern) or reason
        elif _GLOB_MAGIC.search(pattern):
            reason = self._glob(pattern) or "no match"
        else:
            reason = self._plain(pattern) or reason
        if (self._matched, len(self.missing)) == before:
            self.missing.append(MissingSource(pattern, reason))

    # each form returns a reason when it finds nothing for a reason better than "absent"

    def _plain(self, pattern: str) -> str | None:
        path = os.path.normpath(pattern)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return os_reason(exc)
        return self._top(path, os.path.basename(path), st)

    def _glob(self, pattern: str) -> str | None:
        parts = pattern.split("/")
        first = next(i for i, part in enumerate(parts) if _GLOB_MAGIC.search(part))
        base = "/".join(parts[:first]) or "/"
        level = [os.path.normpath(base)]
        denied = False
        rest = [part for part in parts[first:] if part]
        for depth, part in enumerate(rest):
            last = depth == len(rest) - 1
            matched: list[str] = []
            for directory in level:
                if _GLOB_MAGIC.search(part):
                    names = self._names(directory)
                    if names is None:
                        denied = True
                        continue
                    matched.extend(
                        os.path.join(directory, name) for name in names if _glob_match(name, part)
                    )
                elif os.path.lexists(os.path.join(directory, part)):
                    matched.append(os.path.join(directory, part))
            level = matched if last else [path for path in matched if os.path.isdir(path)]
        if pattern.endswith("/"):
            level = [path for path in level if os.path.isdir(path)]
        base = os.path.normpath(base)
        for path in level:
            try:
                st = os.stat(path)
            except OSError:
                continue  # a dangling symlink matched
            rel = os.path.relpath(path, base)
            if rel in (".", "..") or rel.startswith("../"):
                # a ".." after the wildcard climbed above it: keep the name, as the shell does
                rel = os.path.basename(os.path.normpath(path))
            self._top(path, rel, st, skip_special=True)
        return "permission denied" if denied else None

    def _regex(self, pattern: str) -> str | None:
        head, _, expr = pattern.partition(REGEX_MARK)
        if not head.endswith("/"):
            return f"{REGEX_MARK} must follow a '/'"
        try:
            regex = re.compile(expr)
        except re.error as exc:
            return f"invalid regular expression: {exc}"
        directory = os.path.normpath(head)
        try:
            if not os.path.isdir(directory):
                return None
        except OSError as exc:
            return os_reason(exc)
        names = self._names(directory)
        if names is None:
            return "permission denied"
        for name in names:
            if regex.fullmatch(name) is None:
                continue
            path = os.path.join(directory, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            self._top(path, name, st, skip_special=True)
        return None

    def _names(self, directory: str) -> list[str] | None:
        """The sorted entry names of ``directory``, or None if the account cannot list it."""
        try:
            if not self.rights.may(directory, os.stat(directory), READ | SEARCH):
                return None
            return sorted(os.listdir(directory))
        except OSError:
            return None

    def _top(
        self, path: str, rel: str, st: os.stat_result, *, skip_special: bool = False
    ) -> str | None:
        """Add what a pattern named directly: a file, or a directory and its contents."""
        if stat.S_ISDIR(st.st_mode):
            if os.path.normpath(path) == "/":
                return "will not copy the root directory"
            if not self.rights.may(path, st, READ | SEARCH):
                self._deny(path)
                return None
            if self._add(path, rel, st, is_dir=True):
                self._walk(path, rel)
        elif stat.S_ISREG(st.st_mode):
            if self.rights.may(path, st, READ):
                self._add(path, rel, st, is_dir=False)
            else:
                self._deny(path)
        elif not skip_special:
            return "not a regular file or directory"
        return None

    def _walk(self, top: str, top_rel: str) -> None:
        # an explicit stack: trees deeper than the recursion limit exist
        stack = [(top, top_rel)]
        while stack:
            directory, rel = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = sorted(it, key=lambda entry: entry.name)
            except OSError as exc:
                self.missing.append(MissingSource(directory, os_reason(exc)))
                continue
            below: list[tuple[str, str]] = []
            for entry in entries:
                path, entry_rel = entry.path, f"{rel}/{entry.name}"
                try:
                    link = entry.is_symlink()
                    st = os.stat(path) if link else entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    logger.debug("skipped vanished or dangling entry path=%s", path)
                    continue
                except OSError as exc:
                    self.missing.append(MissingSource(path, os_reason(exc)))
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if link:
                        # following links to directories could loop or leave the tree
                        logger.debug("skipped symlinked directory path=%s", path)
                    elif self.rights.allows(path, st, READ | SEARCH):
                        if self._add(path, entry_rel, st, is_dir=True):
                            below.append((path, entry_rel))
                    else:
                        self._deny(path)
                elif stat.S_ISREG(st.st_mode):
                    # a link's target lives elsewhere: check the way there too
                    ok = (
                        self.rights.may(path, st, READ)
                        if link
                        else self.rights.allows(path, st, READ)
                    )
                    if ok:
                        self._add(path, entry_rel, st, is_dir=False)
                    else:
                        self._deny(path)
                else:
                    logger.debug("skipped special file path=%s", path)
            stack.extend(reversed(below))

    def _add(self, path: str, rel: str, st: os.stat_result, *, is_dir: bool) -> bool:
        """Add an entry; False if it cannot be copied (what is below it is not looked at)."""
        self._matched += 1
        if not _utf8(path):
            self.missing.append(MissingSource(path, "the file name is not valid UTF-8"))
            return False
        if (path, rel) in self._seen:
            return True
        self._seen.add((path, rel))
        size = 0 if is_dir else st.st_size
        # listed as the targets will have it: set-ID bits never travel
        mode = transferred_mode(st.st_mode, is_dir=is_dir)
        self.found.append(SourceFile(path, rel, size, mode, is_dir))
        return True

    def _deny(self, path: str) -> None:
        reason = f"permission denied for account {self.rights.account.name}"
        self.missing.append(MissingSource(path, reason))


def _glob_match(name: str, part: str) -> bool:
    # like the shell and glob.glob: a wildcard does not match a leading dot
    if name.startswith(".") and not part.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, part)


def os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)
