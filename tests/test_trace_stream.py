"""Streaming crash points out of a recording (record(..., on_point=fn))."""

from __future__ import annotations

import gc
import itertools
import weakref

import pytest

import pmemsim as pm
from pmemsim.explore import CrashCheck, check, marker, record
from pmemsim.explore.recovery import run_recovery
from pmemsim.explore.trace import CrashPoint, StopRecording
from pmemsim.markers import CrashInfo


def _epochs(n: int) -> object:
    def workload(v: pm.View) -> None:
        for i in range(n):
            with marker("put"):
                v.u64[(i % 8) * 8] = i + 1
                v.u64[(i % 8) * 8 + 1] = i
                v.persist((i % 8) * 64, 16)

    return workload


def _summary(p: CrashPoint) -> tuple[object, ...]:
    return (p.index, p.kind, p.position, p.operation, p.markers, p.state.image_count())


@pytest.mark.parametrize("mode", ["barriers", "operations", "markers"])
def test_streamed_points_are_the_recorded_points(mode: str) -> None:
    kept = record(_epochs(5), crash_points=mode, unsafe_shutdown=True)  # type: ignore[arg-type]
    got: list[CrashPoint] = []
    streamed = record(_epochs(5), crash_points=mode, unsafe_shutdown=True, on_point=got.append)  # type: ignore[arg-type]
    assert streamed.points == [] and streamed.point_count == len(got) == len(kept.points)
    assert kept.point_count == len(kept.points) and not streamed.stopped
    assert [_summary(p) for p in got] == [_summary(p) for p in kept.points]
    assert streamed.lines == kept.lines and streamed.findings == kept.findings
    # Points with nothing in between still share their state object.
    shared = [p.state is q.state for p, q in itertools.pairwise(got)]
    assert shared == [p.state is q.state for p, q in itertools.pairwise(kept.points)]


def test_the_recorder_keeps_no_point_the_consumer_dropped() -> None:
    refs: list[weakref.ref[object]] = []
    kept: list[CrashPoint] = []

    def on_point(p: CrashPoint) -> None:
        refs.append(weakref.ref(p.state))
        if p.index == 3:
            kept.append(p)  # a consumer may keep what it wants (the minimal failure, say)

    trace = record(_epochs(40), on_point=on_point)  # type: ignore[arg-type]
    del trace
    gc.collect()
    alive = [i for i, r in enumerate(refs) if r() is not None]
    assert alive == [3]


def test_stop_recording_ends_the_run_and_the_workload_unwinds() -> None:
    seen: list[int] = []
    unwound: list[bool] = []

    def workload(v: pm.View) -> None:
        try:
            for i in range(100):
                try:
                    v.u64[0] = i
                    v.persist(0, 8)
                except Exception:  # a workload's own handler does not swallow the stop
                    pytest.fail("StopRecording reached the workload as an Exception")
        finally:
            unwound.append(True)

    def on_point(p: CrashPoint) -> None:
        seen.append(p.index)
        if p.index == 4:
            raise StopRecording

    trace = record(workload, on_point=on_point)
    assert seen == [0, 1, 2, 3, 4] and trace.stopped and trace.point_count == 5
    assert unwound == [True]


def test_a_callbacks_error_comes_out_even_if_the_workload_swallows_everything() -> None:
    class Boom(Exception):
        pass

    def workload(v: pm.View) -> None:
        for i in range(10):
            try:
                v.u64[0] = i
                v.persist(0, 8)
            except BaseException:  # the worst a workload can do
                pass

    def on_point(p: CrashPoint) -> None:
        raise Boom(p.index)

    with pytest.raises(Boom, match="0"):
        record(workload, on_point=on_point)


def test_recovery_with_markers_runs_inside_the_callback() -> None:
    """The recorder's marker sink is suspended while the callback runs recovery."""
    verdicts: list[object] = []

    def recover(v: pm.View) -> bool:
        with marker("recover"):
            return v.u64[0] in (0, 1)

    def on_point(p: CrashPoint) -> None:
        snap = p.state.persisted_image().snapshot()
        info = CrashInfo(p.index, p.kind, p.markers)
        verdicts.append(run_recovery(recover, snap, pm.Granularity.CACHE_LINE, info))

    def workload(v: pm.View) -> None:
        with marker("put"):
            v.u64[0] = 1
            v.persist(0, 8)

    trace = record(workload, keep_ops=True, crash_points="markers", on_point=on_point)
    assert verdicts == [None] * trace.point_count and trace.point_count == 3
    assert [getattr(op, "name", None) for op in trace.ops if op.kind == "marker"] == ["put"] * 2


def test_check_still_sees_every_point() -> None:
    r = check(CrashCheck("epochs", _epochs(3), lambda v: True))  # type: ignore[arg-type]
    assert r.verdict == "consistent" and r.crash_points == 4
