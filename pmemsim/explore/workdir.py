"""The working directory, kept across the user's code.

A workload or a recovery may change the working directory (a FileCrashCheck's workload
that ``os.chdir(folder)``s to use relative names, into a temporary folder removed after the
check). pmemsim's own relative paths, given before (``--json out.json``), and the next
check's, must not follow it; so a check ends in the directory it started in.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["keeps_workdir"]

P = ParamSpec("P")
R = TypeVar("R")


def keeps_workdir(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn``, returning (or raising) in the working directory it was called in."""

    @functools.wraps(fn)
    def kept(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            # A descriptor, not a path: the directory may be renamed meanwhile.
            here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:  # (no working directory to keep: it was removed before)
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        finally:
            with contextlib.suppress(OSError):
                os.fchdir(here)
            os.close(here)

    return kept
