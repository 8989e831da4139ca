"""Limits by time: per check, per crash point, and per run of recovery (hangs).

A check and each of its crash points get a deadline (``time.monotonic()``, kept by the
engine's session); exploration stops taking new images past it and the result says how
much it covered and what was cut (:class:`Cuts`). A single run of recovery gets a
:class:`~pmemsim.explore.runtimer.RunTimer`: a run past
its time is interrupted with :class:`~pmemsim.explore.report.RecoveryHang` and reported as a
failure of kind "hang".
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Cuts"]


@dataclass
class Cuts:
    """What the budgets cut short in one check, to be said in its result."""

    check_budget: float | None
    point_budget: float | None
    max_images: int | None = None
    #: Crash points whose exploration the point budget cut short.
    timed_out: list[int] = field(default_factory=list)
    #: Crash points where lazy exploration stopped at ``max_images`` read paths.
    counted: list[int] = field(default_factory=list)
    #: The crash point at which the check's budget ran out (None: it did not).
    check_ran_out_at: int | None = None

    def notes(self, points: int) -> list[str]:
        """What the budgets cut, in words (empty when nothing was cut)."""
        out = []
        if self.check_ran_out_at is not None:
            out.append(
                f"the check's time budget ({self.check_budget:g} s) ran out at crash point "
                f"{self.check_ran_out_at} of {points}"
            )
        if self.timed_out:
            out.append(
                f"the time budget per crash point ({self.point_budget:g} s) cut crash "
                f"point(s) {_some(self.timed_out)}"
            )
        if self.counted:
            out.append(
                f"stopped at {self.max_images} read paths at crash point {_some(self.counted)}"
            )
        return out


def _some(points: list[int]) -> str:
    shown = ", ".join(map(str, points[:5]))
    return shown + (f" and {len(points) - 5} more" if len(points) > 5 else "")
