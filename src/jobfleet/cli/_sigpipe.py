"""Ending as a pipeline stage ends when standard output's reader has gone, without Rich:
``jobfleet server`` uses it too, and holds no renderer for its whole life."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
from collections.abc import Iterator
from typing import NoReturn

# what a shell reports for a process killed by SIGPIPE (128 + 13)
EXIT_CLOSED_PIPE = 141


def end_as_a_closed_pipe_ends() -> NoReturn:
    """Python ignores SIGPIPE for its sockets' sake; it is restored only now, on the way out."""
    try:
        # nothing more can be written, and the interpreter's last flush must not complain
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    sys.exit(EXIT_CLOSED_PIPE)


def _stdout_stat() -> os.stat_result | None:
    try:
        return os.fstat(sys.__stdout__.fileno()) if sys.__stdout__ is not None else None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def closed_pipe_ends_as_sigpipe() -> Iterator[None]:
    """Around a whole command: an exit with status 1 because standard output's reader
    left becomes the SIGPIPE ending. Click says so by wrapping stdout; Rich (``--help``
    pages) by pointing stdout, a pipe when the command began, at /dev/null."""
    began = _stdout_stat()
    began_on_pipe = began is not None and stat.S_ISFIFO(began.st_mode)
    try:
        yield
    except SystemExit as exc:
        if exc.code == 1:
            now = _stdout_stat()
            if type(sys.stdout).__name__ == "PacifyFlushWrapper" or (
                began_on_pipe and now is not None and os.path.samestat(now, os.stat(os.devnull))
            ):
                end_as_a_closed_pipe_ends()
        raise
