"""check-log's images judged on a Dask cluster.

This process replays the log and chooses the images, as it does with any judge (so the
images, their order and their count are the same as inline); :class:`DaskJudge` collects
them in batches of images of consecutive crash points, ``(seq, point, deviations, ...)``
each, never their bytes. The log and the checker travel once per worker (the log as the
parsed :class:`~pmemsim.pmlog.replay.Replay` and its text; a ``--checker-py
FILE.py:FUNCTION`` by value, a function of an importable module by reference). A worker
rebuilds each image from its crash state and deviations, and judges it with the judge this
process would use with ``--jobs 1`` (a Python function in the worker, a library in a forked
checker process, a program per image); it answers with the failures only. The minimal
failure is chosen here, by the same rule as inline (fewest lines deviating, then first in
order), so the report is the same.

A worker keeps its replay of the log between batches (:mod:`.cursor`), waiting at the last
crash point it judged: the next batch at or after that point costs only the operations in
between, so a worker replays the log about once whatever the number of batches. A batch
before that point (rare: the scheduler runs a worker's batches in the order they were sent)
starts another replay from the log's start; the replay furthest ahead is kept.

A checker stuck on a worker is told as inline (:mod:`pmemsim.pmlog.waiting`): the worker's
judges note a long wait on an image (and an image that timed out or crashed its checker) as
it happens, and this process, while it waits for a batch, asks the workers for those notes
every quarter of :data:`~pmemsim.pmlog.waiting.FIRST` and tells them, by the image's crash
token, to ``waiting`` (and ``notice``) as its own judges would. Time limits apply on the
worker as here: a checker program's, a library's and a Python function's per run (the last in
the replay's thread, by the run timer's watchdog), a recovery's ``run_timeout``.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
import time
import uuid
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from ..pmlog.judging import Cand, Judge, PerFile, Verdicts

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..explore.trace import CrashPoint
    from ..pmlog.images import PoolImage
    from ..pmlog.replay import Replay
    from .cursor import LogCursor
    from .executor import Dask

__all__ = ["LOG_BATCH", "DaskJudge"]

#: Images per batch.
LOG_BATCH = 2048
#: Batches in flight per worker: more wait here, so that memory holds a bounded number.
IN_FLIGHT = 4

#: A batch's image: (seq, crash point, deviations, size key, markers, marker ordinal).
Item = tuple[int, int, Any, tuple[int, int, int], str, int]


class DaskJudge(Judge):
    """Sends images to the workers in batches; their verdicts come back to ``verdicts``."""

    def __init__(
        self,
        executor: Dask,
        replay: Replay,
        checker: Any,
        crash_points: str,
        img: PoolImage,
        names: list[str],
        per_file: PerFile | None,
        verdicts: Verdicts,
        batch: int = LOG_BATCH,
    ) -> None:
        super().__init__(img, names, per_file, verdicts)
        self.client = executor.client
        self.executor = executor
        self.batch = batch
        self.token = uuid.uuid4().hex
        blob = _ship(replay, checker, crash_points)
        self.payload = self.client.submit(
            _payload, blob, key=f"pmemsim-log-{self.token}", pure=False
        )
        self.items: list[Item] = []
        self.cands: list[Cand] = []
        #: Batches sent and not answered: their future, and their images by seq.
        self.waiting: OrderedDict[Any, dict[int, Cand]] = OrderedDict()
        self.sent = 0
        self.resume = executor.log_resume
        #: Log operations the workers replayed, and replays they started at the log's start.
        self.replayed = 0
        self.replays = 0
        #: Images whose fault (timed out, crashed) the workers' notes told already.
        self.told: set[int] = set()

    def add(self, cand: Cand) -> None:
        self.items.append(
            (cand.seq, cand.point.index, cand.dev, cand.size, cand.markers, cand.marker_ordinal)
        )
        self.cands.append(cand)
        if len(self.items) >= self.batch:
            self._send()

    def _send(self) -> None:
        if not self.items:
            return
        limit = max(1, self.executor.workers) * IN_FLIGHT
        while len(self.waiting) >= limit:
            self._collect(next(iter(self.waiting)))
        fut = self.client.submit(
            _judge_batch,
            self.payload,
            self.token,
            # Pickled here: Dask would walk every tuple of every image looking for futures
            # (15-45 ms to submit a batch of 2,048 images here, 1 ms pickled).
            pickle.dumps(self.items, pickle.HIGHEST_PROTOCOL),
            self.resume,
            key=f"pmemsim-log-batch-{self.token}-{self.sent}",
            pure=False,
        )
        # Only a failing image's Cand is read again (its crash point, for the report).
        self.waiting[fut] = {c.seq: c for c in self.cands}
        self.items, self.cands = [], []
        self.sent += 1

    def _collect(self, fut: Any) -> None:
        judged, runs, failures, replayed, fresh = self._result(fut)
        cands = self.waiting.pop(fut)
        self.replayed += replayed
        self.replays += fresh
        v = self.verdicts
        v.judged += judged
        v.runs += runs
        notice = v.notice
        try:
            for seq, verdict in failures:
                v.inconsistent += 1
                # (A fault told as it happened is counted now, not told again.)
                v.notice = None if seq in self.told else notice
                v.candidate(cands[seq], verdict)
        finally:
            v.notice = notice
        if v.progress is not None:
            v.progress(v.judged, v.judged)

    def _result(self, fut: Any) -> Any:
        """``fut``'s result; meanwhile, what the workers noted of long waits and faults is
        told here every quarter of waiting.FIRST."""
        v = self.verdicts
        if v.waiting is None and v.notice is None:
            return fut.result()
        from ..pmlog import waiting

        while True:
            try:
                return fut.result(timeout=waiting.FIRST / 4)
            except TimeoutError:
                self._tell(self.client.run(_noted, self.token, on_error="ignore"))

    def _tell(self, noted: dict[str, Any]) -> None:
        """Tell what the workers noted (:func:`_noted`) of the images still in flight."""
        v = self.verdicts
        for notes in noted.values():
            for what, seq, value in notes if isinstance(notes, list) else ():
                cand = next((c[seq] for c in self.waiting.values() if seq in c), None)
                if cand is None:  # its batch is in already (or ran again elsewhere)
                    continue
                if what == "wait" and v.waiting is not None:
                    v.waiting(cand, value)
                elif what == "fault" and v.notice is not None and seq not in self.told:
                    self.told.add(seq)
                    v.notice(cand, value)

    def finish(self, unneeded: Callable[[], object] = lambda: None) -> None:
        self._send()
        while self.waiting:
            self._collect(next(iter(self.waiting)))
        ex = self.executor
        ex.sent, ex.log_replayed, ex.log_replays = self.sent, self.replayed, self.replays
        unneeded()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.cancel([*self.waiting, self.payload])
        self.waiting.clear()
        with contextlib.suppress(Exception):
            self.client.run(_forget, self.token, on_error="ignore")


def _ship(replay: Replay, checker: Any, crash_points: str) -> bytes:
    import sys

    import cloudpickle

    import pmemsim

    from ..errors import ErrorCode, InvalidArgumentError

    # A checker loaded from FILE.py (pmemsim_checker_*) or a recovery's check file
    # (pmemsim_check_*) has a private module name no worker can import: they travel by value.
    modules = [m for name, m in list(sys.modules.items()) if name.startswith("pmemsim_check") and m]
    try:
        for m in modules:
            cloudpickle.register_pickle_by_value(m)
        blob: bytes = cloudpickle.dumps(
            (
                pmemsim.__version__,
                replay,
                _text(replay),
                checker,
                crash_points,
                _base_images(replay),
            )
        )
        return blob
    except Exception as exc:
        raise InvalidArgumentError(
            ErrorCode.EINVAL,
            f"the checker {checker.label} cannot be sent to Dask workers "
            f"({type(exc).__name__}: {exc})",
        ) from None
    finally:
        for m in modules:
            cloudpickle.unregister_pickle_by_value(m)


def _payload(blob: bytes) -> bytes:
    return blob


def _text(replay: Replay) -> str | None:
    """The log's text (a log read from a file reads it again at every pass: on a worker the
    file may be elsewhere, or nowhere)."""
    if replay.log._ops is not None:
        return None
    return "".join(replay.log.pieces())


def _with_text(replay: Replay, text: str | None) -> Replay:
    import dataclasses

    from ..pmlog.grammar import _text_pieces

    if text is None:
        return replay
    return dataclasses.replace(
        replay, log=dataclasses.replace(replay.log, pieces=_text_pieces(text))
    )


#: Base images up to this size are compared by digest on the workers (larger ones by size).
DIGEST_UP_TO = 256 << 20


def _base_images(replay: Replay) -> list[tuple[str, int, str]]:
    """Each base image a worker reads by path: (path, size, digest or "")."""
    import hashlib

    out = []
    for p in replay.pools:
        if p.source is None:
            continue
        digest = ""
        if p.source_size <= DIGEST_UP_TO:
            with open(p.source, "rb") as f:
                digest = hashlib.file_digest(f, "blake2b").hexdigest()
        out.append((p.source, p.source_size, digest))
    return out


def _same_base_images(images: list[tuple[str, int, str]]) -> None:
    import hashlib
    import os

    from .shipping import WorkerProblem

    for path, size, digest in images:
        share = "(base images are read by path: share them, at the same path, with every worker)"
        if not os.path.isfile(path):
            raise WorkerProblem(f"the base image {path} is not on this worker {share}")
        if os.path.getsize(path) != size:
            raise WorkerProblem(f"the base image {path} differs on this worker {share}")
        if digest:
            with open(path, "rb") as f:
                if hashlib.file_digest(f, "blake2b").hexdigest() != digest:
                    raise WorkerProblem(f"the base image {path} differs on this worker {share}")


# -- on a worker -----------------------------------------------------------------------------


class _Log:
    """A log this worker judges: what the client sent, and the replay of it that waits
    between batches (:class:`~.cursor.LogCursor`)."""

    def __init__(self, replay: Replay, checker: Any, crash_points: str) -> None:
        self.replay = replay
        self.checker = checker
        self.crash_points = crash_points
        #: The replay waiting for the next batch (one: the furthest ahead), None if none.
        self.idle: LogCursor | None = None
        self.closed = False
        #: Batches of this log running on this worker now.
        self.running = 0
        self.batches: set[_Batch] = set()
        #: What the client has not asked for yet of long waits and faults (:func:`_noted`).
        self.notes: deque[tuple[str, int, Any]] = deque(maxlen=NOTES)

    def note(self, what: str, seq: int, value: Any) -> None:
        with _LOCK:
            self.notes.append((what, seq, value))

    def take(self, first: int, resume: bool) -> tuple[LogCursor, bool]:
        """A replay for a batch from crash point ``first``: the waiting one if it is not
        past ``first``, else a new one (True) from the log's start."""
        from .cursor import LogCursor

        with _LOCK:
            cursor = self.idle
            if resume and cursor is not None and cursor.serves(first):
                self.idle = None
                return cursor, False
        return LogCursor(self.replay, self.crash_points), True

    def give_back(self, cursor: LogCursor, resume: bool) -> None:
        """Keep the replay furthest ahead for the next batch; end the other."""
        with _LOCK:
            drop: LogCursor | None = cursor
            if resume and not self.closed and not cursor.ended:
                kept = self.idle
                if kept is None or kept.ended or cursor.at >= kept.at:
                    self.idle, drop = cursor, kept
        if drop is not None:
            drop.close()

    def close(self) -> None:
        with _LOCK:
            self.closed = True
            cursor, self.idle = self.idle, None
        if cursor is not None:
            cursor.close()


