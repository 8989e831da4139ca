"""Telling of a long wait on one image's checker run.

A checker run with no time limit (``--timeout none``, a Python checker in a worker) that
never returns would leave the check silent, and a slow run under a long limit silent until
the limit. So while check-log waits on one image's verdict, it tells of the wait after
:data:`FIRST` seconds, then whenever the wait has doubled again (10, 20, 40, 80 s, ...),
at least every :data:`LONGEST` seconds: which image, and for how long so far. Under the
default limit (10 s) a run ends before any notice is due; the timed-out verdict is told
then instead.

A judge that waits (:class:`Patience`) knows, or learns by looking, which image is being
judged and since when: a checker program's since it started, a worker's since the worker
said it began it (a word of memory it shares; looked at every quarter of :data:`FIRST`,
so a wait is told of at most that much late). A checker judging in this process's main
thread is watched by a thread (:class:`Watch`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["FIRST", "LONGEST", "Patience", "Watch", "watch_in_process"]

#: Seconds of waiting on one image before the first notice (tests lower it).
FIRST = 10.0
#: The longest time between two notices of one wait.
LONGEST = 600.0

#: What identifies the image being judged (the same for one image's run).
K = TypeVar("K")


def _due(told: int, first: float) -> float:
    """The wait, in seconds, at which the notice after ``told`` notices is due."""
    at = first
    for _ in range(told):
        at += min(at, LONGEST)
    return at


class Patience(Generic[K]):
    """The notices of a wait: ``where(now)`` says what is being judged and since when
    (``time.monotonic()``), None when nothing is; ``tell(key, seconds)`` is told of a long
    wait."""

    def __init__(
        self, where: Callable[[float], tuple[K, float] | None], tell: Callable[[K, float], None]
    ) -> None:
        self.where = where
        self.tell = tell
        self.key: K | None = None
        self.told = 0

    def next(self, now: float) -> float:
        """Tell of the wait if a notice is due at ``now``; when to look again."""
        first = FIRST
        got = self.where(now)
        if got is None:
            return now + first / 4
        key, began = got
        if key != self.key:
            self.key, self.told = key, 0
        waited = now - began
        if waited >= _due(self.told, first):
            self.tell(key, waited)
            while waited >= _due(self.told, first):  # (late: one notice for all due)
                self.told += 1
        return min(began + _due(self.told, first), now + first / 4)


class Watch:
    """A thread that tells of a long wait on a checker judging in this process's main
    thread (a Python function or a recovery, ``--jobs 1``), which nothing else waits on.

    Every quarter of :data:`FIRST` it looks at the main thread's stack: ``where()`` says
    which run is under way (a count of runs, bumped after each, and what to call it), or
    None when the main thread is not in a checker run. The same run seen again is a wait
    since it was first seen; so the judges pay nothing per image for it. Started once the
    replay has forked what it forks (a thread is not copied into a fork), closed at the
    end of the check."""

    def __init__(
        self, where: Callable[[], tuple[int, str] | None], tell: Callable[[str, float], None]
    ) -> None:
        import threading

        self.where = where
        self.what = ""
        self.seen: tuple[int, float] | None = None
        self.patience = Patience(self._where, lambda _, waited: tell(self.what, waited))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pmemsim-watch", daemon=True)

    def _where(self, now: float) -> tuple[int, float] | None:
        got = self.where()
        if got is None:
            self.seen = None
            return None
        run, self.what = got
        if self.seen is None or self.seen[0] != run:
            self.seen = (run, now)
        return self.seen

    def _run(self) -> None:
        import time

        look = time.monotonic()
        while not self.stop.wait(max(look - time.monotonic(), 0)):
            look = self.patience.next(time.monotonic())

    def start(self) -> None:
        if not self.thread.is_alive() and not self.stop.is_set():
            self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


def runs_in(
    codes: dict[object, Callable[[], tuple[int, str]]],
) -> Callable[[], tuple[int, str] | None]:
    """A :class:`Watch`'s ``where``: the run under way when one of ``codes`` (a function's
    code object, mapped to what says which run it is) is on the main thread's stack."""
    import sys
    import threading

    main = threading.main_thread().ident

    def where() -> tuple[int, str] | None:
        frame = sys._current_frames().get(main or 0)
        while frame is not None:
            which = codes.get(frame.f_code)
            if which is not None:
                return which()
            frame = frame.f_back
        return None

    return where


def watch_in_process(judge: object, lazy: object, tell: Callable[[str, float], None]) -> Watch:
    """The :class:`Watch` of check_log's judges in this process: the in-process judge's
    runs (:class:`pmemsim.pmlog.judging.Inline`) and the read-path explorer's
    (:class:`pmemsim.pmlog.readpaths.LazyJudge`), told by crash point."""
    from .judging import Inline

    codes: dict[object, Callable[[], tuple[int, str]]] = {}
    if isinstance(judge, Inline):

        def inline() -> tuple[int, str]:
            point = judge.point
            return judge.verdicts.runs, f"point {point.index if point else '?'}"

        codes.update(dict.fromkeys((Inline.images.__code__, Inline.add.__code__), inline))
    if lazy is not None:  # (readpaths is imported only for lazy exploration: start-up)
        from .readpaths import LazyJudge

        assert isinstance(lazy, LazyJudge)

        def paths() -> tuple[int, str]:
            point = lazy.point
            return -1 - lazy.begun, f"point {point.index if point else '?'}"

        codes.update(dict.fromkeys((LazyJudge._call.__code__, LazyJudge._recover.__code__), paths))
    return Watch(runs_in(codes), tell)
