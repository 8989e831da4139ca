"""Judging the images check-log chose: in this process, by checker programs, by workers.

Images arrive one at a time (:meth:`Judge.add`), in the order the exploration chose them, while
the log is still being replayed; :meth:`Judge.finish` waits for the last verdicts. Verdicts go
to :class:`Verdicts`, which counts them and keeps the minimal failure: (lines deviating, atoms
lost, crash point), then the order of the images, so the result never depends on the order
in which threads or workers answer.

* :class:`Inline`: a Python function on the image buffers themselves (the fast path).
* :class:`Programs`: ``jobs`` threads, each running the checker program on its own image
  files (:mod:`pmemsim.pmlog.slots`).
* :class:`pmemsim.pmlog.workers.Workers`: worker processes judging image files they keep
  themselves: a C library's function, or a Python function out of process.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._records import NamedTuple
from ..errors import USER_FAILURES
from ..markers import CrashInfo, reset_crash, set_crash
from .checkers import (
    CheckerStopped,
    FunctionChecker,
    ProgramChecker,
    raised,
    relabel,
    resume_programs,
    stop_programs,
)
from .images import Pool, PoolImage

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ..explore.trace import CrashPoint

__all__ = ["Cand", "Image", "Inline", "Judge", "PerFile", "Programs", "Verdicts"]

Deviations = tuple[tuple[int, int], ...]
#: An image as :meth:`Judge.images` takes it: its deviations, the atoms it loses, and the
#: options its deviations patch in (PoolImage's ``(content, key delta, atoms lost, pool,
#: start, end)``).
Image = tuple[Deviations, int, tuple[tuple[bytes, int, int, int, int, int], ...]]
Progress = Callable[[int, int], None]


class Cand(NamedTuple):
    """One distinct image to judge."""

    seq: int
    point: CrashPoint
    dev: Deviations
    #: Smaller is more minimal: lines deviating, atoms lost, crash point.
    size: tuple[int, int, int]
    #: PMREORDER_MARKERS at its point, and how many marker crash points came before it.
    markers: str
    marker_ordinal: int


class Verdicts:
    """Verdicts as they come: counts, and the minimal failure so far."""

    def __init__(
        self,
        progress: Progress | None = None,
        notice: Callable[[Cand, str], None] | None = None,
        waiting: Callable[[Cand, float], None] | None = None,
    ) -> None:
        self.progress = progress
        #: Told of an image whose verdict a judge has waited long for, and how long so far
        #: (:mod:`pmemsim.pmlog.waiting`).
        self.waiting = waiting
        self.best: tuple[tuple[tuple[int, int, int], int], Cand, str] | None = None
        self.judged = 0
        self.inconsistent = 0
        self.runs = 0
        #: Inconsistent images whose checker ran out of time / crashed (checkers.Fault),
        #: each also handed to ``notice`` as it comes.
        self.faults = {"timeout": 0, "crash": 0}
        self.notice = notice

    def add(self, cand: Cand, verdict: str | None) -> None:
        self.judged += 1
        if verdict is not None:
            self.inconsistent += 1
            self.candidate(cand, verdict)
        if self.progress is not None and not self.judged % 1024:
            self.progress(self.judged, self.judged)

    def passed(self, n: int) -> None:
        """``n`` consistent images."""
        before = self.judged
        self.judged += n
        if self.progress is not None and before >> 10 != self.judged >> 10:
            self.progress(self.judged, self.judged)

    def candidate(self, cand: Cand, verdict: str) -> None:
        """An inconsistent image: the minimal failure so far?"""
        kind = getattr(verdict, "kind", "")  # a checkers.Fault: counted apart
        if kind:
            self.faults[kind] += 1
            if self.notice is not None:
                self.notice(cand, verdict)
        key = (cand.size, cand.seq)  # the first of equally small ones wins
        if self.best is None or key < self.best[0]:
            self.best = (key, cand, verdict)


class PerFile:
    """Several files judged one by one: each file's image is judged once."""

    def __init__(self, img: PoolImage, names: list[str]) -> None:
        self.img = img
        self.names = names
        self.known: list[dict[int, str | None]] = [{} for _ in names]

    def todo(self, dev: Deviations) -> tuple[list[tuple[int, int]], str | None]:
        """``(pool, key)`` of the files still to judge, or the verdict of one judged
        before that failed."""
        out = []
        for pool, known in enumerate(self.known):
            k = self.img.pool_key(dev, pool)
            if k in known:
                verdict = known[k]
                if verdict is not None:
                    return [], verdict
                continue
            out.append((pool, k))
        return out, None

    def note(self, pool: int, key: int, verdict: str | None) -> str | None:
        self.known[pool][key] = verdict
        return None if verdict is None else relabel(verdict, f"{self.names[pool]}: {verdict}")


