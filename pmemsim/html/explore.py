"""Reports of crash checks: the workload recorded again with its operations, and each
distinct failure laid over it.

The check's own result keeps no operations (they cost memory on every run), so the
workload runs once more on a fresh simulator with ``keep_ops=True``. Workloads are
deterministic (the explorer relies on it for replay); if this one did something else the
second time, the timeline's line states disagree with the failure's crash state and the
report says so.
"""

from __future__ import annotations

import os
import shlex
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..provenance import Provenance, locations
from ..scratch import make
from .model import Crash, Finding, Operation, Point, Run, Summary, Where
from .page import CheckPage, FailurePage
from .timeline import History

if TYPE_CHECKING:
    from ..explore import CheckResult, Failure
    from ..explore.trace import CrashPoint, Trace

__all__ = ["crash_of", "recorded", "replay_page", "run_of", "summary_of", "where_of"]

#: Frames kept per fence (its callers), for the details of a crash point.
STACK = 4
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shown_path(path: str) -> str:
    """A path as reports show it: relative to the current folder when it is inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive
        return path
    return path if rel.startswith("..") else rel


def where_of(prov: Provenance, depth: int = 1) -> tuple[Where, ...]:
    return tuple(
        Where(shown_path(loc.filename), loc.lineno, loc.function, loc.filename)
        for loc in locations(prov)[:depth]
    )


def _user_frame(err: BaseException) -> Where | None:
    """Where recovery raised: the innermost frame of the traceback outside pmemsim."""
    best = None
    for fs in traceback.extract_tb(err.__traceback__):
        if fs.filename.startswith(_PACKAGE) or fs.lineno is None:
            continue
        best = Where(shown_path(fs.filename), fs.lineno, fs.name, fs.filename)
    return best


def run_of(trace: Trace, labels: Callable[[str], str] = shown_path) -> Run:
    """The recorded operations of ``trace`` (recorded with ``keep_ops=True``)."""
    from ..explore.trace import MarkerOp

    objects: list[Any] = []
    names: list[str] = []
    index: dict[int, int] = {}
    ops: list[Operation] = []

    def medium(obj: Any) -> int:
        found = index.get(id(obj))
        if found is None:
            objects.append(obj)
            name = labels(str(obj.label))
            # A file opened again is the same file (anonymous memory never is).
            same = name in names and not name.startswith("anonymous")
            found = index[id(obj)] = names.index(name) if same else len(names)
            if not same:
                names.append(name)
                units.append(int(obj.unit))
        return found

    units: list[int] = []
    for op in trace.ops:
        if isinstance(op, MarkerOp):
            ops.append(
                Operation("marker", stack=where_of(op.provenance), marker=op.name, begin=op.begin)
            )
            continue
        m = medium(op.medium) if op.medium is not None else -1
        ops.append(
            Operation(
                op.kind,
                m,
                op.offset,
                op.length,
                bytes(op.data[:64]),
                op.nontemporal,
                where_of(op.provenance, STACK if op.kind in ("fence", "deep_flush") else 1),
                seq=op.seq,
            )
        )
    for p in trace.points:  # media a crash state names that no operation touched
        for st in (p.state, p.unsafe_state):
            for obj in getattr(st, "media", ()):
                medium(obj)
    run = Run(
        ops,
        names,
        trace.granularity,
        units,
        clflush=getattr(trace.backend, "flush_instruction", "") == "clflush",
        media_keys=index,
        media_objects=objects,
    )
    run.points = [
        Point(p.index, position(run, trace.points, p), point_text(p)) for p in trace.points
    ]
    run.findings = [_finding(run, f, labels) for f in trace.findings]
    return run


def point_text(p: CrashPoint) -> str:
    """A crash point in words, as the text report has it, with paths shortened."""
    where = where_of(p.provenance)
    at = f" at {where[0]}" if where else ""
    if p.kind == "end":
        text = "at the end of the run"
    elif p.kind == "marker":
        text = f"at a marker boundary{at}"
    else:
        text = f"{p.position} the {p.kind.replace('_', ' ')}{at}"
    inside = f" (inside {' > '.join(p.markers)})" if p.markers else ""
    return f"crash point {p.index}, {text}{inside}"


def position(run: Run, points: list[CrashPoint], p: CrashPoint) -> int:
    """How many of the run's operations (markers included) precede crash point ``p``."""
    ops = run.ops
    if p.kind == "end":
        return len(ops)
    if p.kind == "marker":
        j = sum(1 for q in points[: p.index] if q.kind == "marker")
        marks = [i for i, op in enumerate(ops) if op.kind == "marker"]
        return marks[j] + 1 if j < len(marks) else len(ops)
    issued = [i for i, op in enumerate(ops) if op.kind != "marker"]
    n = p.operation
    if p.position == "after":
        return issued[n - 1] + 1 if 0 < n <= len(issued) else 0
    # A fence or flush is counted before the crash just before it is captured, a deep
    # flush only after (the simulator tells its observers first).
    if p.kind == "deep_flush":
        return issued[n] if n < len(issued) else len(ops)
    return issued[n - 1] if 0 < n <= len(issued) else 0


