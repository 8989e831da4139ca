"""What the commands draw on a terminal: colours, one live progress line, and notices.

Colours only where stdout is a terminal and ``NO_COLOR`` is unset (https://no-color.org),
or when asked with ``--color always``. The progress line goes to stderr, only when stderr is
a terminal; it is redrawn in place and erased before anything else is printed, so a table
gets no extra lines. Notices (a checker run timed out, a long wait on one) go to stderr
whether it is a terminal or not: a check run by a script or CI needs them most, and stdout
keeps only the report.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

__all__ = ["Terminal", "columns"]

_STYLES = {"green": "32", "red": "31", "yellow": "33", "bold": "1", "red bold": "1;31"}
#: Seconds between two redraws of the progress line.
_REDRAW = 0.1


def columns() -> int:
    """The terminal's width, as ``shutil.get_terminal_size`` finds it, without importing
    shutil (and bz2 and lzma with it: 1.5 ms of a command's start-up)."""
    try:
        found = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        found = 0
    if found <= 0:
        try:
            found = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            found = 0
    return found or 80


def _wants_colour(choice: str, stream: TextIO) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return stream.isatty() and os.environ.get("TERM") != "dumb"


class Terminal:
    """Output of one command run."""

    def __init__(self, color: str = "auto", *, live: bool | None = None) -> None:
        self.colour = _wants_colour(color, sys.stdout)
        self.live = sys.stderr.isatty() if live is None else live
        self._shown = False
        self._last = 0.0

    def paint(self, text: str, style: str) -> str:
        if not self.colour or not style:
            return text
        return f"\x1b[{_STYLES[style]}m{text}\x1b[0m"

    def print(self, text: str = "") -> None:
        self.clear()
        print(text, flush=True)

    def notice(self, text: str) -> None:
        """``text`` on stderr, on a line of its own, terminal or not (what stdout has so
        far first, so that the two interleave in order when both go to one file)."""
        self.clear()
        sys.stdout.flush()
        print(text, file=sys.stderr, flush=True)

    def status(self, text: str, *, force: bool = False) -> None:
        """Show ``text`` as the live line (at most every 0.1 s unless ``force``)."""
        if not self.live:
            return
        now = time.perf_counter()
        if not force and now - self._last < _REDRAW:
            return
        self._last = now
        width = columns() - 1
        if len(text) > width:  # a wrapped line cannot be erased in place
            text = text[: max(width - 3, 0)] + "..."
        sys.stderr.write(f"\r\x1b[K{text}")
        sys.stderr.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False
