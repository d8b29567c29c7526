"""Output into a pipe whose reader has gone (``jobfleet logs JOB | head -1``).

Such a command ends as any tool in a pipeline ends: killed by SIGPIPE, quietly, so the
shell reports 141 and ``set -o pipefail`` treats it as it treats ``cat`` or ``grep``.
Rich and click would exit with status 1, which this CLI keeps for "the job failed".
"""

from __future__ import annotations

import os
import signal
import sys
from typing import IO, NoReturn

from rich.console import Console

# what a shell reports for a process killed by SIGPIPE (128 + 13)
EXIT_CLOSED_PIPE = 141
# a pipe's buffer: each piece of output blocks, or fails, on its own
_PIECE = 1 << 16


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


class PipeConsole(Console):
    """A Rich console that ends the command as a closed pipe ends it."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        end_as_a_closed_pipe_ends()


def write_all(file: IO[str], text: str) -> None:
    """Write ``text`` in pieces: one large write into a pipe whose reader leaves part way
    is cut short without an error, and the end of the pipe would go unnoticed."""
    for start in range(0, len(text), _PIECE):
        file.write(text[start : start + _PIECE])
    file.flush()
