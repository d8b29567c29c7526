"""Output into a pipe whose reader has gone (``jobfleet logs JOB | head -1``).

Such a command ends as any tool in a pipeline ends: killed by SIGPIPE, quietly, so the
shell reports 141 and ``set -o pipefail`` treats it as it treats ``cat`` or ``grep``.
Rich and click would exit with status 1, which this CLI keeps for "the job failed".
"""

from __future__ import annotations

from typing import IO

from rich.console import Console

from jobfleet.cli._sigpipe import end_as_a_closed_pipe_ends

# a pipe's buffer: each piece of output blocks, or fails, on its own
_PIECE = 1 << 16


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
