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
    """The bytes of a script in ``file`` (``-``: standard input), exactly as written: the
    host runs them in any encoding. Line ends are kept too: cmd needs CRLF in a ``.bat``
    (a label or a ``goto`` target can be missed without it), and in UTF-16 a ``\r`` or
    ``\n`` byte may be half of another character."""
    return _read_bytes(file, param_hint)


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
