"""What a check found: failures with their crash, the lines and stores lost, and the verdict.

Failures are reported the way Hypothesis reports them: the user's own exception, re-raised
with notes (the crash, the lost stores with where they were issued, a replay command), and
several distinct failures together as one exception group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..provenance import Provenance, describe
from .crash import Crash

if TYPE_CHECKING:
    from .trace import CrashPoint

__all__ = [
    "CheckResult",
    "CrashConsistencyError",
    "Failure",
    "LineOutcome",
    "LostStore",
]


class CrashConsistencyError(AssertionError):
    """Recovery judged a crash image inconsistent without raising (it returned False)."""


@dataclass(frozen=True, slots=True)
class LostStore:
    """A store (or the part of one in one line) that a crash image lost."""

    medium: int
    offset: int
    length: int
    provenance: Provenance

    def __str__(self) -> str:
        return f"+0x{self.offset:x} ({self.length} bytes) stored at {describe(self.provenance)}"


@dataclass(frozen=True, slots=True)
class LineOutcome:
    """One line with stores in flight at the crash, and how many of them it lost."""

    medium: int
    offset: int
    in_flight: int
    lost: int
    #: An unsafe shutdown took the line back to its last deep-flushed content.
    reverted: bool = False


@dataclass(frozen=True)
class Failure:
    """One inconsistent crash image."""

    check: str
    crash: Crash
    point: CrashPoint
    strategy: str
    #: Lines that lost something (lines that kept everything are not listed).
    lines: tuple[LineOutcome, ...]
    lost: tuple[LostStore, ...]
    error: BaseException
    #: When recovery itself was crashed: the crashes of recovery, outermost first, that led
    #: to the image on which recovery finally failed.
    recovery_crashes: tuple[Crash, ...] = ()
    #: Names of the crash's sources by medium index (the files of a FileCrashCheck); empty
    #: for the one pool of a CrashCheck.
    sources: tuple[str, ...] = ()

    def _source(self, medium: int) -> str:
        if medium < len(self.sources):
            return f" of {self.sources[medium]}"
        return f" of source {medium}" if medium else ""

    def _file(self, medium: int) -> str:
        return f"{self.sources[medium]} " if medium < len(self.sources) else ""

    @property
    def crash_token(self) -> str:
        """The crash, and the crashes of recovery that led to the failure, if any."""
        return f"{self.crash}{''.join(f'>{c}' for c in self.recovery_crashes)}"

    @property
    def token(self) -> str:
        """The replay token: the check's name and the crash token."""
        return f"{self.check}@{self.crash_token}"

    @property
    def size_key(self) -> tuple[int, int, int, int]:
        """Ordering for "minimal": fewest lines, fewest stores, earliest point."""
        return (len(self.lines), len(self.lost), self.crash.point, len(self.recovery_crashes))

    @property
    def signature(self) -> tuple[str, str]:
        """Failures with one signature are taken for one bug seen through several images: the
        exception's type and where it was raised (as Hypothesis tells failures apart)."""
        tb = self.error.__traceback__
        origin = ""
        while tb is not None:
            origin = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
            tb = tb.tb_next
        return (type(self.error).__name__, origin)

    def describe(self, replay: str | None = None) -> str:
        """The crash, what it lost and what recovery said; ``replay`` is the last line, telling
        how to replay it (default: ``replay: pmemsim replay 'TOKEN'``)."""
        out = [self.point.describe() + ":"]
        if self.sources:
            out.append(f"  files: {', '.join(f'{i} {n}' for i, n in enumerate(self.sources))}")
        if self.crash.faults:
            out.append(f"  faults on top of the power failure: {', '.join(self.crash.faults)}")
        if self.lines:
            for line in self.lines:
                where = f"  line +0x{line.offset:x}{self._source(line.medium)}"
                if line.reverted:
                    also = (
                        f"; {line.in_flight} store(s) in flight lost too" if line.in_flight else ""
                    )
                    out.append(
                        f"{where}: back to its last deep-flushed content (its fenced data was "
                        f"lost with ADR{also})"
                    )
                else:
                    out.append(f"{where}: {line.in_flight} store(s) in flight, lost {line.lost}")
            if self.lost:
                out.append("  stores lost:")
                out += [f"    {self._file(s.medium)}{s}" for s in self.lost]
        else:
            out.append("  every visible store persisted (nothing was lost)")
        for depth, c in enumerate(self.recovery_crashes, 1):
            out.append(f"  then recovery crashed (depth {depth}): {c}")
        msg = str(self.error).split("\n", 1)[0]
        if isinstance(self.error, CrashConsistencyError):
            out.append("  recovery returned False")
        else:
            out.append(f"  recovery raised {type(self.error).__name__}: {msg}")
        out.append(f"  {replay or f'replay: pmemsim replay {self.token!r}'}")
        return "\n".join(out)