def _runs(
    cand: Cand, per_file: PerFile | None, pools: int
) -> tuple[list[tuple[list[int], int | None]], str | None]:
    """What to run for an image: ``([(pools, memo key)], verdict known already)``."""
    if per_file is None:
        return [(list(range(pools)), None)], None
    todo, verdict = per_file.todo(cand.dev)
    return [([pool], key) for pool, key in todo], verdict


class Judge:
    """Takes images as the exploration chooses them (the image buffers show the image's
    crash state while :meth:`add` runs)."""

    def __init__(
        self, img: PoolImage, names: list[str], per_file: PerFile | None, verdicts: Verdicts
    ) -> None:
        self.img = img
        self.names = names
        self.per_file = per_file
        self.verdicts = verdicts

    def add(self, cand: Cand) -> None:
        raise NotImplementedError

    @property
    def simple(self) -> bool:
        """Whether :meth:`images` applies (one run per image)."""
        return False

    def images(
        self, point: CrashPoint, markers: str, ordinal: int, seq: int, batch: list[Image]
    ) -> None:
        """:meth:`add` for a :attr:`simple` judge, of a crash point's new images in order
        (numbered from ``seq``), each given by its parts (the fast path: a Cand is made only
        for an inconsistent image)."""
        raise NotImplementedError

    def finish(self, unneeded: Callable[[], object] = lambda: None) -> None:
        """Wait for every verdict. ``unneeded()`` is called once the judge reads the image
        buffers no more: before the wait by a judge whose images left in copies."""
        unneeded()

    def close(self) -> None:
        """Release what the judge holds (after finish, or on the way out of an error)."""


def _info_maker(cls: type[CrashInfo]) -> Callable[[int, str, tuple[str, ...]], CrashInfo]:
    """A maker of ``cls(point, kind, markers)`` that sets its slots directly: a frozen
    dataclass's own __init__ sets each field through object.__setattr__, at twice the cost,
    once per crash point judged in process. ``cls`` itself when its fields are not those
    this sets (or it has more to do when made): no field is left unset."""
    import types

    # (pmemsim's own dataclass keeps its fields here: dataclasses.fields would import the
    # standard module and build them again, several milliseconds of start-up.)
    fields: Any = getattr(cls, "_pmemsim_fields", None)
    names = ("point", "kind", "markers", "faults")
    if (
        fields is None
        or tuple(f.name for f in fields) != names
        or fields[-1].default != ()
        or hasattr(cls, "__post_init__")
        or not all(isinstance(getattr(cls, n, None), types.MemberDescriptorType) for n in names)
    ):
        return cls
    sp, sk, sm, sf = (getattr(cls, name).__set__ for name in names)
    new = object.__new__

    def make(point: int, kind: str, markers: tuple[str, ...]) -> CrashInfo:
        info = new(cls)
        sp(info, point)
        sk(info, kind)
        sm(info, markers)
        sf(info, ())
        return info

    return make


_crash_info = _info_maker(CrashInfo)


