"""A ``frequent`` run timer (a Python checker's, one run per crash image) in the main thread:
its alarm is set once per limit's time, not per run, yet each run is interrupted at its own
limit; another timer's alarm in between does not leave a run unguarded; an interrupted run's
repeating alarm ends with it."""

from __future__ import annotations

import signal
import time

import pytest

from pmemsim.explore.runtimer import RunTimer


class Stopped(BaseException):
    pass


LIMIT = 0.3


def _timer() -> RunTimer:
    return RunTimer(LIMIT, "stopped", Stopped, frequent=True)


def _stopped_after(timer: RunTimer) -> float:
    """Seconds until a run that never ends by itself is interrupted."""
    start = time.monotonic()
    try:
        try:
            timer.arm()
            while time.monotonic() - start < 10:
                pass
        finally:
            timer.disarm()
    except Stopped as exc:
        assert str(exc) == "stopped"
        return time.monotonic() - start
    pytest.fail("the run was not interrupted")


def _quick_runs(timer: RunTimer, seconds: float) -> int:
    """Short runs for ``seconds``: how many."""
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        timer.arm()
        timer.disarm()
        n += 1
    return n


def test_a_run_gets_its_own_limit_after_many_short_ones() -> None:
    timer = _timer()
    before = signal.getsignal(signal.SIGALRM)
    with timer.installed():
        # The alarm set by the first short run goes off during the long run: it is set
        # again for what that run has left, not taken for its end.
        assert _quick_runs(timer, 0.2) > 100
        took = _stopped_after(timer)
        assert LIMIT - 0.02 <= took < LIMIT + 2
        # Its repeating alarm ended with it: nothing is set until the next run.
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        assert _quick_runs(timer, 0.05) > 10
        assert LIMIT - 0.02 <= _stopped_after(timer) < LIMIT + 2
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before


def test_another_timer_in_between_leaves_no_run_unguarded() -> None:
    timer = _timer()
    other = RunTimer(5.0, "other", Stopped)
    before = signal.getsignal(signal.SIGALRM)
    with timer.installed():
        _quick_runs(timer, 0.01)  # its alarm is set
        other.arm()  # (replaces the alarm, then cancels it)
        other.disarm()
        assert _stopped_after(timer) < LIMIT + 2
    assert signal.getsignal(signal.SIGALRM) is before


def test_an_alarm_between_runs_interrupts_nothing() -> None:
    timer = _timer()
    with timer.installed():
        _quick_runs(timer, 0.01)
        time.sleep(LIMIT + 0.1)  # its alarm goes off here, with no run under way
        assert _quick_runs(timer, 0.01) > 0