_KINDS = {
    "UNFLUSHED_STORE": "store",
    "UNFENCED_STORE": "store",
    "UNDRAINED_NT_STORE": "store",
    "OVERWRITTEN_STORE": "store",
    "CLEAN_FLUSH": "flush",
    "REDUNDANT_FLUSH": "flush",
    "EMPTY_FENCE": "fence",
}


def _finding(run: Run, f: Any, labels: Callable[[str], str]) -> Finding:
    """A lint finding placed at the operations it covers, found by their numbers."""
    hits = run.numbered(_KINDS[f.kind.name], (seq for seq, _, _ in f.occurrences()))
    text = str(f).replace(str(f.source), labels(str(f.source)))
    for full in {w.path for w in where_of(f.provenance) if w.path}:
        text = text.replace(full, shown_path(full))
    return Finding(text, f.kind.severity, hits)


@contextmanager
def recorded(check: Any, unsafe_shutdown: bool) -> Iterator[tuple[Trace, Run]]:
    """The check's workload recorded again, with its operations."""
    from ..explore import FileCrashCheck, record
    from ..explore.trace import record_run

    if not isinstance(check, FileCrashCheck):
        trace = record(
            check.workload,
            size=check.size,
            granularity=check.granularity,
            crash_points=check.crash_points,
            keep_ops=True,
            unsafe_shutdown=unsafe_shutdown,
        )
        yield trace, run_of(trace)
        return
    from pmemsim_backends.sim import SimBackend

    scratch = make("html")
    try:  # (at once: an exception before the try, a signal's, would leave the folder)
        root = Path(scratch.path, "work")  # (its lock file out of the workload's sight)
        root.mkdir()
        trace = record_run(
            lambda sim, end: check.workload(sim, root),
            SimBackend(check.granularity),
            crash_points=check.crash_points,
            keep_ops=True,
            unsafe_shutdown=unsafe_shutdown,
        )
        prefix = str(root) + os.sep
        yield trace, run_of(trace, lambda label: label.removeprefix(prefix))
    finally:
        scratch.remove(ignore_errors=True)


