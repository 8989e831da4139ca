"""What a report draws, independent of where it came from (a recorded check or a store log).

A :class:`Run` is the workload's operations in program order with the media they act on; a
:class:`Crash` is one failing crash image laid over it (where the power failed, which lines
lost what, what recovery said). Adapters build both: :mod:`.explore` from a CrashCheck
re-recorded with its operations, :mod:`.pmlog` from a store log's records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..enums import Granularity

__all__ = ["Crash", "Finding", "Operation", "Point", "Run", "Summary", "Where"]


@dataclass(frozen=True, slots=True)
class Where:
    """A source location: shown as ``file:line``; ``path`` is where its code can be read."""

    file: str
    line: int
    function: str = ""
    path: str | None = None

    def __str__(self) -> str:
        fn = f" in {self.function}" if self.function else ""
        return f"{self.file}:{self.line}{fn}"


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation in program order: ``kind`` is store, flush, fence, deep_flush or
    marker (a marked operation's BEGIN or END)."""

    kind: str
    #: Index into :attr:`Run.media` (-1 for fences and markers).
    medium: int = -1
    offset: int = 0
    length: int = 0
    data: bytes = b""
    nontemporal: bool = False
    #: Innermost user frame first (stores and flushes have one; fences a short stack).
    stack: tuple[Where, ...] = ()
    #: How the source names it, e.g. ``STORE #12`` for a log record (empty: by its kind).
    label: str = ""
    #: Raw frames of a log record (as pmemcheck wrote them), shown in details.
    frames: tuple[str, ...] = ()
    marker: str = ""
    begin: bool = False
    #: The number the run's lint findings name it by (see :meth:`Run.numbered`): the
    #: simulator's (Op.seq) for a recorded run, its record number for a log; 0: none.
    seq: int = 0

    @property
    def where(self) -> Where | None:
        return self.stack[0] if self.stack else None


@dataclass(frozen=True, slots=True)
class Point:
    """A crash point of the run: ``position`` is how many operations (of :attr:`Run.ops`)
    precede it."""

    index: int
    position: int
    text: str


@dataclass(frozen=True, slots=True)
class Finding:
    """A lint finding, placed at the operations it is about."""

    text: str
    severity: str
    ops: tuple[int, ...]


@dataclass
class Run:
    """A workload's operations, as the simulator saw them."""

    ops: list[Operation]
    #: Names of the media (sources, files), by index.
    media: list[str]
    granularity: Granularity
    #: Persistence unit per medium (64: a line; 4096 or 512 at PAGE).
    units: list[int]
    #: Flushes act at once (Intel's clflush, or msync at PAGE granularity).
    clflush: bool = False
    points: list[Point] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: Our medium index of each object crash states name media by (simulator media, by
    #: ``id``; a file opened twice is two of them and one of ours); empty: the state's
    #: media are ours, in order.
    media_keys: dict[int, int] = field(default_factory=dict)
    #: Keeps those objects alive while their ids are in use.
    media_objects: list[Any] = field(default_factory=list, repr=False)

    def numbered(self, kind: str, numbers: Iterable[int]) -> tuple[int, ...]:
        """The positions of the operations of ``kind`` that carry one of ``numbers``
        (:attr:`Operation.seq`): exactly those a lint finding covers, never another
        operation of the same source line."""
        wanted = set(numbers)
        return tuple(i for i, op in enumerate(self.ops) if op.kind == kind and op.seq in wanted)


@dataclass
class Crash:
    """One failing crash image over a run."""

    #: The crash point, and how many operations precede it.
    point: int
    position: int
    #: The crash point in words ("crash point 3, before the fence at x.py:12 in f").
    text: str
    #: The simulator's crash state there, and the image's deviations (unit, option).
    state: Any
    deviations: tuple[tuple[int, int], ...]
    #: What recovery (or the checker) said, one line.
    verdict: str
    token: str
    replay: str
    faults: tuple[str, ...] = ()
    error: BaseException | None = None
    #: Where recovery raised (innermost user frame), when it did.
    raised_at: Where | None = None
    notes: tuple[str, ...] = ()
    #: The markers under way at the crash.
    markers: tuple[str, ...] = ()
    #: More lines of text worth showing (crashes of recovery, fault details).
    extra: tuple[str, ...] = ()
    #: What the checked run reported for this crash, to hold the run recorded again to:
    #: ``(state's medium index, line offset) -> (atoms in flight, atoms lost)`` for each
    #: line that lost something.
    expected: dict[tuple[int, int], tuple[int, int]] | None = None
    #: How the run recorded again already differs from the checked one ("": it does not).
    mismatch: str = ""


@dataclass
class Summary:
    """One check's counts and verdict."""

    name: str
    verdict: str
    expected: str | None
    coverage: str
    crash_points: int
    images_possible: int
    images_checked: int
    inconsistent: int
    seconds: float
    strategy: str = ""
    seed: int | None = None
    granularity: str = ""
    details: tuple[str, ...] = ()
    text_report: str = ""

    @property
    def as_expected(self) -> bool:
        return self.expected is None or self.expected == self.verdict
