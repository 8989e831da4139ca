"""Who explores the crash points of a check: this process, or local worker processes.

An executor turns a :class:`~pmemsim.explore.engine.Session` (the recorded check) into the
:class:`~pmemsim.explore.engine.StateReport` of every crash state, **in point order**. The
engine merges them; because every report depends only on its crash point (random choices
are seeded per point, lazy read paths are counted per point, duplicates across work items
are resolved by the merge), the result is the same byte for byte whatever the executor.

Work items are runs of consecutive crash points (consecutive points share lazy runs and
deduplicate their images, so they stay together). :class:`LocalProcesses` forks its
workers once per check, after the workload was recorded, so each worker has the trace and
the recovery function without shipping them; a worker keeps its lazy decision trees for
all the work it gets. A distributed executor (Dask) gets the same items: it ships the check
once per worker, records the workload there (recording is deterministic), and sends back
the same reports; failures are re-run by the engine in the client either way.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ErrorCode, InvalidArgumentError

if TYPE_CHECKING:
    from .engine import Explorer, Session, StateReport

__all__ = ["Executor", "Inline", "LocalProcesses", "work_items"]


#: A work item: crash points ``[first, last)``, and slice ``part`` of ``parts`` (one point
#: whose images are cut into slices; else 0 of 1).
Item = tuple[int, int, int, int]


def work_items(weights: list[tuple[int, bool]], workers: int, per_worker: int = 8) -> list[Item]:
    """Runs of consecutive crash points of about equal work (``weights``: per point, its
    images and whether they can be sliced), about ``per_worker`` items per worker so that a
    slow stretch does not leave the others idle; a point heavier than an item is cut into
    slices of its images."""
    if not weights:
        return []
    total = sum(w for w, _ in weights)
    target = max(1, -(-total // (workers * per_worker)))
    items: list[Item] = []
    first, load = 0, 0
    for i, (w, sliceable) in enumerate(weights):
        if sliceable and w > 2 * target:
            if first < i:
                items.append((first, i, 0, 1))
            parts = min(-(-w // target), 4 * workers * per_worker)
            items += [(i, i + 1, k, parts) for k in range(parts)]
            first, load = i + 1, 0
            continue
        load += w
        if load >= target:
            items.append((first, i + 1, 0, 1))
            first, load = i + 1, 0
    if first < len(weights):
        items.append((first, len(weights), 0, 1))
    return items


class Executor(ABC):
    """Explores a session's crash points; yields every state report in point order."""

    @abstractmethod
    def explore(self, session: Session) -> Iterator[StateReport]: ...


class Inline(Executor):
    """Everything in this process, one point after the other (memory: one point's work)."""

    def explore(self, session: Session) -> Iterator[StateReport]:
        from .engine import Explorer

        yield from Explorer(session).points(0, len(session.trace.points))


_SESSION: Session | None = None
_EXPLORER: Explorer | None = None


_STOPPING = (signal.SIGINT, signal.SIGTERM)


def _pool(ctx: Any, jobs: int) -> Any:
    """A pool of ``jobs`` forked workers. Ctrl-C and SIGTERM wait while it is built: one
    arriving halfway would leave workers running that nobody terminates (Pool's own cleanup
    catches Exception only). The workers start with them blocked too, until they have
    their own handlers."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
    try:
        return ctx.Pool(jobs, initializer=_start_worker)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # quiet in multiprocessing's bootstrap; finally blocks run


def _start_worker() -> None:
    from .engine import Explorer

    # Ctrl-C is the parent's to handle (it terminates the pool), and the pool's SIGTERM
    # exits through every ``finally`` (a recovery's temporary folder) instead of killing
    # the worker where it stands.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_quietly)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)
    global _EXPLORER
    assert _SESSION is not None
    _EXPLORER = Explorer(_SESSION)


def _explore(item: Item) -> list[StateReport]:
    assert _EXPLORER is not None
    return list(_EXPLORER.points(*item))


class LocalProcesses(Executor):
    """``jobs`` forked worker processes, started once per check (POSIX only)."""

    def __init__(self, jobs: int, *, grace: float = 5.0) -> None:
        if not isinstance(jobs, int) or jobs < 1:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"jobs must be an int >= 1, not {jobs!r}")
        self.jobs = jobs
        #: Seconds past the check's deadline (and one run's time) before a worker that has
        #: not answered counts as stuck.
        self.grace = grace

    def explore(self, session: Session) -> Iterator[StateReport]:
        global _SESSION
        weights = [session.weight(i) for i in range(len(session.trace.points))]
        items = work_items(weights, self.jobs)
        ctx = multiprocessing.get_context("fork")
        _SESSION = session  # what forked workers start from (a respawned one too)
        try:
            pool = _pool(ctx, self.jobs)
            try:
                results = pool.imap(_explore, items)
                for n in range(len(items)):
                    try:
                        reports = results.next(self._wait(session))
                    except multiprocessing.TimeoutError:
                        # Past the check's deadline, a worker that still has not answered
                        # is stuck where no signal reaches it (inside a C call): stop the
                        # workers and leave the rest out, as the budget says.
                        yield from _dropped(session, items[n:])
                        return
                    yield from reports
            finally:
                _stop(pool)
        finally:
            _SESSION = None

    def _wait(self, session: Session) -> float | None:
        """How long to wait for the next work item: past the check's deadline (workers stop
        taking work there) by a run's time and the grace; no limit without a deadline."""
        if session.deadline is None:
            return None
        run = session.timer.seconds or 0.0
        return max(0.0, session.deadline - time.monotonic()) + run + self.grace


def _stop(pool: Any) -> None:
    """Stop the workers: SIGTERM first (their ``finally`` blocks clean up), then SIGKILL for
    any still running a moment later (stuck in a C call, a Python handler never runs), and
    only then the pool's own shutdown, which would wait for them for ever."""
    workers = list(pool._pool)  # multiprocessing keeps its processes there
    for w in workers:
        w.terminate()
    until = time.monotonic() + 2.0
    for w in workers:
        w.join(max(0.0, until - time.monotonic()))
    for w in workers:
        if w.is_alive():
            w.kill()
    pool.terminate()
    pool.join()


def _dropped(session: Session, items: list[Item]) -> Iterator[StateReport]:
    from .engine import Explorer

    explorer = Explorer(session)
    note = (
        "a worker process was still busy past the check's time budget (stuck where no "
        "signal reaches it, in a C call?) and was stopped"
    )
    for first, last, part, _ in items:
        if part == 0:
            for rep in explorer.dropped(first, last):
                rep.note, note = note, ""
                yield rep
