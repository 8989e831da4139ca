"""A Python checker's timer (FunctionChecker.timer, made once per check): its limit, and a
timed-out verdict naming that limit, whatever limit the check before had."""

from __future__ import annotations

from pmemsim.pmlog import FunctionChecker
from pmemsim.pmlog.checkers import CheckerStopped, timed_out


def test_each_limit_names_itself_in_its_timed_out_verdict() -> None:
    for seconds in (0.25, 7, 0.25, 3.5, 3.5, 10.0):
        timer = FunctionChecker(lambda image: True, "t", timeout=seconds).timer()
        assert timer is not None
        assert timer.seconds == seconds and timer.frequent and timer.hang is CheckerStopped
        want = f"timed out after {seconds:g} s (the time limit per checker run)"
        assert timer.message() == str(timed_out(seconds)) == want


def test_no_limit_no_timer() -> None:
    assert FunctionChecker(lambda image: True, "t", timeout=None).timer() is None