_LOADED: OrderedDict[str, _Log] = OrderedDict()
_LOCK = threading.Lock()
_KEEP = 2
#: Notes a log keeps for the client (the newest; a client that does not ask loses them).
NOTES = 256


def _loaded(token: str, blob: bytes) -> _Log:
    import cloudpickle

    import pmemsim

    from .shipping import WorkerProblem, cleans_on_exit

    cleans_on_exit()
    with _LOCK:
        found = _LOADED.get(token)
        if found is not None:
            return found
    try:
        version, replay, text, checker, crash_points, images = cloudpickle.loads(blob)
        replay = _with_text(replay, text)
    except Exception as exc:
        raise WorkerProblem(
            f"the log's checker cannot be loaded on this worker ({type(exc).__name__}: "
            f"{exc}): the modules it uses must be importable on every worker"
        ) from None
    if version != pmemsim.__version__:
        raise WorkerProblem(f"this worker has pmemsim {pmemsim.__version__}, the client {version}")
    _same_base_images(images)
    log = _Log(replay, checker, crash_points)
    dropped = []
    with _LOCK:
        log = _LOADED.setdefault(token, log)
        while len(_LOADED) > _KEEP:
            dropped.append(_LOADED.popitem(last=False)[1])
    for old in dropped:
        old.close()
    return log


