"""A crash, written so that it shrinks, replays and prints: point plus lines that lost stores.

A :class:`Crash` is the index of a crash point and a sorted tuple of
``(medium, line offset, alternative)``: the line's ``alternative``-th distinct content,
where alternatives are ordered by how many in-flight stores they lose (0 = everything
visible persisted, the last = nothing unguaranteed persisted; non-temporal stores count like
the others). Lines not listed persisted everything. Evaluation clamps every value into the
legal range instead of rejecting it, so any shrink of a crash is still a crash
(docs/persistency.md, "A crash, written down"): shrinking lands on the fewest lines losing
the fewest stores at the earliest crash point.

Its token (``str(crash)``) reads ``POINT:MEDIUM.OFFSET=ALT,...``, e.g. ``3:0.40=1``: crash
point 3, line 0x40 of the first source lost its last store.
"""

from __future__ import annotations

import re

from .._dataclass import dataclass
from ..errors import ErrorCode, InvalidArgumentError

__all__ = ["Crash"]

_TOKEN = re.compile(
    r"^(?P<point>\d+)(?:/(?P<faults>[a-z0-9_.+]+))?:"
    r"(?P<lines>(?:\d+\.[0-9a-f]+=\d+(?:,\d+\.[0-9a-f]+=\d+)*)?)$"
)


@dataclass(frozen=True, slots=True, order=True)
class Crash:
    """Where the power fails and which lines lose what."""

    point: int
    lines: tuple[tuple[int, int, int], ...] = ()
    #: Faults on top of the power failure, e.g. ("unsafe_shutdown",).
    faults: tuple[str, ...] = ()

    def __str__(self) -> str:
        faults = f"/{'+'.join(self.faults)}" if self.faults else ""
        lines = ",".join(f"{m}.{off:x}={alt}" for m, off, alt in self.lines)
        return f"{self.point}{faults}:{lines}"

    @classmethod
    def parse(cls, token: str) -> Crash:
        m = _TOKEN.match(token.strip())
        if m is None:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"{token!r} is not a crash token (POINT[/FAULTS]:MEDIUM.OFFSET=ALT,...)",
            )
        lines = []
        for item in filter(None, m["lines"].split(",")):
            where, alt = item.split("=")
            medium, off = where.split(".")
            lines.append((int(medium), int(off, 16), int(alt)))
        faults = tuple(m["faults"].split("+")) if m["faults"] else ()
        return cls(int(m["point"]), tuple(sorted(lines)), faults)

    @property
    def lines_lost(self) -> int:
        return sum(1 for _, _, alt in self.lines if alt)
