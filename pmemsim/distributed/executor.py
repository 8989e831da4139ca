"""The Dask executor: a check's crash points explored by the workers of a Dask cluster.

The check travels once per worker (:mod:`.shipping`); the crash points go in batches of
consecutive points (the engine's :func:`~pmemsim.explore.executor.work_items`), each large
enough that scheduling it costs little next to running it (:data:`BATCH`, measured by
bench/bench_dask.py), and enough of them that every worker stays busy. Each worker explores
a batch with its own :class:`~pmemsim.explore.engine.Explorer` and sends back the state
reports; this process yields them in point order, so the engine merges them, and re-runs the
minimal failures itself, exactly as it does inline: the report is the same byte for byte.

Faults: a worker that dies or is lost mid-batch has its batch run again on another worker
by the scheduler (a batch is a pure function of the check and its crash points). A batch
that kills every worker it lands on (recovery that exits the process or crashes in C) is
reported as such once Dask gives up on it. A recovery that hangs is stopped by the check's
``run_timeout`` on the worker and reported as a hang, as it is inline.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import ErrorCode, InvalidArgumentError
from ..explore.executor import Executor, Inline, Item, work_items
from .cluster import Connection, Scheduler
from .logs import LOG_BATCH
from .shipping import fingerprint, forget, opened, ship

if TYPE_CHECKING:
    from ..explore.engine import Session, StateReport

__all__ = ["BATCH", "PER_WORKER", "Dask", "batches"]

#: Work per batch (images to run; a lazy crash point counts one) below which batches are
#: not cut smaller: a batch costs about 7 ms besides its images on a LocalCluster (sending
#: it, its reports back, merging), a quarter of a second of images at 40,000 images/s
#: would make that 3% (bench/bench_dask.py measures batch sizes).
BATCH = 4096
#: Batches per worker, at most: a slow batch does not leave the others idle, and a lost
#: worker's batches cost a quarter of its share to run again.
PER_WORKER = 4


def batches(
    weights: list[tuple[int, bool]], workers: int, batch: int = BATCH, per_worker: int = PER_WORKER
) -> list[Item]:
    """Work items of at least about ``batch`` work each, at most ``per_worker`` per worker."""
    total = sum(w for w, _ in weights)
    count = max(1, min(max(1, workers) * per_worker, total // max(1, batch)))
    return work_items(weights, count, per_worker=1)


class KilledBatch(InvalidArgumentError):
    """A batch that took down every worker it ran on."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.EINVAL, message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message,))


def _payload(blob: bytes) -> bytes:
    return blob


def _explore(
    blob: bytes, token: str, expected: str, item: Item, deadline: float | None
) -> list[StateReport]:
    """One batch, on a worker (``deadline``: wall-clock time past which no new work starts)."""
    run = opened(token, blob, expected)
    if deadline is not None:
        run.session.deadline = time.monotonic() + (deadline - time.time())
    return list(run.explorer.points(*item))


