"""A library checker called in the checking process itself, speculatively, in a fork.

A ``--checker-lib`` checker normally runs in worker processes: a checker that crashes or
hangs then costs a restart, not the check. That safety costs a message per batch of images
and a third process on the CPUs (beside the check and the self-check's twin), which on long
logs of narrow epochs is most of the check's time. Yet most checks of a long log are of a
program whose images are all consistent, and a checker that finds every image consistent
neither crashed nor hung.

So on a long log, check-log first forks a child that runs the whole check with the checker
called in the child itself, on an image whose buffers are the image file the checker is
given (:class:`Speculative`, the in-process judge's fast path). The child's result is taken
only when every image was consistent and nothing went wrong. Any inconsistent image, a
crash or a hang of the checker (its time limit ends the child), or a checker writing to its
image file (the buffers would no longer be the crash state) ends the speculation, and the
check runs again the careful way, with workers, which then finds and describes what went
wrong. The result taken is the one the careful way would give: the same images, judged in
the same order, all consistent (tests/test_pmlog_speculate.py compares them).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .checkers import FunctionChecker, LibChecker
from .forked import fork
from .judging import Inline

if TYPE_CHECKING:
    from .check import LogCheckResult

__all__ = ["Speculative", "attempt"]


class _Wrote(BaseException):
    """The checker wrote to its image file: the speculation ends (not a verdict, so not an
    Exception, which the in-process judge would take for the checker's own)."""


class Speculative(Inline):
    """The in-process judge of a library checker: the image buffer is the file it reads."""

    def __init__(self, checker: LibChecker, path: str, *args: Any) -> None:
        from .slots import _Inotify
        from .workers import _c_judge, _limited

        judge = _limited(lambda: _c_judge(checker), getattr(checker, "timeout", None))()

        # What a worker's judge is handed: its files' paths, and a run over the first.
        one, runs = types.SimpleNamespace(bpaths=[os.fsencode(path)]), [0]
        try:
            self.notify = _Inotify()
            self.notify.watch(path)
        except (OSError, AttributeError):  # no telling whether the checker writes: no try
            raise _Wrote from None
        events = self.notify.events

        def call(view: object) -> bool:
            verdict = judge(one, runs)
            if events():
                raise _Wrote
            return verdict is None

        super().__init__(FunctionChecker(call, checker.label), *args)

    def close(self) -> None:
        super().close()
        self.notify.close()


def attempt(run: Callable[[], LogCheckResult]) -> LogCheckResult | None:
    """``run()`` (a check with the :class:`Speculative` judge) in a forked child: its result
    when every image was consistent, else None (run the check the careful way)."""
    rfd, wfd = os.pipe()

    def child() -> None:
        os.close(rfd)
        # The checker's time limit ends this child with SIGALRM's default action.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        try:
            result: LogCheckResult | None = run()
        except (_Wrote, Exception):  # the careful way runs it again, and says what it is
            result = None
        if result is not None and (result.inconsistent or result.minimal is not None):
            result = None
        view = memoryview(pickle.dumps(result))
        with contextlib.suppress(BrokenPipeError):  # this process is gone: nobody to tell
            while view:
                view = view[os.write(wfd, view) :]

    pid = fork(child)
    os.close(wfd)
    data = bytearray()
    try:
        while chunk := os.read(rfd, 1 << 16):
            data += chunk
    finally:
        os.close(rfd)
        # Done (it only has to exit), dead, or this process interrupted: gone in any case.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    try:
        got: LogCheckResult | None = pickle.loads(bytes(data))
    except Exception:  # nothing, or cut short by the child's death: the careful way
        return None
    return got