class Inline(Judge):
    """A Python function on the image buffers, in this process; each call under the
    checker's time limit (its :meth:`~FunctionChecker.timer`, installed for the judge's
    life: a call costs arming and disarming it)."""

    def __init__(self, checker: FunctionChecker, *args: Any) -> None:
        super().__init__(*args)
        self.checker = checker
        self.fn = checker.fn
        self.point: CrashPoint | None = None
        self.token: object = None
        self.saved = os.environ.get("PMREORDER_MARKERS")
        self.markers: str | None = None
        self.timer = checker.timer()
        self.untimer: Any = None
        #: Whether _enter is this class's (a subclass's override hears of each point).
        self._plain = type(self)._enter is Inline._enter
        if self.timer is not None:
            self.untimer = self.timer.installed()
            self.untimer.__enter__()

    def _enter(self, cand: Cand) -> None:
        """Judge ``cand``'s crash point from now on (a subclass hears of each here)."""
        self._enter_point(cand.point, cand.markers)

    def _enter_point(self, point: CrashPoint, markers: str) -> None:
        """What the checker sees of the crash point it judges (current_crash and
        PMREORDER_MARKERS). The first point's token is kept for :meth:`close` to give
        back what was there before: a later point's only replaces the value (a reset
        per point bought nothing, once per point on epochs of one store)."""
        self.point = point
        info = _crash_info(point.index, point.kind, point.markers)
        if self.token is None:
            self.token = set_crash(info)
        else:
            set_crash(info)
        if markers != self.markers:
            os.environ["PMREORDER_MARKERS"] = self.markers = markers

    @property
    def simple(self) -> bool:
        """One pool, judged as a whole: :meth:`images` applies."""
        return self.per_file is None and not self.checker.all_files and self.img.pools == 1

    def images(
        self, point: CrashPoint, markers: str, ordinal: int, seq: int, batch: list[Image]
    ) -> None:
        if point is not self.point:
            if self._plain:  # (no Cand to make for _enter: once per point)
                self._enter_point(point, markers)
            else:
                dev, lost, _ = batch[0]
                self._enter(Cand(seq, point, dev, (len(dev), lost, point.index), markers, ordinal))
        elif markers != self.markers:
            os.environ["PMREORDER_MARKERS"] = self.markers = markers
        img, verdicts, fn, timer = self.img, self.verdicts, self.fn, self.timer
        # (Arming, the call and disarming in one: once per image; asked for per batch.)
        run = None if timer is None else timer.runner()
        # (img.buf, img.view(0) and img.restore, inline: this runs once per image.)
        pool = img._pools[0]
        buf, ro, persisted = pool.buf, pool._ro, img._persisted
        verdict: str | None
        before = verdicts.judged
        for dev, lost, hits in batch:
            for hit in hits:
                buf[hit[4] : hit[5]] = hit[0]
            view = ro[:]
            try:
                ok = fn(view) if run is None else run(fn, view)
            except USER_FAILURES as exc:  # the user's checker failed: that is the verdict
                verdict = raised(exc)
            except CheckerStopped as exc:  # past its time limit
                verdict = raised(exc)
            else:
                verdict = "returned False" if ok is False else None
            finally:
                view.release()
                if dev:  # (what each deviation patched: the line's all-persisted content)
                    if len(dev) == 1 == len(hits):  # (one, commonly: no zip)
                        hit = hits[0]
                        buf[hit[4] : hit[5]] = persisted[dev[0][0]]
                    else:
                        for d, hit in zip(dev, hits, strict=True):
                            buf[hit[4] : hit[5]] = persisted[d[0]]
            # (Per run: a long wait is told by the count of runs, see waiting.Watch.)
            verdicts.runs += 1
            verdicts.judged += 1
            if verdict is not None:
                size = (len(dev), lost, point.index)
                verdicts.inconsistent += 1
                verdicts.candidate(Cand(seq, point, dev, size, markers, ordinal), verdict)
            seq += 1
        if verdicts.progress is not None and before >> 10 != verdicts.judged >> 10:
            verdicts.progress(verdicts.judged, verdicts.judged)

    def add(self, cand: Cand) -> None:
        if self.simple:
            one = [(cand.dev, cand.size[1], self.img.options(cand.dev))]
            self.images(cand.point, cand.markers, cand.marker_ordinal, cand.seq, one)
            return
        if cand.point is not self.point:
            self._enter(cand)
        img, checker, verdicts = self.img, self.checker, self.verdicts
        dev = cand.dev
        img.patch(dev)
        try:
            if checker.all_files:
                views = {p: img.view(i) for i, p in enumerate(self.names)}
                try:
                    verdict = self._call(views)
                finally:
                    for v in views.values():
                        v.release()
                verdicts.runs += 1
            elif self.per_file is None:
                view = img.view(0)
                try:
                    verdict = self._call(view)
                finally:
                    view.release()
                verdicts.runs += 1
            else:
                todo, verdict = self.per_file.todo(dev)
                for pool, key in todo:
                    view = img.view(pool)
                    try:
                        verdict = self.per_file.note(pool, key, self._call(view))
                    finally:
                        view.release()
                    verdicts.runs += 1
                    if verdict is not None:
                        break
        finally:
            img.restore(dev)
        verdicts.add(cand, verdict)

    def _call(self, image: Any) -> str | None:
        """The checker's verdict on ``image``, under its time limit."""
        timer = self.timer
        if timer is None:
            return self.checker(image)
        try:
            try:
                timer.arm()
                return self.checker(image)
            finally:
                timer.disarm()
        except CheckerStopped as exc:
            return raised(exc)

    def close(self) -> None:
        if self.untimer is not None:
            untimer, self.untimer = self.untimer, None
            untimer.__exit__(None, None, None)
        if self.token is not None:
            reset_crash(self.token)
            self.token = None
        if self.saved is None:
            os.environ.pop("PMREORDER_MARKERS", None)
        else:
            os.environ["PMREORDER_MARKERS"] = self.saved