@dataclass
class CheckResult:
    """What one check found (see :func:`pmemsim.explore.check`)."""

    name: str
    expect: str
    strategy: str
    seed: int
    crash_points: int = 0
    images_possible: int = 0
    images_checked: int = 0
    #: Distinct images at crash points that the strategy left out.
    images_skipped: int = 0
    #: Whether every crash point was covered by an exact strategy without falling back.
    exact: bool = True
    failures: list[Failure] = field(default_factory=list)
    findings: list[Any] = field(default_factory=list)
    seconds: float = 0.0
    #: The check that produced this result (the HTML report records it again).
    check: Any = field(default=None, repr=False, compare=False)

    @property
    def verdict(self) -> str:
        return "inconsistent" if self.failures else "consistent"

    @property
    def as_expected(self) -> bool:
        return self.verdict == self.expect

    @property
    def coverage(self) -> str:
        if self.exact:
            return "exact"
        return f"heuristic: {self.strategy}, {self.images_skipped} image(s) not checked"

    @property
    def minimal(self) -> Failure | None:
        """The fewest lines losing the fewest stores at the earliest crash point."""
        if not self.failures:
            return None
        return min(self.failures, key=lambda f: f.size_key)

    def distinct(self) -> list[Failure]:
        """The minimal failure of each distinct bug (see :attr:`Failure.signature`)."""
        best: dict[tuple[str, str], Failure] = {}
        for f in self.failures:
            cur = best.get(f.signature)
            if cur is None or f.size_key < cur.size_key:
                best[f.signature] = f
        return sorted(best.values(), key=lambda f: f.size_key)

    @property
    def images_per_second(self) -> float:
        return self.images_checked / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line of counts; no timing, so that it is the same on every run of a seed."""
        return (
            f"{self.name}: {self.verdict.upper()} ({self.coverage}); "
            f"{self.crash_points} crash point(s), {self.images_possible} image(s) possible, "
            f"{self.images_checked} distinct checked, {len(self.failures)} inconsistent"
        )

    def report(self, *, lint: str = "errors") -> str:
        """The full report, deterministic for a seed: summary, minimal failure of each distinct
        bug, lint findings (``lint``: "errors", "all" or "none")."""
        out = [self.summary()]
        distinct = self.distinct()
        if distinct:
            out.append(
                f"{len(distinct)} distinct failure(s); the minimal crash of each:"
                if len(distinct) > 1
                else "the minimal failing crash:"
            )
            for f in distinct:
                out.append(f.describe())
        if lint != "none":
            shown = [f for f in self.findings if lint == "all" or f.kind.severity == "error"]
            out += [f"lint: {f}" for f in shown]
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        m = self.minimal
        return {
            "name": self.name,
            "verdict": self.verdict,
            "expected": self.expect,
            "exact": self.exact,
            "strategy": self.strategy,
            "seed": self.seed,
            "crash_points": self.crash_points,
            "images_possible": self.images_possible,
            "images_checked": self.images_checked,
            "images_skipped": self.images_skipped,
            "inconsistent": len(self.failures),
            "distinct_failures": len(self.distinct()),
            "minimal": None if m is None else m.token,
            "seconds": round(self.seconds, 4),
            "images_per_second": round(self.images_per_second, 1),
        }

    def to_html(
        self, path: str | None = None, *, replay: Callable[[Failure], str] | None = None
    ) -> str:
        """This result as a self-contained HTML page (docs/html-report.md); also written to
        ``path`` if given."""
        from ..html import check_report, write_report

        text = check_report(self, replay=replay)
        if path is not None:
            write_report(path, text)
        return text

    def raise_failures(self, replay: Callable[[Failure], str] | None = None) -> None:
        """Re-raise the user's exception of each distinct failure, with the crash as notes.

        One distinct failure: its exception. Several: an ExceptionGroup of them. ``replay``
        words each failure's replay line (default: the ``pmemsim replay`` command).
        """
        errors: list[Exception] = []
        for f in self.distinct():
            err = f.error
            if not isinstance(err, Exception):  # pragma: no cover - recovery catches Exception
                raise err
            err.add_note(f"pmemsim: {self.name} is inconsistent after this crash:")
            err.add_note(f.describe(replay(f) if replay is not None else None))
            errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup(
                f"{self.name}: {len(errors)} distinct crash-consistency failures", errors
            )
