"""A check's progress, shown live on stderr when it is a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable

from .report import Progress

__all__ = ["ProgressCallback", "progress_line"]

ProgressCallback = Callable[[Progress], None]


def progress_line() -> ProgressCallback | None:
    """One live, labelled line on stderr when it is a terminal (None otherwise)."""
    if not sys.stderr.isatty():
        return None

    def show(p: Progress) -> None:
        end = "\n" if p.point >= p.points else ""
        on = f" on {p.workers} workers" if p.workers > 1 else ""
        sys.stderr.write(
            f"\r\x1b[K{p.check}: crash point {p.point}/{p.points}, {p.images:,} of "
            f"{p.planned:,} images covered, {p.runs:,} runs, {p.rate:,.0f} images/s{on}{end}"
        )
        sys.stderr.flush()

    return show
