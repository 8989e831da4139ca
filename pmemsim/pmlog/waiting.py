"""Telling of a long wait on one image's checker run.

A checker run with no time limit (``--timeout none``, a Python checker in a worker) that
never returns would leave the check silent, and a slow run under a long limit silent until
the limit. So while check-log waits on one image's verdict, it tells of the wait after
:data:`FIRST` seconds, then whenever the wait has doubled again (10, 20, 40, 80 s, ...),
at least every :data:`LONGEST` seconds: which image, and for how long so far. Under the
default limit (10 s) a run ends before any notice is due; the timed-out verdict is told
then instead.

A judge that waits (:class:`Patience`) knows, or learns by looking, which image is being
judged and since when: a checker program's since it started, a worker's since the worker
said it began it (a word of memory it shares; looked at every quarter of :data:`FIRST`,
so a wait is told of at most that much late).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["FIRST", "LONGEST", "Patience"]

#: Seconds of waiting on one image before the first notice (tests lower it).
FIRST = 10.0
#: The longest time between two notices of one wait.
LONGEST = 600.0

#: What identifies the image being judged (the same for one image's run).
K = TypeVar("K")


def _due(told: int, first: float) -> float:
    """The wait, in seconds, at which the notice after ``told`` notices is due."""
    at = first
    for _ in range(told):
        at += min(at, LONGEST)
    return at


class Patience(Generic[K]):
    """The notices of a wait: ``where(now)`` says what is being judged and since when
    (``time.monotonic()``), None when nothing is; ``tell(key, seconds)`` is told of a long
    wait."""

    def __init__(
        self, where: Callable[[float], tuple[K, float] | None], tell: Callable[[K, float], None]
    ) -> None:
        self.where = where
        self.tell = tell
        self.key: K | None = None
        self.told = 0

    def next(self, now: float) -> float:
        """Tell of the wait if a notice is due at ``now``; when to look again."""
        first = FIRST
        got = self.where(now)
        if got is None:
            return now + first / 4
        key, began = got
        if key != self.key:
            self.key, self.told = key, 0
        waited = now - began
        if waited >= _due(self.told, first):
            self.tell(key, waited)
            while waited >= _due(self.told, first):  # (late: one notice for all due)
                self.told += 1
        return min(began + _due(self.told, first), now + first / 4)
