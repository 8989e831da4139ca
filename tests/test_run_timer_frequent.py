"""A ``frequent`` run timer (a Python checker's, one run per crash image) in the main thread:
its alarm is set once per limit's time, not per run, yet each run is interrupted at its own
limit; another timer's alarm in between does not leave a run unguarded; an interrupted run's
repeating alarm ends with it. Each promise holds for both ways of timing a run: ``arm`` and
``disarm`` around it, and :meth:`~pmemsim.explore.runtimer.RunTimer.runner` (arming, the call
and disarming in one, as the in-process judge runs a checker), which also keeps its own: a
run that raises is disarmed, and a runner asked for in another thread times its runs there."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pmemsim.explore.runtimer import RunTimer


class Stopped(BaseException):
    pass


LIMIT = 0.3

#: A way of timing runs: given the timer, what runs ``fn(arg)`` timed.
Way = Callable[[RunTimer], Callable[[Callable[[Any], Any], Any], Any]]


def _armed(timer: RunTimer) -> Callable[[Callable[[Any], Any], Any], Any]:
    def run(fn: Callable[[Any], Any], arg: Any) -> Any:
        timer.arm()
        try:
            return fn(arg)
        finally:
            timer.disarm()

    return run


WAYS = pytest.mark.parametrize("way", [_armed, RunTimer.runner], ids=["arm", "runner"])


def _timer() -> RunTimer:
    return RunTimer(LIMIT, "stopped", Stopped, frequent=True)


def _loop(_: Any) -> None:
    start = time.monotonic()
    while time.monotonic() - start < 10:
        pass


def _stopped_after(timer: RunTimer, way: Way) -> float:
    """Seconds until a run that never ends by itself is interrupted."""
    run = way(timer)
    start = time.monotonic()
    try:
        run(_loop, None)
    except Stopped as exc:
        assert str(exc) == "stopped"
        return time.monotonic() - start
    pytest.fail("the run was not interrupted")


def _quick_runs(timer: RunTimer, way: Way, seconds: float) -> int:
    """Short runs for ``seconds``: how many (each returns what its function returned)."""
    run = way(timer)
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert run(len, b"abc") == 3
        n += 1
    return n


@WAYS
def test_a_run_gets_its_own_limit_after_many_short_ones(way: Way) -> None:
    timer = _timer()
    before = signal.getsignal(signal.SIGALRM)
    with timer.installed():
        # The alarm set by the first short run goes off during the long run: it is set
        # again for what that run has left, not taken for its end.
        assert _quick_runs(timer, way, 0.2) > 100
        took = _stopped_after(timer, way)
        assert LIMIT - 0.02 <= took < LIMIT + 2
        # Its repeating alarm ended with it: nothing is set until the next run.
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        assert _quick_runs(timer, way, 0.05) > 10
        assert LIMIT - 0.02 <= _stopped_after(timer, way) < LIMIT + 2
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before


@WAYS
def test_another_timer_in_between_leaves_no_run_unguarded(way: Way) -> None:
    timer = _timer()
    other = RunTimer(5.0, "other", Stopped)
    before = signal.getsignal(signal.SIGALRM)
    with timer.installed():
        _quick_runs(timer, way, 0.01)  # its alarm is set
        other.arm()  # (replaces the alarm, then cancels it)
        other.disarm()
        assert _stopped_after(timer, way) < LIMIT + 2
    assert signal.getsignal(signal.SIGALRM) is before


@WAYS
def test_an_alarm_between_runs_interrupts_nothing(way: Way) -> None:
    timer = _timer()
    with timer.installed():
        _quick_runs(timer, way, 0.01)
        time.sleep(LIMIT + 0.1)  # its alarm goes off here, with no run under way
        assert _quick_runs(timer, way, 0.01) > 0


def test_in_this_thread_the_runner_is_the_inline_one() -> None:
    timer = _timer()
    with timer.installed():
        assert timer.runner() == timer._frequent_run


def test_a_run_that_raises_is_disarmed() -> None:
    timer = _timer()
    with timer.installed():
        run = timer.runner()
        with pytest.raises(ZeroDivisionError):
            run(lambda x: 1 / x, 0)
        assert not timer._armed
        time.sleep(LIMIT + 0.1)  # its alarm goes off with no run under way
        assert run(len, b"") == 0


def test_a_runner_asked_for_in_another_thread_times_its_runs_there() -> None:
    timer = _timer()
    got: list[object] = []

    def other() -> None:
        run = timer.runner()
        got.append(run == timer._frequent_run)
        try:
            run(_loop, None)
        except Stopped as exc:
            got.append(str(exc))
        finally:
            timer.close()

    with timer.installed():  # (in the main thread: not the other's)
        t = threading.Thread(target=other)
        t.start()
        t.join(10)
    assert got == [False, "stopped"]


def test_without_a_limit_a_run_is_the_call() -> None:
    timer = RunTimer(None, "never", Stopped, frequent=True)
    with timer.installed():
        assert timer.runner()(len, b"ab") == 2
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