class Programs(Judge):
    """``jobs`` threads, each running the checker program on its own image files."""

    def __init__(
        self, checker: ProgramChecker, pools: list[Pool], jobs: int, tmp: str, *args: Any
    ) -> None:
        from .slots import ImageFiles  # a program checker's: not every check's start-up

        super().__init__(*args)
        self.checker = checker
        self.pools = pools
        self.files = ImageFiles(self.img, pools, _file_names(self.names), jobs, tmp)
        self.free = list(range(jobs))[::-1]
        #: Images being judged, oldest first: (image, slot, verdict to come, when it began).
        self.window: deque[tuple[Cand, int, Future[str | None], float]] = deque()
        # (Imported here: concurrent.futures costs a command that runs no program ~10 ms.)
        from concurrent.futures import ThreadPoolExecutor

        self.ex = ThreadPoolExecutor(max_workers=jobs)

    def _judge(
        self, slot: int, runs: list[tuple[list[int], int | None]], markers: str
    ) -> str | None:
        paths = self.files.paths(slot)
        for chosen, key in runs:
            verdict = self.checker.run([paths[i] for i in chosen], markers)
            if self.per_file is not None:
                assert key is not None
                verdict = self.per_file.note(chosen[0], key, verdict)
            if verdict is not None:
                return verdict
        return None

    def _settle(self, keep: int) -> None:
        # Oldest first, so that this waits for the image that has waited longest. It leaves
        # the window only once judged: interrupted while waiting, close() must still see it
        # running (and kill its program).
        while len(self.window) > keep:
            cand, slot, fut, began = self.window[0]
            verdict = self._result(cand, fut, began)
            self.window.popleft()
            self.files.returned(slot)
            self.free.append(slot)
            self.verdicts.add(cand, verdict)

    def _result(self, cand: Cand, fut: Future[str | None], began: float) -> str | None:
        """``fut``'s verdict, telling of a long wait for it."""
        waiting = self.verdicts.waiting
        if waiting is not None:
            from concurrent.futures import wait

            from .waiting import Patience

            patience = Patience(lambda now: (0, began), lambda _, waited: waiting(cand, waited))
            while not fut.done():
                wait([fut], max(patience.next(time.monotonic()) - time.monotonic(), 0))
        return fut.result()

    def add(self, cand: Cand) -> None:
        runs, known = _runs(cand, self.per_file, len(self.pools))
        if known is not None or not runs:
            self.verdicts.add(cand, known)
            return
        if not self.free:
            self._settle(len(self.window) - 1)
        slot = self.free.pop()
        self.files.write(slot, cand.dev)
        self.files.lend(slot)
        self.verdicts.runs += len(runs)
        fut = self.ex.submit(self._judge, slot, runs, cand.markers)
        self.window.append((cand, slot, fut, time.monotonic()))

    def finish(self, unneeded: Callable[[], object] = lambda: None) -> None:
        self._settle(0)
        self.ex.shutdown(wait=True)
        unneeded()

    def close(self) -> None:
        if self.window:  # an error or Ctrl-C: end the running checkers now
            stop_programs()
            self.ex.shutdown(wait=True, cancel_futures=True)
            resume_programs()
        else:  # no thread outlives the check (a later fork would copy it mid-wait)
            self.ex.shutdown(wait=True, cancel_futures=True)
        self.files.close()


def _file_names(paths: list[str]) -> list[str]:
    """A file name per pool for image files (the registered name, made unique)."""
    out: list[str] = []
    for i, p in enumerate(paths):
        base = os.path.basename(p) or "pool"
        out.append(base if base not in out else f"{i}-{base}")
    return out
