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

The speculation stops at the first image that is not consistent (or at the crash or hang of
the checker), and notes in a word of memory it shares with this process the crash point it
was judging. Every image of an earlier point was then judged consistent, as the careful way
would judge it; the careful way judges only the images from that point on and counts the
earlier ones as the speculation judged them, so an inconsistent long log costs about one
check, not two.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import signal
import struct
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._records import NamedTuple
from .checkers import FunctionChecker, LibChecker
from .forked import end_group, fork, read_until_exit
from .judging import Inline

if TYPE_CHECKING:
    from ..explore.trace import CrashPoint
    from .check import LogCheckResult
    from .judging import Cand, Image

__all__ = ["Speculation", "Speculative", "attempt"]

_WORD = struct.Struct("<q")


class Speculation(NamedTuple):
    """A speculative check's own: the image file the checker reads (the image's buffer), and
    the shared word where it notes the crash point it is judging."""

    file: str
    reached: mmap.mmap


class _Stop(BaseException):
    """The speculation ends: an image is not consistent, or the checker wrote to its image
    file (not a verdict, so not an Exception, which the in-process judge would take for the
    checker's own)."""


class Speculative(Inline):
    """The in-process judge of a library checker: the image buffer is the file it reads."""

    def __init__(self, checker: LibChecker, where: Speculation, *args: Any) -> None:
        from .imagefile import Inotify
        from .serve import Limited, c_judge, limited

        judge = limited(
            c_judge(checker.library, checker.function, checker.consistent), checker.timeout
        )

        # What a worker's judge is handed: its files' paths, and a run over the first.
        one, runs = types.SimpleNamespace(bpaths=[os.fsencode(where.file)]), [0]
        self.reached = where.reached
        try:
            self.notify = Inotify()
            self.notify.watch(where.file)
        except (OSError, AttributeError):  # no telling whether the checker writes: no try
            raise _Stop from None
        events = self.notify.events

        def call(view: object) -> bool:
            verdict = judge(one, runs)
            if verdict is not None or events():
                raise _Stop
            return True

        # (Timed by Limited above: SIGALRM's default action, not a handler of Inline's.)
        super().__init__(FunctionChecker(call, checker.label, timeout=None), *args)
        self.limit = judge if isinstance(judge, Limited) else None

    def images(
        self, point: CrashPoint, markers: str, ordinal: int, seq: int, batch: list[Image]
    ) -> None:
        try:
            super().images(point, markers, ordinal, seq, batch)
        finally:
            if self.limit is not None:
                self.limit.idle()  # (the replay's work till the next point is not timed)

    def _enter(self, cand: Cand) -> None:
        _WORD.pack_into(self.reached, 0, cand.point.index)
        super()._enter(cand)

    def close(self) -> None:
        super().close()
        self.notify.close()


def attempt(
    file: str, run: Callable[[Speculation], LogCheckResult]
) -> tuple[LogCheckResult | None, int]:
    """``run(Speculation(file, ...))`` (a check with the :class:`Speculative` judge) in a
    forked child: its result when every image was consistent, else None (run the check the
    careful way), and the crash point it stopped at (every earlier one's images were judged
    consistent)."""
    reached = mmap.mmap(-1, _WORD.size)
    try:
        return _attempt(Speculation(file, reached), run), _WORD.unpack_from(reached)[0]
    finally:
        reached.close()


def _attempt(
    where: Speculation, run: Callable[[Speculation], LogCheckResult]
) -> LogCheckResult | None:
    rfd, wfd = os.pipe()

    def child() -> None:
        os.close(rfd)
        # The checker's time limit ends this child with SIGALRM's default action.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        try:
            result: LogCheckResult | None = run(where)
        except (_Stop, Exception):  # the careful way runs it again, and says what it is
            result = None
        if result is not None and (result.inconsistent or result.minimal is not None):
            result = None
        view = memoryview(pickle.dumps(result))
        with contextlib.suppress(BrokenPipeError):  # this process is gone: nobody to tell
            while view:
                view = view[os.write(wfd, view) :]

    pid = fork(child, group=True)
    os.close(wfd)
    try:
        data = read_until_exit(pid, rfd)
    finally:
        os.close(rfd)
        # Done (it only has to exit), dead, or this process interrupted: gone in any case,
        # with what its checker started.
        end_group(pid)
        os.waitpid(pid, 0)
    try:
        got: LogCheckResult | None = pickle.loads(bytes(data))
    except Exception:  # nothing, or cut short by the child's death: the careful way
        return None
    return got
