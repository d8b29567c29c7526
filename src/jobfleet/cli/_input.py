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
    name = "standard input" if file == "-" else file
    try:
        if file != "-":
            return Path(file).read_text(encoding="utf-8")
        # in the C locale Python reads standard input with surrogateescape, which lets
        # bytes that are not UTF-8 through to fail later with a traceback: read it strictly
        raw = getattr(sys.stdin, "buffer", None)
        text = sys.stdin.read() if raw is None else raw.read().decode("utf-8")
        # what reading a file in text mode does (universal newlines)
        return text.replace("\r\n", "\n").replace("\r", "\n")
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {name}: {exc.strerror or exc}", param_hint=param_hint
        ) from None
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start : exc.start + 1].hex()
        where = f" (byte 0x{byte} at offset {exc.start})" if byte else ""
        raise typer.BadParameter(
            f"{name} is not UTF-8 text{where}{not_text}", param_hint=param_hint
        ) from None


def read_script(file: str, param_hint: str) -> bytes:
    """The bytes of a script in ``file`` (``-``: standard input), in any encoding: the
    host runs them as written. Line ends become ``\n``, as :func:`read_text` makes
    them (a Windows-saved shell script would fail at its first ``\r``); CR and LF are
    never part of a GBK or UTF-8 multi-byte character, so no other byte changes."""
    name = "standard input" if file == "-" else file
    try:
        if file != "-":
            raw = Path(file).read_bytes()
        else:
            stdin = getattr(sys.stdin, "buffer", None)
            raw = (
                sys.stdin.read().encode("utf-8", "surrogateescape")
                if stdin is None
                else stdin.read()
            )
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {name}: {exc.strerror or exc}", param_hint=param_hint
        ) from None
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