def _noted(token: str) -> list[tuple[str, int, Any]]:
    """What this worker noted for the log ``token`` since the client last asked: ``("wait",
    seq, seconds)``, a long wait on an image; ``("fault", seq, verdict)``, an image that
    timed out or crashed its checker."""
    with _LOCK:
        log = _LOADED.get(token)
        if log is None:
            return []
        notes = list(log.notes)
        log.notes.clear()
    return notes


#: Whether :func:`_forget` stopped the checker programs (resumed once no batch runs).
_STOPPED = False


def _forget(token: str) -> None:
    """The client is done with the log ``token`` (the check ended, or was stopped)."""
    global _STOPPED
    from ..pmlog.checkers import stop_programs

    with _LOCK:
        log = _LOADED.pop(token, None)
        # A batch still running was abandoned (Ctrl-C, an error): its checker program may
        # never return (no time limit). End it as Ctrl-C does inline, unless a batch of
        # another log runs beside it (the programs are this process's, not the log's).
        stop = log is not None and log.running > 0
        stop = stop and not any(other.running for other in _LOADED.values())
        abandoned = list(log.batches) if log is not None else []
    for batch in abandoned:
        batch.abandon()
    if log is not None:
        log.close()
    if stop:
        _STOPPED = True
        stop_programs()


