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

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .workers import Timeout, Workers, check_jobs

if TYPE_CHECKING:
    from .engine import Session, StateReport

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

    @property
    def workers(self) -> int:
        """Processes exploring, for progress lines."""
        return 1


class Inline(Executor):
    """Everything in this process, one point after the other (memory: one point's work)."""

    def explore(self, session: Session) -> Iterator[StateReport]:
        from .engine import Explorer

        yield from Explorer(session).points(0, len(session.trace.points))


class LocalProcesses(Executor):
    """``jobs`` forked worker processes, started once per check (POSIX only)."""

    def __init__(self, jobs: int, *, grace: float = 5.0) -> None:
        self.jobs = check_jobs(jobs)
        #: Seconds past the check's deadline (and one run's time) before a worker that has
        #: not answered counts as stuck.
        self.grace = grace

    @property
    def workers(self) -> int:
        return self.jobs

    def explore(self, session: Session) -> Iterator[StateReport]:
        from .engine import Explorer

        weights = [session.weight(i) for i in range(len(session.trace.points))]
        items = work_items(weights, self.jobs)

        def start() -> Callable[[Item], list[StateReport]]:
            explorer = Explorer(session)  # in the worker: one for all its items
            return lambda item: list(explorer.points(*item))

        answers = Workers(self.jobs, start).map(items, lambda: self._wait(session))
        done = 0
        try:
            for reports in answers:
                done += 1
                yield from reports
        except Timeout:
            # Past the check's deadline, a worker that still has not answered is stuck
            # where no signal reaches it (inside a C call): it was stopped; what it and the
            # items after it had is left out, as the budget says.
            yield from _dropped(session, items[done:])

    def _wait(self, session: Session) -> float | None:
        """How long to wait for the next work item: past the check's deadline (workers stop
        taking work there) by a run's time and the grace; no limit without a deadline."""
        if session.deadline is None:
            return None
        run = session.timer.seconds or 0.0
        return max(0.0, session.deadline - time.monotonic()) + run + self.grace


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
