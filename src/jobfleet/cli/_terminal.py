"""What reaches the operator's terminal: text from hosts and the server is shown, never obeyed.

Host output, host names, job and template names are anybody's bytes. An escape
sequence in them could clear the screen, retitle the window, rewrite what was
printed before or hide a line; Rich passes ESC and most other control
characters through as they are. So every control character but tab and newline
is shown as a ``\\u001b``-style escape, the form JSON itself uses, which keeps
``--json`` output valid and meaning the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rich.console import Console, ConsoleOptions, ConsoleRenderable, RenderHook, RenderResult
from rich.segment import Segment

# C0 but tab and newline, DEL and C1 (an 8-bit CSI is U+009B)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str) -> str:
    """``text`` with its control characters written out (a CRLF line end is a newline)."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(_escape, text.replace("\r\n", "\n"))


class ShowControls(RenderHook):
    """A console hook: whatever a command prints goes out with ``printable`` text.

    Tables build their cells from ``printable`` text already, so their columns line
    up; this catches anything else before it reaches the terminal.
    """

    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        return [_Shown(renderable) for renderable in renderables]


class _Shown:
    def __init__(self, renderable: ConsoleRenderable) -> None:
        self._renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from _shown(console.render(self._renderable, options))


def _shown(segments: Iterable[Segment]) -> Iterable[Segment]:
    for segment in segments:
        # control segments are Rich's own cursor moves (progress bars), not text
        if segment.control or not _CONTROL.search(segment.text):
            yield segment
        else:
            yield Segment(printable(segment.text), segment.style)
