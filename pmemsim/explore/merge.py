"""Merging the reports of explored crash states, in point order, into a :class:`CheckResult`.

Counts, the run-wide dedupe of images, and the minimal failure of each distinct bug, re-run
in the parent for the user's live exception.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..markers import CrashInfo
from .crash import Crash
from .images import Deviations, crash_for, lost_of
from .judges import Judge
from .lazy import NondeterministicRecovery, Verdict
from .report import FAILING_KEPT, CheckResult, FailedCrash, Failure, RecoveryCrashFailure
from .trace import CrashPoint

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState

    from .engine import FailNote, Session, StateReport

__all__: list[str] = []


@dataclass
class _Candidate:
    size: tuple[int, int, int, str]
    point: int
    faults: tuple[str, ...]
    deviations: Deviations
    strategy: str
    verdict: Verdict
    error: BaseException | None
    #: The crash point and state the failure is at (kept for the report; a streamed check
    #: keeps no other point).
    crash_point: CrashPoint
    state: CrashState


class _Merge:
    """Folds state reports, in point order, into the result: counts, global dedupe of
    planned images, and the minimal failure of each distinct bug."""

    def __init__(self, session: Session, result: CheckResult) -> None:
        self.s = session
        self.r = result
        self.seen: set[bytes] = set()
        self.best: dict[tuple[str, str], _Candidate] = {}
        self.last_covered: dict[tuple[str, ...], int] = {}
        self.points_done = -1
        #: The failing crashes of the current crash point, by state: a point cut into
        #: slices arrives slice by slice, each with both states, and ``failing`` lists them
        #: state by state whatever the slicing.
        self.point_failing: dict[tuple[str, ...], list[FailedCrash]] = {}

    def _flush_failing(self) -> None:
        # States in Session.states' order: the power failure's, then the unsafe shutdown's.
        for _, listed in sorted(self.point_failing.items(), key=lambda kv: len(kv[0])):
            self.r.failing += listed[: FAILING_KEPT - len(self.r.failing)]
        self.point_failing.clear()

    def add(self, rep: StateReport) -> None:
        r = self.r
        if rep.point != self.points_done:
            self._flush_failing()
        if rep.note and rep.note not in r.notes:
            r.notes.append(rep.note)
        r.images_possible += rep.possible
        if rep.part:  # another slice of the state before
            r.images_covered += rep.covered
            self.last_covered[rep.faults] += rep.covered
        elif rep.possible or rep.faults not in self.last_covered:
            r.images_covered += rep.covered
            self.last_covered[rep.faults] = rep.covered
        else:  # the same state again, another strategy: count what it added, if anything
            r.images_covered += max(0, rep.covered - self.last_covered[rep.faults])
            self.last_covered[rep.faults] = max(rep.covered, self.last_covered[rep.faults])
        self.points_done = max(self.points_done, rep.point)
        r.recovery_runs += rep.runs
        new: set[bytes] = set()
        for k in rep.judged:
            if k not in self.seen:
                self.seen.add(k)
                new.add(k)
        r.images_checked += len(new)
        if rep.lazy:
            r.read_paths += len(new)
        errors = rep.errors or [None] * len(rep.failing)
        for note, err in zip(rep.failing, errors, strict=True):
            if note.key in new:
                r.inconsistent += 1
                r.hangs += note.verdict.kind == "hang"
                listed = self.point_failing.setdefault(rep.faults, [])
                if len(r.failing) + len(listed) < FAILING_KEPT:
                    listed.append(self._failed(rep, note, self._crash(rep, note)))
            elif not rep.lazy:
                continue  # judged at an earlier point: the same image, the same verdict
            # A read path met again may stand for a smaller crash here: consider it.
            self._consider(rep, note, err)

    def _failed(self, rep: StateReport, note: FailNote, crash: Crash) -> FailedCrash:
        v = note.verdict
        lines, lost = lost_of(self._state(rep.point, rep.faults), note.deviations)
        return FailedCrash(crash, lines, lost, v.kind, v.signature, v.message)

    def _crash(self, rep: StateReport, note: FailNote) -> Crash:
        state = self._state(rep.point, rep.faults)
        crash = crash_for(self.s.points[rep.point], note.deviations, state)
        return dataclasses.replace(crash, faults=(*rep.faults, *note.extra))

    def _consider(self, rep: StateReport, note: FailNote, err: BaseException | None) -> None:
        sig = note.verdict.signature
        cur = self.best.get(sig)
        lines = len(note.deviations)
        if cur is not None and lines > cur.size[0]:
            return  # cannot be smaller: spare working out what it lost
        state = self._state(rep.point, rep.faults)
        lost = sum(len(state.units[i].lost_atoms(state.option(i, o))) for i, o in note.deviations)
        if cur is not None and (lines, lost, rep.point) > cur.size[:3]:
            return
        crash = self._crash(rep, note)
        size = (lines, lost, rep.point, str(crash))
        if cur is None or size < cur.size:
            self.best[sig] = _Candidate(
                size,
                rep.point,
                crash.faults,
                note.deviations,
                rep.strategy,
                note.verdict,
                err,
                self.s.points[rep.point],
                state,
            )

    def _state(self, point: int, faults: tuple[str, ...]) -> CrashState:
        p = self.s.points[point]
        if "unsafe_shutdown" in faults:
            assert p.unsafe_state is not None
            return p.unsafe_state
        return p.state

    def finish(self) -> None:
        """The minimal failure of each bug, with the user's live exception (re-run here when
        it was found elsewhere: a worker, or a run shared with an earlier crash point)."""
        self._flush_failing()
        judge = self.s.judge
        for cand in sorted(self.best.values(), key=lambda c: c.size):
            point, state = cand.crash_point, cand.state
            err = cand.error
            if err is None:
                image = judge.image(state, cand.deviations)
                for fault in cand.faults:
                    if fault.startswith("badblock."):
                        image = judge.with_badblock(image, fault)
                info = CrashInfo(point.index, point.kind, point.markers, cand.faults)
                err = judge.verdict(image, info)
                if Verdict.of(err) != cand.verdict:
                    raise NondeterministicRecovery(
                        f"recovery gave two verdicts on one image ({_token(cand)}): "
                        f"{_says(cand.verdict)}, then {_says(Verdict.of(err))}"
                    )
                assert err is not None
            self.r.failures.append(_failure(self.r.name, judge, cand, point, state, err))


def _says(v: Verdict) -> str:
    return "consistent" if not v.failed else f"{v.kind}: {v.signature[0]} {v.message}"


def _token(cand: _Candidate) -> str:
    return cand.size[3]


def _failure(
    name: str,
    judge: Judge,
    cand: _Candidate,
    point: CrashPoint,
    state: CrashState,
    err: BaseException,
) -> Failure:
    chain: tuple[Crash, ...] = ()
    if isinstance(err, RecoveryCrashFailure):
        chain, err = err.chain, err.error
    lines, lost = lost_of(state, cand.deviations)
    crash = dataclasses.replace(crash_for(point, cand.deviations, state), faults=cand.faults)
    return Failure(name, crash, point, cand.strategy, lines, lost, err, chain, judge.sources(state))
