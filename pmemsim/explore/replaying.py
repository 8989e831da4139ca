"""One crash of a recorded trace: its image, and the user's recovery run on it.

These are the pieces a property test needs once it holds a :class:`Trace` and a
:class:`Crash` (drawn with :func:`pmemsim.hypothesis.crashes`, parsed from a token, or
written by hand): :func:`normalize` says what a crash means at its point,
:func:`crash_snapshot` builds its image, and :func:`check_crash` runs recovery on it and
re-raises the user's own exception with the crash as notes.

:func:`replay` does the same for a check and a replay token from its report: it records the
check again, rebuilds the image the token names (through the crashes of recovery the token
chains) and runs recovery on it; ``check(c, replay=token)`` reports that one crash.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from ..errors import USER_FAILURES, ErrorCode, InvalidArgumentError
from ..events import BadBlock
from ..markers import CrashInfo
from ..snapshot import Snapshot
from .checks import CrashCheck, Recovery, validate_check
from .crash import Crash
from .images import SECTOR, crash_for, deviations_for, lost_of
from .judges import Judge, _PoolJudge, _recorded
from .lazy import Verdict
from .merge import _Candidate, _failure
from .recovery import _recovery_as_workload, run_recovery
from .report import (
    HANG_ERRORS,
    CheckResult,
    FailedCrash,
    Failure,
    RecoveryCrashFailure,
    RecoveryHang,
)
from .runtimer import RunTimer
from .trace import CrashPoint, Trace, record

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashImage, CrashState

    from .files import FileCrashCheck

__all__ = ["check_crash", "crash_image", "crash_point", "crash_snapshot", "normalize", "replay"]


def _validated(trace: Trace, crash: Crash) -> None:
    if not isinstance(trace, Trace):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{trace!r} is not a recorded Trace")
    if not isinstance(crash, Crash):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{crash!r} is not a Crash")
    if not trace.points:  # pragma: no cover - record() always captures the end of the run
        raise InvalidArgumentError(ErrorCode.EINVAL, "the trace has no crash points")
    for fault in crash.faults:
        if fault == "unsafe_shutdown":
            if trace.points[0].unsafe_state is None:
                raise InvalidArgumentError(
                    ErrorCode.EINVAL,
                    f"crash {crash} adds an unsafe shutdown: record the trace with "
                    "record(..., unsafe_shutdown=True)",
                )
        elif _sector(fault) is None:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"crash {crash}: fault {fault!r} is neither unsafe_shutdown nor "
                "badblock.OFFSET (a 512-byte sector, in hex)",
            )


def _sector(fault: str) -> int | None:
    kind, _, where = fault.partition(".")
    if kind != "badblock":
        return None
    try:
        return int(where, 16) // SECTOR * SECTOR
    except ValueError:
        return None


def crash_point(trace: Trace, crash: Crash) -> CrashPoint:
    """The crash point a crash happens at (its index clamped into the trace's range)."""
    _validated(trace, crash)
    return trace.points[min(max(crash.point, 0), len(trace.points) - 1)]


def _state(point: CrashPoint, crash: Crash) -> CrashState:
    if "unsafe_shutdown" in crash.faults and point.unsafe_state is not None:
        return point.unsafe_state
    return point.state


def normalize(trace: Trace, crash: Crash) -> Crash:
    """The crash as evaluation reads it: point and alternatives clamped into range, lines
    that were not in flight at the point or that lose nothing left out. Two crashes with
    one normal form give one image."""
    point = crash_point(trace, crash)
    state = _state(point, crash)
    normal = crash_for(point, deviations_for(state, crash), state)
    return dataclasses.replace(normal, faults=crash.faults)


def crash_image(trace: Trace, crash: Crash) -> CrashImage:
    """The simulator's crash image for ``crash`` (clamped, see :func:`normalize`; bad blocks
    are not part of it: see :func:`crash_snapshot`)."""
    point = crash_point(trace, crash)
    state = _state(point, crash)
    return state.image(deviations_for(state, crash))


def crash_snapshot(trace: Trace, crash: Crash) -> Snapshot:
    """The pool after ``crash``, as a snapshot a fresh set can map (``Source.from_image``),
    with the crash's bad blocks."""
    snapshot: Snapshot = crash_image(trace, crash).snapshot()
    blocks = tuple(BadBlock(s, SECTOR) for f in crash.faults if (s := _sector(f)) is not None)
    if blocks:
        snapshot = dataclasses.replace(snapshot, badblocks=(*snapshot.badblocks, *blocks))
    return snapshot


def check_crash(
    trace: Trace,
    crash: Crash,
    recover: Recovery,
    *,
    name: str = "trace",
    badblock_policy: str = "clear",
) -> None:
    """Run ``recover(view)`` on a fresh set mapping the image of ``crash``.

    Like :func:`pmemsim.explore.check` it runs on the simulator at the trace's granularity,
    with :func:`pmemsim.current_crash` answering. When recovery raises or returns False, its
    exception (a :class:`CrashConsistencyError` for False) is raised again with notes: the
    crash point with the user's stack, the lines that lost stores and where each lost store
    was issued, and the crash token that rebuilds this image. ``name`` labels the notes.
    Faults on top of the power failure work as for a CrashCheck: an unsafe shutdown (the
    trace must be recorded with ``unsafe_shutdown=True``) and bad blocks, which recovery's
    set clears at map time or keeps (``badblock_policy``).
    """
    point = crash_point(trace, crash)
    state = _state(point, crash)
    deviations = deviations_for(state, crash)
    snapshot = crash_snapshot(trace, crash)
    info = CrashInfo(point.index, point.kind, point.markers, crash.faults)
    err = run_recovery(recover, snapshot, trace.granularity, info, None, badblock_policy)
    if err is None:
        return
    lines, lost = lost_of(state, deviations)
    exact = normalize(trace, crash)
    failure = Failure(name, exact, point, "given", lines, lost, err)
    # The command line cannot rebuild a trace recorded inside a test; the token can.
    replay = (
        "replay: pmemsim.explore.replaying.check_crash("
        f"trace, Crash.parse({str(exact)!r}), recover)"
    )
    err.add_note(f"pmemsim: {name} is inconsistent after this crash:")
    err.add_note(failure.describe(replay))
    raise err


# -- replay tokens -------------------------------------------------------------------------


def _split_token(c: Any, token: str) -> tuple[Crash, list[Crash]]:
    if not isinstance(token, str):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"a replay token is a string, not {token!r}")
    who, at, crash_part = token.rpartition("@")
    if at and who and who != c.name and who.rpartition("::")[2] != c.name:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"replay token {token!r} is for check {who!r}, not {c.name!r}"
        )
    first, *chain = crash_part.split(">")
    crashes = [Crash.parse(first), *(Crash.parse(x) for x in chain)]
    if chain and not isinstance(c, CrashCheck):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{c.name}: recovery is never crashed")
    return crashes[0], crashes[1:]


