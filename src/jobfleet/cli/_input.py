"""Text the operator hands a command in a file (or ``-``, standard input)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def read_text(file: str, param_hint: str) -> str:
    """The UTF-8 text of ``file``; a usage error (exit status 2) that says why it cannot
    be read: missing, a directory, not readable, or not text."""
    name = "standard input" if file == "-" else file
    try:
        return sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {name}: {exc.strerror or exc}", param_hint=param_hint
        ) from None
    except UnicodeDecodeError:
        raise typer.BadParameter(f"{name} is not UTF-8 text", param_hint=param_hint) from None
