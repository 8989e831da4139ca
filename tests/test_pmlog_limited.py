"""A checker worker's time limit per run (:class:`pmemsim.pmlog.serve.Limited`): at least the
limit for every run, at most a slack more, and a timer armed about once per slack, not twice
per run."""

from __future__ import annotations

import os
import signal
import time
import types
from typing import Any

import pytest

from pmemsim.pmlog import serve
from pmemsim.pmlog.serve import Limited


def _sleeper(files: object, run: list[float]) -> None:
    time.sleep(run[0])


def _ends(runs: list[float], seconds: float, idle_between: bool = False) -> int | None:
    """Run ``Limited`` over judges sleeping ``runs`` seconds each, in a child: the signal
    that ended it, or None."""
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            limit = Limited(_sleeper, seconds)  # type: ignore[arg-type]
            for r in runs:
                limit(None, [r])  # type: ignore[list-item]
                if idle_between:
                    limit.idle()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


def test_a_run_has_its_whole_limit_after_quick_runs() -> None:
    # The quick runs leave the timer armed; the slow one starts a little later, yet has
    # its whole limit (0.5 s) before the timer fires.
    quick = [0.0] * 50 + [0.002] * 3
    assert _ends([*quick, 0.45], 0.5) is None


def test_a_run_past_its_limit_ends_the_process() -> None:
    assert _ends([0.0] * 20 + [0.7], 0.5) == signal.SIGALRM
    assert _ends([0.7], 0.5) == signal.SIGALRM


def test_no_timer_while_idle() -> None:
    # Long waits between runs (a worker waiting for its next batch) are not timed.
    assert _ends([0.0, 0.0], 0.2, idle_between=True) is None  # (sanity)
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            limit = Limited(lambda files, run: None, 0.2)
            limit(None, [0])
            limit.idle()
            time.sleep(0.5)  # past the limit, idle
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert not os.WIFSIGNALED(status)


def test_a_long_run_leaves_no_timer_behind() -> None:
    limit = Limited(_sleeper, 10)  # type: ignore[arg-type]
    limit.slack = 0.01
    limit(None, [0.05])  # type: ignore[list-item]
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert limit.armed is None


def test_quick_runs_arm_the_timer_about_once_per_slack(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    real = serve.signal  # type: ignore[attr-defined]

    def setitimer(which: int, seconds: float) -> Any:
        calls.append(seconds)
        return real.setitimer(which, seconds)

    fake = types.SimpleNamespace(setitimer=setitimer, ITIMER_REAL=real.ITIMER_REAL)
    monkeypatch.setattr(serve, "signal", fake)
    limit = Limited(lambda files, run: None, 10)
    try:
        for _ in range(10_000):
            limit(None, [0])
    finally:
        limit.idle()
    assert calls[-1] == 0 and calls.count(0) == 1
    assert 1 <= len(calls) - 1 <= 50, len(calls)  # 10,000 runs, well under a second
    assert all(c == 10 + limit.slack for c in calls[:-1])
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