class _Failures(Verdicts):
    """A worker's verdicts: the failing images by seq (the client picks the minimal, and
    counts the faults); long waits and faults are noted for the client as they come."""

    def __init__(self, log: _Log) -> None:
        super().__init__(waiting=lambda cand, seconds: log.note("wait", cand.seq, seconds))
        self.log = log
        self.failures: list[tuple[int, str]] = []

    def candidate(self, cand: Cand, verdict: str) -> None:
        if getattr(verdict, "kind", ""):  # a checkers.Fault
            self.log.note("fault", cand.seq, verdict)
        self.failures.append((cand.seq, verdict))


class _Watch:
    """Notes a long wait on the image a checker judges in the replay's own thread (a
    Python function or a recovery, which nothing else waits on): ``on`` is that image's
    seq and when its run began, None between runs."""

    def __init__(self, log: _Log) -> None:
        from ..pmlog.waiting import Patience

        self.on: tuple[int, float] | None = None
        self.patience = Patience(lambda now: self.on, lambda seq, s: log.note("wait", seq, s))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pmemsim-log-watch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        look = time.monotonic()
        while not self.stop.wait(max(look - time.monotonic(), 0)):
            look = self.patience.next(time.monotonic())

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


class _Batch:
    """A batch's images, judged at their crash points as ``--jobs 1`` would (a
    :class:`~.cursor.Job`: this runs in the replay's thread)."""

    def __init__(self, log: _Log, items: list[Item]) -> None:
        self.log = log
        self.by_point: dict[int, list[Item]] = {}
        for item in items:
            self.by_point.setdefault(item[1], []).append(item)
        self.first, self.last = min(self.by_point), max(self.by_point)
        self.verdicts = _Failures(log)
        self.stack = contextlib.ExitStack()
        self.judge: Judge | None = None
        #: Watches the runs of a judge that judges in this thread (others tell themselves).
        self.watch: _Watch | None = None

    def visit(self, point: CrashPoint, img: PoolImage) -> None:
        wanted = self.by_point.get(point.index)
        if not wanted or self.log.closed:  # (closed: the client left, judge no more)
            return
        if self.judge is None:
            from ..pmlog.check import _judging
            from ..pmlog.judging import Inline

            log = self.log
            self.judge = self.stack.enter_context(
                _judging(log.replay, log.checker, img, 1, self.verdicts)
            )
            if isinstance(self.judge, Inline):
                self.watch = _Watch(log)
                self.stack.callback(self.watch.close)
        img.move_to(point.state)
        judge, watch = self.judge, self.watch
        for seq, _, dev, size, markers, ordinal in wanted:
            if watch is not None:
                watch.on = (seq, time.monotonic())
            judge.add(Cand(seq, point, dev, size, markers, ordinal))
        if watch is not None:
            watch.on = None

    def abandon(self) -> None:
        """The client left: a library checker's workers are ended, and the batch with them
        (a checker with no time limit would judge on for good)."""
        abandon = getattr(self.judge, "abandon", None)
        if abandon is not None:
            abandon()

    def close(self, done: bool) -> tuple[int, int, list[tuple[int, str]]]:
        with self.stack:
            if done and self.judge is not None:
                self.judge.finish()
        v = self.verdicts
        return v.judged, v.runs, v.failures


def _judge_batch(
    blob: bytes, token: str, packed: bytes, resume: bool = True
) -> tuple[int, int, list[Any], int, bool]:
    """Judge a batch's images on this worker (``packed``: the pickled list of its
    :data:`Item`): ``(images judged, checker runs, failures, log operations replayed for
    it, whether its replay started at the log's start)``. ``resume``: go on with the replay
    an earlier batch left where it can (else the batch replays the log from its start, the
    old way, kept as the benchmark's reference)."""
    from .cursor import ReplayEnded
    from .shipping import WorkerProblem

    log = _loaded(token, blob)
    batch = _Batch(log, pickle.loads(packed))
    cursor, fresh = log.take(batch.first, resume)
    before = cursor.operations
    with _LOCK:
        log.running += 1
        log.batches.add(batch)
    try:
        judged, runs, failures = cursor.run(batch)
    except ReplayEnded as exc:
        raise WorkerProblem(str(exc)) from None
    finally:
        with _LOCK:
            log.batches.discard(batch)
        _ended(log)
        log.give_back(cursor, resume)
    return judged, runs, failures, cursor.operations - before, fresh


def _ended(log: _Log) -> None:
    """A batch of ``log`` ended: checker programs run again once no batch is left running
    (:func:`_forget` may have stopped them)."""
    global _STOPPED
    from ..pmlog.checkers import resume_programs

    with _LOCK:
        log.running -= 1
        resume = _STOPPED and not any(other.running for other in _LOADED.values())
        resume = resume and not log.running
        if resume:
            _STOPPED = False
    if resume:
        resume_programs()