class Dask(Executor):
    """Explores on a Dask cluster: ``Dask("tcp://HOST:PORT")``, ``Dask("local:2")`` (a
    LocalCluster of 2 worker processes, closed with this executor) or ``Dask(client)`` (a
    ``distributed.Client`` of yours, left open).

    ``batch``: the least work per batch (see :data:`BATCH`), ``per_worker``: the most
    batches per worker (see :data:`PER_WORKER`). ``min_work``: checks with less
    work than this run in this process (shipping them costs more than it saves), as
    ``jobs`` does. ``by_value``: modules whose functions travel by value (not importable on
    the workers, e.g. a test module). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        scheduler: str | Scheduler | Any,
        *,
        batch: int = BATCH,
        per_worker: int = PER_WORKER,
        min_work: int = 0,
        by_value: Sequence[ModuleType] = (),
    ) -> None:
        if not isinstance(batch, int) or batch < 1:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"batch must be an int >= 1, not {batch!r}"
            )
        self.batch = batch
        self.per_worker = per_worker
        #: Images per batch of check-log (:data:`.logs.LOG_BATCH`).
        self.log_batch = LOG_BATCH
        #: check-log: a worker goes on with its replay of the log from the last batch it
        #: judged (False: every batch replays the log from its start, the old way, kept as
        #: bench/bench_dask.py's reference).
        self.log_resume = True
        self.min_work = min_work
        self.by_value = tuple(by_value)
        #: Batches sent in the last run; for check-log, the log operations the workers
        #: replayed and how many replays they started at the log's start (for tests and
        #: benchmarks).
        self.sent = 0
        self.log_replayed = 0
        self.log_replays = 0
        # Last: once it is open (a LocalCluster's processes, its scratch folder), nothing
        # here may raise, a signal's exception included, before the caller has it to close.
        self.connection = Connection(scheduler)

    @property
    def client(self) -> Any:
        return self.connection.client

    @property
    def workers(self) -> int:
        return self.connection.workers

    def describe(self) -> str:
        return self.connection.describe()

    def close(self) -> None:
        self.connection.close()

    def log_judge(self, replay: Any, checker: Any, crash_points: str, *common: Any) -> Any:
        """check-log's judge of images on this cluster (:mod:`.logs`)."""
        from .logs import DaskJudge

        img, names, per_file, verdicts = common
        return DaskJudge(
            self, replay, checker, crash_points, img, names, per_file, verdicts, self.log_batch
        )

    def __enter__(self) -> Dask:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def explore(self, session: Session) -> Iterator[StateReport]:
        points = len(session.trace.points)
        weights = [session.weight(i) for i in range(points)]
        if sum(w for w, _ in weights) < self.min_work:
            self.sent = 0
            yield from Inline().explore(session)
            return
        items = batches(weights, self.workers, self.batch, self.per_worker)
        self.sent = len(items)
        yield from self._run(session, items)

    def _run(self, session: Session, items: list[Item]) -> Iterator[StateReport]:
        from distributed import as_completed
        from distributed.client import FutureCancelledError

        client = self.client
        token = uuid.uuid4().hex
        blob = ship(session.check, self.by_value)
        expected = fingerprint(session.trace)
        deadline = None
        if session.deadline is not None:
            deadline = time.time() + (session.deadline - time.monotonic())
        # A task of its own, so that each worker fetches the check once and the scheduler
        # can compute it again should every copy be lost with its workers.
        payload = client.submit(_payload, blob, key=f"pmemsim-check-{token}", pure=False)
        futures = [
            client.submit(
                _explore,
                payload,
                token,
                expected,
                item,
                deadline,
                key=f"pmemsim-batch-{token}-{k}",
                pure=False,
            )
            for k, item in enumerate(items)
        ]
        index = {f.key: k for k, f in enumerate(futures)}
        ready: dict[int, list[StateReport]] = {}
        following = 0
        try:
            for fut in as_completed(futures, loop=client.loop):  # type: ignore[no-untyped-call]
                k = index[fut.key]
                try:
                    ready[k] = fut.result()
                except FutureCancelledError:
                    raise  # the client is closing
                except Exception as exc:
                    raise _explained(exc, session, items[k]) from None
                while following in ready:
                    yield from ready.pop(following)
                    following += 1
        finally:
            with contextlib.suppress(Exception):
                client.cancel([*futures, payload])
            with contextlib.suppress(Exception):
                client.run(forget, token, on_error="ignore")


def _explained(exc: Exception, session: Session, item: Item) -> Exception:
    """Dask giving up on a batch whose workers died, said in the check's terms."""
    from distributed import KilledWorker

    if not isinstance(exc, KilledWorker):
        return exc
    first, last, part, parts = item
    where = f"crash points {first} to {last - 1}" if last - first > 1 else f"crash point {first}"
    if parts > 1:
        where += f" (slice {part + 1} of {parts})"
    return KilledBatch(
        f"check {session.check.name!r}: the Dask workers exploring {where} died every time "
        f"({exc}); recovery may end its process (os._exit, a crash in C code): run the "
        "check without --scheduler to see it"
    )