def crash_of(
    failure: Failure, trace: Trace, run: Run, replay: Callable[[Failure], str] | None = None
) -> Crash:
    """A failure of a check laid over the run recorded again."""
    crash = failure.crash
    point = trace.points[min(crash.point, len(trace.points) - 1)]
    state = point.state
    if "unsafe_shutdown" in crash.faults and point.unsafe_state is not None:
        state = point.unsafe_state
    index = {(u.medium_index, u.offset): i for i, u in enumerate(state.units)}
    wanted = [(index[(m, off)], alt) for m, off, alt in crash.lines if (m, off) in index]
    deviations = tuple(state.image(wanted).deviations)
    err: BaseException | None = failure.error
    from ..explore.report import CrashConsistencyError

    if isinstance(err, _Consistent):
        verdict, err = "recovery accepts this image now: it is consistent", None
    elif isinstance(err, CrashConsistencyError):
        verdict = "recovery returned False"
    else:
        verdict = f"recovery raised {type(err).__name__}: {str(err).split(chr(10), 1)[0]}"
    extra = []
    for fault in crash.faults:
        if fault.startswith("badblock"):
            extra.append(_badblock_text(fault, failure.sources))
        else:
            extra.append(
                f"unsafe shutdown: ADR failed too, so data fenced but never deep-flushed "
                f"could be lost ({fault})"
            )
    for depth, c in enumerate(failure.recovery_crashes, 1):
        extra.append(f"then recovery itself crashed (depth {depth}): {c}")
    command = replay(failure) if replay else f"pmemsim replay {shlex.quote(failure.token)}"
    mismatch = ""
    if crash.point >= len(trace.points) or point.operation != failure.point.operation:
        mismatch = f"crash point {crash.point} is not after operation {failure.point.operation}"
    return Crash(
        point=point.index,
        position=position(run, trace.points, point),
        text=point_text(point),
        state=state,
        deviations=deviations,
        verdict=verdict,
        token=failure.crash_token,
        replay=command,
        faults=crash.faults,
        error=err,
        raised_at=None
        if err is None or isinstance(err, CrashConsistencyError)
        else _user_frame(err),
        notes=tuple(getattr(err, "__notes__", ())),
        markers=point.markers,
        extra=tuple(extra),
        expected={(ln.medium, ln.offset): (ln.in_flight, ln.lost) for ln in failure.lines},
        mismatch=mismatch,
    )


def _badblock_text(fault: str, sources: tuple[str, ...]) -> str:
    parts = fault.split(".")
    if len(parts) == 3:  # badblock.FILE.SECTOR
        name = sources[int(parts[1])] if int(parts[1]) < len(sources) else f"file {parts[1]}"
        return f"a bad block in sector 0x{parts[2]} of {name} (512 bytes)"
    return f"a bad block in sector 0x{parts[-1]} (512 bytes): cleared, it reads as zeros"


def summary_of(result: CheckResult, check: Any = None) -> Summary:
    granularity = getattr(check, "granularity", None)
    return Summary(
        name=result.name,
        verdict=result.verdict,
        expected=result.expect,
        coverage=result.coverage,
        crash_points=result.crash_points,
        images_possible=result.images_possible,
        images_checked=result.images_checked,
        inconsistent=result.inconsistent,
        seconds=result.seconds,
        strategy=result.strategy,
        seed=result.seed,
        granularity=granularity.name if granularity is not None else "",
        details=(getattr(check, "description", ""),) if getattr(check, "description", "") else (),
        text_report=result.report(lint="all"),
    )


class _Consistent(Exception):
    """Stands for "no error" where a Failure needs one (a replayed crash that passes now)."""


def replay_page(check: Any, token: str, error: BaseException | None, name: str) -> CheckPage:
    """One crash rebuilt from a replay token, and what recovery says on it now."""
    from ..explore import Failure
    from ..explore.crash import Crash as Token

    first, *chain = token.rsplit("@", 1)[-1].split(">")
    crash = Token.parse(first)
    summary = Summary(
        name=name,
        verdict="inconsistent" if error is not None else "consistent",
        expected=None,
        coverage=f"one crash replayed: {token.rsplit('@', 1)[-1]}",
        crash_points=1,
        images_possible=1,
        images_checked=1,
        inconsistent=int(error is not None),
        seconds=0.0,
        granularity=getattr(check.granularity, "name", ""),
    )
    cp = CheckPage(summary)
    with recorded(check, "unsafe_shutdown" in crash.faults) as (trace, run):
        point = trace.points[min(crash.point, len(trace.points) - 1)]
        failure = Failure(
            name,
            crash,
            point,
            "replay",
            (),
            (),
            error if error is not None else _Consistent(),
            tuple(Token.parse(c) for c in chain),
        )
        c = crash_of(failure, trace, run, lambda f: f"pmemsim replay {shlex.quote(token)}")
        c.expected = None  # a token says which lines deviate, not what they lost
        cp.run = run
        cp.failures = [FailurePage(c, run, History.of(run, [c.position]))]
    return cp
