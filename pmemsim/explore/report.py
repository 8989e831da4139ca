"""What a check found: failures with their crash, the lines and stores lost, and the verdict.

Failures are reported the way Hypothesis reports them: the user's own exception, re-raised
with notes (the crash, the lost stores with where they were issued, a replay command), and
several distinct failures together as one exception group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._dataclass import dataclass, field
from ..provenance import Provenance, describe
from .crash import Crash

if TYPE_CHECKING:
    from .trace import CrashPoint

__all__ = [
    "CheckResult",
    "CrashConsistencyError",
    "FailedCrash",
    "Failure",
    "LineOutcome",
    "LostStore",
    "Progress",
    "RecoveryHang",
]


class CrashConsistencyError(AssertionError):
    """Recovery judged a crash image inconsistent without raising (it returned False)."""


class RecoveryHang(BaseException):
    """Recovery ran past its time or step budget: taken for a hang (an endless loop over a
    structure the crash left cyclic, a wait for a lock nobody releases).

    A BaseException, like KeyboardInterrupt, so that recovery's own ``except Exception``
    does not swallow the interruption and keep looping.
    """


#: How many inconsistent crashes a result lists (their tokens are small; the count is exact).
FAILING_KEPT = 10_000

HANG_ERRORS: tuple[type[BaseException], ...] = (RecoveryHang,)


class RecoveryCrashFailure(Exception):
    """Recovery failed on an image that a crash *of recovery* left behind: the crashes of
    recovery that led there (outermost first) and recovery's own exception."""

    def __init__(self, chain: tuple[Crash, ...], error: BaseException) -> None:
        super().__init__(str(error))
        self.chain = chain
        self.error = error


