"""A log's replay that waits at a crash point between batches and then goes on from there.

A check-log worker judges batches of images of consecutive crash points. Replaying the log
from its start for each batch would cost the batches times the log's length; a
:class:`LogCursor` keeps one replay going instead. The lean replay
(:func:`pmemsim.pmlog.fastreplay.record_log`) hands crash points to a callback and cannot
be left mid-operation (a crash point comes before its barrier takes effect), so it runs in
a thread of its own, and the callback waits there, at the last crash point it was asked
for, until the next batch comes: a batch at or after that point costs only the operations
in between, one before it needs another cursor, from the start. A cursor serves one batch
at a time; the batch's own work (judging) runs in the cursor's thread, at its crash
points, where their images can be built.

While a cursor lives, its replay keeps the garbage collector's freeze of the objects older
than it (fastreplay's ``_old_objects_frozen``): cycles among those are collected once the
cursor is closed (at the end of the check), not before.
"""

from __future__ import annotations

import copy
import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..explore.trace import CrashPoint
    from ..pmlog.images import PoolImage
    from ..pmlog.replay import Replay

__all__ = ["Job", "LogCursor", "ReplayEnded"]


class ReplayEnded(Exception):
    """The log ended before the job's last crash point (the worker's log is not the
    client's)."""


class Job(Protocol):
    """What a cursor serves: every crash point from ``first`` to ``last``, in order."""

    first: int
    last: int

    def visit(self, point: CrashPoint, img: PoolImage) -> None:
        """A crash point of the job (``img`` shows its all-persisted image's buffers once
        moved to its state, and only while this runs)."""

    def close(self, done: bool) -> Any:
        """After the last point (``done``) or on the way out of an error; its result is
        :meth:`LogCursor.run`'s."""


class LogCursor:
    """One replay of a log on the lean machine, kept at a crash point between jobs.

    ``at``: the crash point it waits at (-1 before its first job), ``operations``: the log
    operations it has replayed, ``ended``: it can serve no more jobs (the log ended, a job
    failed, or it was closed)."""

    def __init__(self, replay: Replay, crash_points: str) -> None:
        # A copy: the replay notes its counts on the Replay, which other cursors share.
        self.replay = copy.copy(replay)
        self.crash_points = crash_points
        self.at = -1
        self.operations = 0
        self.ended = False
        self._cv = threading.Condition()
        self._job: Job | None = None
        self._outcome: tuple[bool, Any] | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    def serves(self, first: int) -> bool:
        """Whether a job from crash point ``first`` on can continue this replay."""
        return not self.ended and self.at <= first

    def run(self, job: Job) -> Any:
        """Hand ``job`` its crash points (in the replay's thread) and wait for them; its
        ``close(True)``'s result, or the error that ended the replay (the cursor is then
        ended)."""
        with self._cv:
            if not self.serves(job.first) or self._job is not None:
                raise ValueError(f"a cursor at crash point {self.at} cannot serve {job.first}")
            self._job, self._outcome = job, None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name="pmemsim-log-replay", daemon=True
                )
                self._thread.start()
            else:
                self._cv.notify_all()
            while self._outcome is None:
                self._cv.wait()
            ok, value = self._outcome
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """End the replay once it waits for a job (a job under way finishes first)."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()

    # -- in the replay's thread ------------------------------------------------------------

    def _deliver(self, ok: bool, value: Any) -> None:
        with self._cv:
            if not ok:  # (before the job's thread can pick this cursor again)
                self.ended = True
            self._job, self._outcome = None, (ok, value)
            self._cv.notify_all()

    def _main(self) -> None:
        from ..pmlog.check import _image
        from ..pmlog.fastreplay import record_log

        img = _image(self.replay)
        error: BaseException | None = None
        try:
            record_log(
                self.replay,
                img,
                self.crash_points,
                lambda point: self._point(point, img),
                check=False,
            )
        except BaseException as exc:  # handed to the job that waits, if any
            error = exc
        finally:
            with self._cv:
                self.ended = True
                job = self._job
            if job is not None:
                try:
                    job.close(False)
                except BaseException as exc:
                    error = error or exc
                self._deliver(
                    False,
                    error
                    or ReplayEnded(
                        f"the log replayed on this worker has {self.at + 1} crash point(s), "
                        f"the client's at least {job.last + 1}"
                    ),
                )
            img.close()

    def _point(self, point: CrashPoint, img: PoolImage) -> None:
        from ..explore.trace import StopRecording

        self.at, self.operations = point.index, point.operation
        while True:
            with self._cv:
                while self._job is None and not self._closing:
                    self._cv.wait()
                if self._job is None:
                    raise StopRecording
                job = self._job
            if point.index >= job.first:
                job.visit(point, img)
            if point.index < job.last:
                return
            try:
                value = job.close(True)
            except BaseException as exc:
                self._deliver(False, exc)
                raise
            # Done here; the next job may want this point too: wait at it.
            self._deliver(True, value)