def _fault_image(
    trace: Trace, judge: Judge, crash: Crash, what: str = "the workload"
) -> tuple[Any, CrashInfo, CrashPoint, CrashState]:
    """The image a crash names in a recorded trace, with its faults applied (strictly: a
    point out of range or a line not in flight is an error, never clamped)."""
    if not 0 <= crash.point < len(trace.points):
        raise InvalidArgumentError(
            ErrorCode.EINVAL,
            f"crash {crash}: {what} has crash points 0 to {len(trace.points) - 1}, "
            f"not {crash.point}",
        )
    point = trace.points[crash.point]
    state = point.state
    if "unsafe_shutdown" in crash.faults:
        if point.unsafe_state is None:
            raise InvalidArgumentError(ErrorCode.EINVAL, "no unsafe-shutdown state recorded")
        state = point.unsafe_state
    image = judge.image(state, deviations_for(state, crash, strict=True))
    for fault in crash.faults:
        if fault.startswith("badblock."):
            image = judge.with_badblock(image, fault)
        elif fault != "unsafe_shutdown":
            raise InvalidArgumentError(ErrorCode.EINVAL, f"unknown fault {fault!r} in the crash")
    return image, CrashInfo(point.index, point.kind, point.markers, crash.faults), point, state


def replay(c: CrashCheck | FileCrashCheck, token: str) -> BaseException | None:
    """Rebuild the image a replay token names and run recovery on it again.

    ``token`` is a failure's token (``name@crash[>recovery crash...]``) or just the crash
    part. Returns recovery's exception (None if the image is consistent now). A token that
    names another check, a crash point the run does not have, or a line with nothing in
    flight there is an error.
    """
    validate_check(c)
    err = _replay(c, token)[0]
    return err.error if isinstance(err, RecoveryCrashFailure) else err


def _replay(c: Any, token: str) -> tuple[BaseException | None, Crash, CrashPoint, Any, Any]:
    timer = RunTimer(c.run_timeout)
    with timer.installed():
        return _replay_with(c, token, timer)


def _replay_with(
    c: Any, token: str, timer: RunTimer
) -> tuple[BaseException | None, Crash, CrashPoint, Any, Any]:
    crash, chain = _split_token(c, token)
    with _recorded(c, "unsafe_shutdown" in crash.faults) as (trace, judge):
        judge.timer = timer
        image, info, point, state = _fault_image(trace, judge, crash)
        if not isinstance(c, CrashCheck):
            return judge.verdict(image, info), crash, point, state, judge
    # The recovery crashes' images: closed as the chain ends, however it ends, as
    # _recorded closes the workload's judge.
    pool_judge = _PoolJudge(c)
    try:
        for link in chain:
            try:
                with timer.running():
                    t = record(
                        _recovery_as_workload(c, info), granularity=c.granularity, base=image
                    )
            except HANG_ERRORS as exc:
                timer.disarm()
                return exc, crash, point, state, judge
            except USER_FAILURES as exc:  # recovery failed as a recorded workload: its verdict
                return exc, crash, point, state, judge
            image, info, _, _ = _fault_image(t, pool_judge, link, "recovery")
    finally:
        pool_judge.close()
    err = run_recovery(c.recover, image, c.granularity, info, None, c.badblock_policy, timer=timer)
    if err is not None and chain:
        err = RecoveryCrashFailure(tuple(chain), err)
    return err, crash, point, state, judge


def _replayed(c: Any, token: str) -> CheckResult:
    """``check(c, replay=token)``: the one crash a token names, as a result."""
    started = time.perf_counter()
    result = CheckResult(c.name, c.expect, "replay", c.seed, crash_points=1, check=c)
    err, crash, point, state, judge = _replay(c, token)
    result.images_possible = result.images_checked = result.images_covered = 1
    result.recovery_runs = 1
    if err is not None:
        deviations = deviations_for(state, crash, strict=True)
        cand = _Candidate(
            (len(deviations), 0, crash.point, str(crash)),
            crash.point,
            crash.faults,
            deviations,
            "replay",
            Verdict.of(err),
            err,
            point,
            state,
        )
        result.inconsistent = 1
        exact = dataclasses.replace(crash_for(point, deviations, state), faults=crash.faults)
        lines, lost = lost_of(state, deviations)
        v = Verdict.of(err)
        result.failing.append(FailedCrash(exact, lines, lost, v.kind, v.signature, v.message))
        result.hangs = int(isinstance(err, RecoveryHang))
        result.failures.append(_failure(c.name, judge, cand, point, state, err))
    result.seconds = time.perf_counter() - started
    return result
