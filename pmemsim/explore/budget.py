"""Limits by time: per check, per crash point, and per run of recovery (hangs).

A check and each of its crash points get a deadline (``time.monotonic()``, kept by the
engine's session); exploration stops taking new images past it and the result says how
much it covered and what was cut (:class:`Cuts`). A single run of recovery gets a
:class:`RunTimer`: a run past its time is interrupted with
:class:`~pmemsim.explore.report.RecoveryHang` and reported as a failure of kind "hang".

The interruption is ``SIGALRM`` from ``setitimer`` in the main thread (one system call to
arm and one to disarm per run); in any other thread a watchdog thread raises the exception
asynchronously in the thread running recovery. Either way the exception arrives between
two Python bytecodes: recovery stuck inside one C call is interrupted when it returns.
Worker processes run recovery in their main thread, so the signal works there too.

The watchdog raises only while the thread runs the user's own code, not pmemsim's, the
standard library's or an installed package's (site-packages: Hypothesis' garbage-collector
callback, say, which runs in whatever thread collects): an exception landing between a
lock's acquire and the ``try`` that releases it would leave the lock held, and in another
thread that is a deadlock. (Only after :data:`GRACE` seconds of never finding the thread
there does it raise anyway: recovery that lives in an installed package is interrupted
that much later.)
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from .report import RecoveryHang

__all__ = ["Cuts", "RunTimer"]

#: Seconds between repeated interruptions of a run past its time.
REPEAT = 0.05
#: Seconds past a run's time after which the watchdog interrupts it wherever it is.
GRACE = 5.0
#: How often the watchdog looks again for the thread in the user's code.
_LOOK = 0.001


@dataclass
class Cuts:
    """What the budgets cut short in one check, to be said in its result."""

    check_budget: float | None
    point_budget: float | None
    max_images: int | None = None
    #: Crash points whose exploration the point budget cut short.
    timed_out: list[int] = field(default_factory=list)
    #: Crash points where lazy exploration stopped at ``max_images`` read paths.
    counted: list[int] = field(default_factory=list)
    #: The crash point at which the check's budget ran out (None: it did not).
    check_ran_out_at: int | None = None

    def notes(self, points: int) -> list[str]:
        """What the budgets cut, in words (empty when nothing was cut)."""
        out = []
        if self.check_ran_out_at is not None:
            out.append(
                f"the check's time budget ({self.check_budget:g} s) ran out at crash point "
                f"{self.check_ran_out_at} of {points}"
            )
        if self.timed_out:
            out.append(
                f"the time budget per crash point ({self.point_budget:g} s) cut crash "
                f"point(s) {_some(self.timed_out)}"
            )
        if self.counted:
            out.append(
                f"stopped at {self.max_images} read paths at crash point {_some(self.counted)}"
            )
        return out


def _some(points: list[int]) -> str:
    shown = ", ".join(map(str, points[:5]))
    return shown + (f" and {len(points) - 5} more" if len(points) > 5 else "")


class RunTimer:
    """Interrupts a run of recovery that takes longer than ``seconds`` (None: never).

    ``with timer.installed():`` around many runs installs the signal handler once, so that
    each run costs only arming and disarming the timer.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._watchdog: _Watchdog | None = None
        self._installed = False
        self._handler: Any = None
        self._armed = False

    def message(self) -> str:
        return f"recovery did not finish within {self.seconds:g} s (run_timeout)"

    def _signals(self) -> bool:
        return threading.current_thread() is threading.main_thread() and hasattr(
            signal, "setitimer"
        )

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Around the runs of one check: the signal handler installed once (main thread),
        and no watchdog thread left behind afterwards (other threads)."""
        if self.seconds is None or self._installed:
            yield
            return
        if not self._signals():
            try:
                yield
            finally:
                if self._watchdog is not None:
                    self._watchdog.close()
                    self._watchdog = None
            return
        previous = signal.signal(signal.SIGALRM, self._expired)
        self._installed = True
        try:
            yield
        finally:
            self._installed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Run the body under the time limit; past it, RecoveryHang is raised inside it."""
        self.arm()
        try:
            yield
        finally:
            self.disarm()

    def arm(self) -> None:
        """Start timing a run (pair with :meth:`disarm` in a ``finally``)."""
        if self.seconds is None:
            return
        self._armed = True
        if self._signals():
            if not self._installed:
                self._handler = signal.signal(signal.SIGALRM, self._expired)
            # Then again every REPEAT seconds: an exception raised where Python ignores it
            # (a weakref callback, a __del__) must not let the hang go on.
            signal.setitimer(signal.ITIMER_REAL, self.seconds, REPEAT)
            return
        if self._watchdog is None:
            self._watchdog = _Watchdog(_hang_with(self.message()))
        self._watchdog.start(self.seconds)

    def disarm(self) -> None:
        """Stop timing (idempotent): from here on no interruption is raised."""
        if self.seconds is None:
            return
        self._armed = False  # first: an alarm now finds nothing to interrupt
        if self._signals():
            signal.setitimer(signal.ITIMER_REAL, 0)
            if not self._installed:
                signal.signal(signal.SIGALRM, self._handler)
            return
        assert self._watchdog is not None
        self._watchdog.stop()

    def _expired(self, signum: int, frame: FrameType | None) -> None:
        if self._armed:
            raise RecoveryHang(self.message())


