"""A time limit on one run of the user's Python code: a recovery, or a check-log Python
checker on one image.

A run past its time is interrupted by an exception raised inside it: :class:`RunTimer`'s
``hang`` class, :class:`~pmemsim.explore.report.RecoveryHang` unless told otherwise, a
``BaseException`` so that the user's own ``except Exception`` does not swallow it.

The interruption is ``SIGALRM`` from ``setitimer`` in the main thread (one system call to
arm and one to disarm per run); in any other thread a watchdog thread raises the exception
asynchronously in the thread running the code. Either way the exception arrives between
two Python bytecodes: code stuck inside one C call is interrupted when it returns. Worker
processes run recovery in their main thread, so the signal works there too.

The watchdog raises only while the thread runs the user's own code, not pmemsim's, the
standard library's or an installed package's (site-packages: Hypothesis' garbage-collector
callback, say, which runs in whatever thread collects): an exception landing between a
lock's acquire and the ``try`` that releases it would leave the lock held, and in another
thread that is a deadlock. (Only after :data:`GRACE` seconds of never finding the thread
there does it raise anyway: code that lives in an installed package is interrupted that
much later.)

This module imports nothing on its own that check-log's start-up does not have already
(ctypes and sysconfig come with the first watchdog): a Python checker's runs use it.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["GRACE", "REPEAT", "RunTimer"]

#: Seconds between repeated interruptions of a run past its time.
REPEAT = 0.05
#: Seconds past a run's time after which the watchdog interrupts it wherever it is.
GRACE = 5.0
#: How often the watchdog looks again for the thread in the user's code.
_LOOK = 0.001

# (Looked up once: a frequent run's arming and disarming cost 0.2 us together.)
_get_ident = threading.get_ident
#: signal.signal without the wrapper that makes enums of the handlers given and returned (a
#: bound method as handler costs a ValueError, with its repr: 47,000 instructions of a tiny
#: log's check, installing and restoring); the handler it returns is only ever given back.
_set_handler = _signal.signal
_monotonic = time.monotonic


class RunTimer:
    """Interrupts a run that takes longer than ``seconds`` (None: never) with ``hang``
    (default :class:`~pmemsim.explore.report.RecoveryHang`) saying ``message`` (default:
    recovery's words, naming its ``run_timeout``).

    ``with timer.installed():`` around many runs installs the signal handler once, so that
    each run costs only arming and disarming the timer. ``frequent``: runs come many per
    second (a checker per crash image), so under ``installed()`` a run does not cost those
    two system calls either (see :meth:`arm`).
    """

    def __init__(
        self,
        seconds: float | None,
        message: str | None = None,
        hang: type[BaseException] | None = None,
        frequent: bool = False,
    ) -> None:
        self.seconds = seconds
        self.frequent = frequent
        #: When the run under way began (``frequent`` runs), and whether it was interrupted
        #: (then the alarm repeats until it is disarmed).
        self._began = 0.0
        self._repeating = False
        self._message = message
        if hang is None:
            from .report import RecoveryHang

            hang = RecoveryHang
        self.hang = hang
        self._watchdog: _Watchdog | None = None
        #: The thread (the main thread) whose signal handler installed() installed, or 0.
        self._installed = 0
        self._handler: Any = None
        self._armed = False

    def __getstate__(self) -> dict[str, Any]:
        # What belongs to this process (a handler, a thread) does not travel.
        state = dict(self.__dict__)
        state.update(_watchdog=None, _installed=0, _handler=None, _armed=False)
        return state

    def message(self) -> str:
        if self._message is not None:
            return self._message
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
                self.close()
            return
        previous = _set_handler(signal.SIGALRM, self._expired)
        self._installed = threading.get_ident()
        try:
            yield
        finally:
            self._installed = 0
            signal.setitimer(signal.ITIMER_REAL, 0)
            _PENDING[0] = None
            _set_handler(signal.SIGALRM, previous)

    def close(self) -> None:
        """End the watchdog thread, if any (after the last run, outside the main thread)."""
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None

    @contextmanager
    def running(self) -> Iterator[None]:
        """Run the body under the time limit; past it, ``hang`` is raised inside it."""
        self.arm()
        try:
            yield
        finally:
            self.disarm()

    def arm(self) -> None:
        """Start timing a run (pair with :meth:`disarm` in a ``finally``).

        A ``frequent`` run in the main thread under :meth:`installed` notes when it began;
        the alarm is set only when none of this timer's is pending, and a run's disarming
        leaves it be. When it goes off, the run under way (if any) is interrupted if its
        time is up, else the alarm is set again for the time it has left: so an alarm
        comes at most once per limit's time, and a run is interrupted at its limit as with
        an alarm of its own."""
        # (installed() sets _installed only when there is a limit.)
        if self._installed == _get_ident():
            assert self.seconds is not None
            if self.frequent:
                self._began = _monotonic()
                self._armed = True
                if _PENDING[0] is not self:  # (checked once armed: see _expired)
                    _PENDING[0] = self
                    signal.setitimer(signal.ITIMER_REAL, self.seconds)
                return
            self._armed = True
            _PENDING[0] = None
            signal.setitimer(signal.ITIMER_REAL, self.seconds, REPEAT)
            return
        if self.seconds is None:
            return
        self._armed = True
        if self._signals():
            _PENDING[0] = None  # (this replaces any alarm set before)
            self._handler = _set_handler(signal.SIGALRM, self._expired)
            # Then again every REPEAT seconds: an exception raised where Python ignores it
            # (a weakref callback, a __del__) must not let the hang go on.
            signal.setitimer(signal.ITIMER_REAL, self.seconds, REPEAT)
            return
        if self._watchdog is None:
            self._watchdog = _Watchdog(_hang_with(self.message(), self.hang))
        self._watchdog.start(self.seconds)

    def runner(self) -> Callable[[Callable[[Any], object], Any], object]:
        """A function running ``fn(arg)`` as one timed run (:meth:`arm`, the call,
        :meth:`disarm`) and returning what it returns: for many runs in a row in this thread
        (a Python checker's batch of images), asked for again when the thread or the
        installation may have changed. A ``frequent`` timer installed in this thread gets
        arming and disarming inline (its alarm as :meth:`arm` says): one call per run
        instead of two, no thread to look up; 1,300 instructions of timing a run, not 2,900."""
        if self._installed == _get_ident() and self.frequent:
            return self._frequent_run
        return self._run

    def _run(self, fn: Callable[[Any], object], arg: Any) -> object:
        try:
            self.arm()
            return fn(arg)
        finally:
            self.disarm()

    def _frequent_run(self, fn: Callable[[Any], object], arg: Any) -> object:
        """:meth:`_run` of a ``frequent`` timer installed in the thread running it: what
        :meth:`arm` and :meth:`disarm` do for that one, inline."""
        try:
            self._began = _monotonic()
            self._armed = True
            if _PENDING[0] is not self:  # (checked once armed: see _expired)
                assert self.seconds is not None  # (installed() sets _installed only so)
                _PENDING[0] = self
                signal.setitimer(signal.ITIMER_REAL, self.seconds)
            return fn(arg)
        finally:
            self._armed = False  # first: an alarm now finds nothing to interrupt
            if self._repeating:
                self._repeating = False
                _PENDING[0] = None
                signal.setitimer(signal.ITIMER_REAL, 0)

    def disarm(self) -> None:
        """Stop timing (idempotent): from here on no interruption is raised."""
        self._armed = False  # first: an alarm now finds nothing to interrupt
        if self._installed == _get_ident():
            if not self.frequent or self._repeating:
                self._repeating = False
                _PENDING[0] = None
                signal.setitimer(signal.ITIMER_REAL, 0)
            return
        if self.seconds is None:
            return
        if self._signals():
            _PENDING[0] = None
            signal.setitimer(signal.ITIMER_REAL, 0)
            _set_handler(signal.SIGALRM, self._handler)
            return
        assert self._watchdog is not None
        self._watchdog.stop()

    def _expired(self, signum: int, frame: FrameType | None) -> None:
        if not (self.frequent and self._installed):
            if self._armed:
                raise self.hang(self.message())
            return
        if _PENDING[0] is self:
            _PENDING[0] = None
        if not self._armed:  # between runs: the next run sets it again
            return
        assert self.seconds is not None
        left = self._began + self.seconds - time.monotonic()
        _PENDING[0] = self
        if left > 0:  # an earlier run's alarm: this run has time left
            signal.setitimer(signal.ITIMER_REAL, left)
            return
        self._repeating = True
        signal.setitimer(signal.ITIMER_REAL, REPEAT, REPEAT)
        raise self.hang(self.message())


#: The ``frequent`` timer whose alarm is set now, if any (a main thread's alarm is the
#: process's one ``ITIMER_REAL``: any other timer's arming replaces it).
_PENDING: list[RunTimer | None] = [None]


def _hang_with(message: str, base: type[BaseException]) -> type[BaseException]:
    """``base`` saying ``message`` when raised without arguments, as an exception raised in
    another thread is: the verdict reads as the signal handler's, whichever thread ran (a
    worker thread on a cluster, the main thread when the failure is re-run)."""

    class Hang(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: object) -> None:
            super().__init__(*(args or (message,)))

    Hang.__name__ = Hang.__qualname__ = base.__name__
    return Hang


def _not_users() -> tuple[str, ...]:
    import sysconfig

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
    """One daemon thread that raises ``hang`` in a thread whose run overstays."""

    def __init__(self, hang: type[BaseException]) -> None:
        import ctypes

        self._set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
        self._ulong, self._object = ctypes.c_ulong, ctypes.py_object
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
                        self._set_async_exc(self._ulong(self._target), None)
                    self._cond.notify()
                return
            except self._hang:  # arrived while stopping: the run is over all the same
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
                self._set_async_exc(self._ulong(self._target), self._object(self._hang))
