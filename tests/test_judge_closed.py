"""A crash check's judge closes the set and source its recovery runs on (its
:class:`~pmemsim.explore.harness.PoolHarness`) as the check's session ends, however it ends:
left to the collector, the source stayed open until some collection, maybe inside a later
run. The collector is off here: what is not closed explicitly shows."""

from __future__ import annotations

import os
from typing import Any

import pytest

from pmemsim.explore import CrashCheck, FileCrashCheck, check, engine, files, judges
from pmemsim.explore.executor import Inline
from pmemsim.markers import CrashInfo


class Interrupted(BaseException):
    """Not one of the user's failures (those are verdicts): it ends the check."""


def _workload(view: Any) -> None:
    view.u64[0] = 1
    view.persist(0, 8)
    view.u64[1] = 2
    view.persist(8, 8)


def _consistent(view: Any) -> None:
    assert view.u64[1] in (0, 2)


def _fails(view: Any) -> None:
    if view.u64[0] == 1 and view.u64[1] == 0:
        raise ValueError("the second store was lost")


def _interrupted(view: Any) -> None:
    raise Interrupted


def _hangs(view: Any) -> None:
    while True:
        pass


@pytest.fixture(params=["streamed", "session"])
def explore(request: pytest.FixtureRequest) -> Any:
    """``check`` one way: streamed (recorded and explored at once, the default) or a
    recorded session an executor explores. Each makes its own judge."""
    run = {"streamed": {}, "session": {"executor": Inline()}}[request.param]

    def run_check(recover: Any, **fields: Any) -> Any:
        c = CrashCheck("closes", _workload, recover, strategy="exhaustive", **fields)
        return check(c, progress=None, **run)

    return run_check


def _harnesses(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The harnesses of the judges made from here on."""
    made: list[Any] = []
    init = judges._PoolJudge.__init__

    def tracked(self: Any, c: Any) -> None:
        init(self, c)
        made.append(self.harness)

    monkeypatch.setattr(judges._PoolJudge, "__init__", tracked)
    return made


def test_a_consistent_checks_judge_closes_its_source(
    explore: Any, left_open: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _harnesses(monkeypatch)
    r = explore(_consistent)
    assert r.recovery_runs > 1  # the harness ran recovery, so it built its source
    assert made and all(h.source.closed for h in made)
    assert left_open() == []


def test_a_failing_checks_judge_closes_its_source(
    explore: Any, left_open: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _harnesses(monkeypatch)
    r = explore(_fails)
    assert r.inconsistent and r.failures
    assert made and all(h.source.closed for h in made)
    assert left_open() == []


def test_a_judge_closes_its_source_when_recovery_ends_the_check(
    explore: Any, left_open: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _harnesses(monkeypatch)
    with pytest.raises(Interrupted):
        explore(_interrupted)
    assert made and all(h.source.closed for h in made)
    assert left_open() == []


def test_a_judge_closes_its_source_when_the_time_limit_interrupts_recovery(
    explore: Any, left_open: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _harnesses(monkeypatch)
    r = explore(_hangs, run_timeout=0.05, time_budget=5.0)
    assert r.hangs
    assert made and all(h.source.closed for h in made)
    assert left_open() == []


def test_a_replays_judge_closes_its_source(left_open: Any) -> None:
    c = CrashCheck("closes", _workload, _consistent)
    with judges._recorded(c, False) as (trace, judge):
        point = trace.points[-1]
        assert judge.verdict(judge.image(point.state, ()), CrashInfo(point.index, "x", ())) is None
        assert left_open() != []  # (its harness built them)
    assert left_open() == []


def test_a_files_recording_is_removed_when_its_session_cannot_be_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[Any] = []
    make = files.make

    def tracked(kind: str) -> Any:
        made.append(make(kind))
        return made[-1]

    def refused(*args: Any) -> Any:
        raise Interrupted

    monkeypatch.setattr(files, "make", tracked)
    monkeypatch.setattr(engine, "_session", refused)
    c = FileCrashCheck("closes", lambda sim, root: None, lambda sim, root: None)
    with pytest.raises(Interrupted) as caught, engine.recorded_session(c):
        pass
    # Removed by the failed enter itself: not when the recording goes, which the traceback
    # kept (a CLI report, a test's record of the failure).
    assert caught.traceback
    assert made and not any(os.path.exists(s.path) for s in made)