def signature_of(error: BaseException) -> tuple[str, str]:
    """The exception's type and where it was raised (as Hypothesis tells failures apart)."""
    if isinstance(error, RecoveryCrashFailure):
        error = error.error
    if isinstance(error, HANG_ERRORS):
        return (type(error).__name__, "")
    tb = error.__traceback__
    origin = ""
    while tb is not None:
        origin = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return (type(error).__name__, origin)


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
        exception's type and where it was raised (as Hypothesis tells failures apart). A
        hang is one bug wherever it was interrupted."""
        return signature_of(self.error)

    @property
    def kind(self) -> str:
        """ "hang" when recovery ran past its budget, else "inconsistent"."""
        return "hang" if isinstance(self.error, HANG_ERRORS) else "inconsistent"

    def replay_line(self) -> str:
        """How to replay this crash: ``pmemsim replay`` for a check from a file (its name is
        ``PATH::NAME``), else the Python call."""
        if "::" in self.check:
            import shlex  # (a name's quotes, $ and backticks: repr() is no shell quoting)

            return f"replay: pmemsim replay {shlex.quote(self.token)}"
        return f"replay: pmemsim.explore.check(check, replay={self.token!r})"

    def describe(self, replay: str | None = None) -> str:
        """The crash, what it lost and what recovery said; ``replay`` is the last line, telling
        how to replay it (default: :meth:`replay_line`)."""
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
        elif isinstance(self.error, HANG_ERRORS):
            out.append(f"  recovery hung: {msg}")
        else:
            out.append(f"  recovery raised {type(self.error).__name__}: {msg}")
        out.append(f"  {replay or self.replay_line()}")
        return "\n".join(out)


@dataclass(frozen=True, slots=True)
class FailedCrash:
    """One inconsistent crash, kept small: the crash, what it lost, recovery's verdict."""

    crash: Crash
    lines: tuple[LineOutcome, ...]
    lost: tuple[LostStore, ...]
    #: "inconsistent" or "hang".
    kind: str
    #: The exception's type name and where it was raised.
    signature: tuple[str, str]
    message: str

    @property
    def token(self) -> str:
        return str(self.crash)


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a running check is, for a live progress line."""

    check: str
    #: Crash points explored so far, of ``points``.
    point: int
    points: int
    #: Images covered so far (checked, or stood for by read paths), of ``planned``: every
    #: image possible at the crash points.
    images: int
    planned: int
    #: Recovery runs so far.
    runs: int
    #: Images covered per second so far.
    rate: float
    seconds: float
    #: Processes exploring (1 inline; the worker processes, or a cluster's live workers).
    workers: int = 1


def _fraction(part: int, whole: int) -> str:
    if whole <= 0 or part >= whole:
        return "100%"
    pct = 100 * part / whole
    return f"{pct:.3g}%" if pct >= 0.01 else f"{pct:.2e}%"


@dataclass
class CheckResult:
    """What one check found (see :func:`pmemsim.explore.check`)."""

    name: str
    expect: str
    strategy: str
    seed: int
    crash_points: int = 0
    images_possible: int = 0
    #: Images recovery judged: distinct images of planned strategies, plus read paths.
    images_checked: int = 0
    #: Images covered: checked, checked at an earlier point (same content), or stood for by
    #: a read path (lazy exploration).
    images_covered: int = 0
    #: Images possible at crash points that were not covered.
    images_skipped: int = 0
    #: Read paths of lazy exploration (a run of recovery and the images it stands for),
    #: summed over crash points.
    read_paths: int = 0
    #: Runs of recovery (fewer than read paths when runs are shared between crash points;
    #: depends on how the work was split, so it is not part of the report).
    recovery_runs: int = 0
    #: Inconsistent images (planned strategies) and read paths (lazy), hangs included.
    inconsistent: int = 0
    #: Of those, runs of recovery that hung (ran past their time or step budget).
    hangs: int = 0
    #: Whether every image possible was covered.
    exact: bool = True
    #: What cut exploration short (time budgets), in words.
    limits: list[str] = field(default_factory=list)
    #: Other things worth knowing about how the check was explored, in words.
    notes: list[str] = field(default_factory=list)
    #: The minimal failure of each distinct bug (see :attr:`Failure.signature`), with the
    #: user's exception.
    failures: list[Failure] = field(default_factory=list)
    #: Every inconsistent crash (an image, or a read path's representative image), in the
    #: order found, up to :data:`FAILING_KEPT` of them (``inconsistent`` counts them all),
    #: with what it lost and what recovery said, but not the live exception.
    failing: list[FailedCrash] = field(default_factory=list)
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
    def covered_fraction(self) -> float:
        if self.images_possible <= 0:
            return 1.0
        return min(1.0, self.images_covered / self.images_possible)

    @property
    def coverage(self) -> str:
        """ "exact", or "heuristic: ..." with the strategy, the fraction of images covered and
        what cut exploration short."""
        if self.exact:
            return "exact"
        why = "; ".join(self.limits)
        return (
            f"heuristic: {self.strategy}, {_fraction(self.images_covered, self.images_possible)}"
            f" of images covered, {self.images_skipped} not checked{f'; {why}' if why else ''}"
        )

    @property
    def minimal(self) -> Failure | None:
        """The fewest lines losing the fewest stores at the earliest crash point."""
        if not self.failures:
            return None
        return min(self.failures, key=lambda f: f.size_key)

    def distinct(self) -> list[Failure]:
        """The minimal failure of each distinct bug, smallest first."""
        return sorted(self.failures, key=lambda f: (f.size_key, f.token))

    @property
    def images_per_second(self) -> float:
        """Images judged (distinct images and read paths) per second."""
        return self.images_checked / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line of counts; no timing, so that it is the same on every run of a seed."""
        parts = [f"{self.crash_points} crash point(s)", f"{self.images_possible} image(s) possible"]
        planned = self.images_checked - self.read_paths
        if self.read_paths:
            parts.append(f"{self.read_paths} read path(s)")
        if planned or not self.read_paths:
            parts.append(f"{planned} distinct checked")
        hung = f" ({self.hangs} hung)" if self.hangs else ""
        parts.append(f"{self.inconsistent} inconsistent{hung}")
        return f"{self.name}: {self.verdict.upper()} ({self.coverage}); {', '.join(parts)}"

    def report(self, *, lint: str = "errors") -> str:
        """The full report, deterministic for a seed: summary, minimal failure of each distinct
        bug, lint findings (``lint``: "errors", "all" or "none")."""
        out = [self.summary(), *(f"note: {n}" for n in self.notes)]
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
            "images_covered": self.images_covered,
            "covered_fraction": self.covered_fraction,
            "images_skipped": self.images_skipped,
            "read_paths": self.read_paths,
            "recovery_runs": self.recovery_runs,
            "coverage": self.coverage,
            "limits": list(self.limits),
            "notes": list(self.notes),
            "inconsistent": self.inconsistent,
            "hangs": self.hangs,
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
        words each failure's replay line (default: :meth:`Failure.replay_line`).
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