def _hang_with(message: str) -> type[RecoveryHang]:
    """RecoveryHang saying ``message`` when raised without arguments, as an exception raised
    in another thread is: the verdict reads as the signal handler's, whichever thread ran
    (a worker thread on a cluster, the main thread when the failure is re-run)."""

    class Hang(RecoveryHang):
        def __init__(self, *args: object) -> None:
            super().__init__(*(args or (message,)))

    Hang.__name__ = Hang.__qualname__ = RecoveryHang.__name__
    return Hang


def _not_users() -> tuple[str, ...]:
    import pmemsim_backends

    import pmemsim

    dirs = [os.path.dirname(m.__file__ or "") for m in (pmemsim, pmemsim_backends)]
    paths = sysconfig.get_paths()
    dirs += [paths["stdlib"], paths["purelib"], paths["platlib"]]
    return tuple(os.path.join(d, "") for d in dirs if d)


_NOT_USERS: tuple[str, ...] | None = None


def _in_users_code(ident: int) -> bool:
    """Whether thread ``ident`` runs the user's code (an exception raised there unwinds
    through pmemsim's ``finally`` blocks, never between an acquire and its ``try``)."""
    global _NOT_USERS
    if _NOT_USERS is None:
        _NOT_USERS = _not_users()
    frame = sys._current_frames().get(ident)
    return frame is not None and not frame.f_code.co_filename.startswith(_NOT_USERS)


class _Watchdog:
    """One daemon thread that raises RecoveryHang in a thread whose run overstays."""

    def __init__(self, hang: type[RecoveryHang] = RecoveryHang) -> None:
        self._hang = hang
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._target = 0
        self._run = 0
        self._fired = -1
        self._late = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="pmemsim-run-timer", daemon=True)
        self._thread.start()

    def start(self, seconds: float) -> None:
        with self._cond:
            self._run += 1
            self._deadline = time.monotonic() + seconds
            self._target = threading.get_ident()
            self._cond.notify()

    def stop(self) -> None:
        while True:
            try:
                with self._cond:
                    self._deadline = None
                    if self._fired == self._run:  # too late to interrupt: drop it if pending
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(self._target), None
                        )
                    self._cond.notify()
                return
            except RecoveryHang:  # arrived while stopping: the run is over all the same
                continue

    def close(self) -> None:
        """End the thread (after the last run)."""
        with self._cond:
            self._closed = True
            self._deadline = None
            self._cond.notify()
        self._thread.join()

    def _loop(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                left = self._deadline - now
                if left > 0:
                    self._cond.wait(left)
                    continue
                if self._fired != self._run:
                    self._late = now  # the run's time is up
                    self._fired = self._run
                if now - self._late < GRACE and not _in_users_code(self._target):
                    self._cond.wait(_LOOK)
                    continue
                self._deadline = now + REPEAT  # until the run ends (see REPEAT)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._target), ctypes.py_object(self._hang)
                )
