"""Small helpers shared by the simulator tests."""

from __future__ import annotations

import sys


def lineno() -> int:
    """The caller's current line number."""
    return sys._getframe(1).f_lineno


def u64(x: int) -> bytes:
    return x.to_bytes(8, "little")
