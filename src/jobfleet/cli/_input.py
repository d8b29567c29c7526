"""Text the operator hands a command in a file (or ``-``, standard input)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def read_text(file: str, param_hint: str, *, not_text: str = "") -> str:
    """The UTF-8 text of ``file``, its line ends made ``\\n``; a usage error (exit status
    2) that says why it cannot be read: missing, a directory, not readable, or not text
    (where, and ``not_text``: what that means for the command).

    A file and standard input end their lines alike, as a script pasted into the
    console does (a browser hands over a text box's lines ended by ``\\n``): a shell
    script saved on Windows fails on a Linux agent at its first ``\\r``."""
    raw = _read_bytes(file, param_hint)
    try:
        # what reading a file in text mode does (universal newlines)
        return raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start : exc.start + 1].hex()
        where = f" (byte 0x{byte} at offset {exc.start})" if byte else ""
        name = "standard input" if file == "-" else file
        raise typer.BadParameter(
            f"{name} is not UTF-8 text{where}{not_text}", param_hint=param_hint
        ) from None


def read_script(file: str, param_hint: str) -> bytes:
    """The bytes of a script in ``file`` (``-``: standard input), in any encoding: the
    host runs them as written. Line ends become ``\n``, as :func:`read_text` makes
    them (a Windows-saved shell script would fail at its first ``\r``); CR and LF are
    never part of a GBK or UTF-8 multi-byte character, so no other byte changes."""
    return _read_bytes(file, param_hint).replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _read_bytes(file: str, param_hint: str) -> bytes:
    """The bytes of ``file`` (``-``: standard input); a usage error that says why they
    cannot be read."""
    try:
        if file != "-":
            return Path(file).read_bytes()
        # in the C locale Python reads standard input with surrogateescape: its bytes
        # are read as they are, and text is decoded strictly by the caller
        stdin = getattr(sys.stdin, "buffer", None)
        if stdin is None:
            return sys.stdin.read().encode("utf-8", "surrogateescape")
        data: bytes = stdin.read()
        return data
    except OSError as exc:
        name = "standard input" if file == "-" else file
        raise typer.BadParameter(
            f"cannot read {name}: {exc.strerror or exc}", param_hint=param_hint
        ) from None
