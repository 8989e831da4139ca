"""Lazy exact exploration for check-log: run the checker, branch only on the lines it reads.

:class:`pmemsim.explore.lazy.LazyExplorer` explores a crash state by read paths: it runs the
checker on one image, notes the bytes it read, and tries other contents only for lines it
read (module docs there: this is exact, for a deterministic checker). Here it runs a Python
checker (``--checker-py``) on the image buffers, through :class:`RecordingImage`, an object
that reads like the memoryview a checker gets otherwise (indexing, slicing, ``len``,
``bytes()``, ``tobytes()``, iteration, comparison) and notes each read; or a scenario's
recovery (``--recovery``) on the simulator, whose read tap notes them.

A checker that needs a real buffer (``struct.unpack_from(fmt, image)``, ``memoryview(image)``)
raises TypeError on a RecordingImage; the same call is then made on the real memoryview, and
if that works the whole check goes on with planned exploration (:class:`NeedsBuffer`), from
the crash point where it happened: exact either way. So it does when a Python checker's run
passes its time limit: a run stopped wherever the limit caught it has no read path of its own
(what it read depends on when it was stopped), and a loop's reads would make one as long as
the loop ran; the images are then judged one by one, each run under the limit.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import USER_FAILURES
from ..explore.lazy import (
    LazyExplorer,
    Observation,
    ObservedInfo,
    Outcome,
    StateAlternatives,
    Verdict,
    Walk,
)
from ..explore.report import CrashConsistencyError, RecoveryHang
from ..markers import CrashInfo, reset_crash, set_crash
from .checkers import CheckerStopped, FunctionChecker, TimedOut, raised
from .images import PoolImage

if TYPE_CHECKING:
    from ..explore.trace import CrashPoint

__all__ = ["LazyJudge", "NeedsBuffer", "RecordingImage"]

Deviations = tuple[tuple[int, int], ...]


class NeedsBuffer(Exception):
    """The checker reads its image through the buffer protocol, or a run of it passed its
    time limit: explore by plan instead (the text says why)."""


class RecordingImage:
    """One registered file's image, as a checker reads it, each read noted."""

    __slots__ = ("_buf", "_medium", "_n", "_obs")

    def __init__(self, buf: memoryview, obs: Observation, medium: int) -> None:
        self._buf = buf
        self._obs = obs
        self._medium = medium
        self._n = len(buf)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            start, stop, step = key.indices(self._n)
            if stop > start:
                self._obs.on_read(self._medium, start, stop - start)
            return bytes(self._buf[start:stop:step]) if step != 1 else bytes(self._buf[start:stop])
        i = operator.index(key)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("index out of range")
        self._obs.on_read(self._medium, i, 1)
        return self._buf[i]

    def tobytes(self) -> bytes:
        self._obs.on_read(self._medium, 0, self._n)
        return bytes(self._buf)

    __bytes__ = tobytes

    def __iter__(self) -> Iterator[int]:
        return iter(self.tobytes())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordingImage):
            return self.tobytes() == other.tobytes()
        if isinstance(other, bytes | bytearray | memoryview):
            return self.tobytes() == bytes(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def hex(self) -> str:
        return self.tobytes().hex()

    def tolist(self) -> list[int]:
        return list(self.tobytes())

    @property
    def nbytes(self) -> int:
        return self._n

    def release(self) -> None:
        """Nothing to release (for checkers that release the memoryview they get)."""


#: Reads a Python checker's run may make under a time limit: past them it is taken as a run
#: that will not end (each read is kept: a loop's would fill memory before the limit).
READS = 1 << 20

#: What a checker raises when it needs a real buffer.
_BUFFER_ERRORS = (TypeError, AttributeError, BufferError)


def message_of(error: BaseException | None, verdict: Verdict) -> str:
    """What the checker said, as check-log reports it (see FunctionChecker)."""
    if verdict.kind == "hang":  # a recovery past its run_timeout: counted apart
        return TimedOut(f"timed out: {verdict.message}")
    if error is not None:
        if type(error) is CrashConsistencyError:
            return "returned False"
        return raised(error)
    kind, origin = verdict.signature
    if kind == "CrashConsistencyError":
        return "returned False"
    where = f" (at {origin})" if origin else ""
    return f"raised {kind}: {verdict.message}{where}"


class LazyJudge:
    """Read-path exploration of each crash point, for a Python checker or a recovery."""

    def __init__(
        self, checker: FunctionChecker, img: PoolImage, names: list[str], check: Any = None
    ) -> None:
        self.checker = checker
        self.img = img
        self.names = names
        #: A CrashCheck whose recovery judges the images (``--recovery``), else None; its
        #: runs are limited by its run_timeout, as in ``pmemsim check``.
        self.check = check
        self.timer = None
        if check is not None:
            from ..explore.runtimer import RunTimer

            self.timer = RunTimer(check.run_timeout)
        #: The Python checker's time limit per run.
        self.limit = checker.timer() if check is None else None
        self.reads = READS if self.limit is not None else None
        self.explorer = LazyExplorer()
        self.runs = 0
        self.paths = 0
        #: The point being explored and the runs begun (for pmemsim.pmlog.waiting.Watch).
        self.point: CrashPoint | None = None
        self.begun = 0
        self.saved = os.environ.get("PMREORDER_MARKERS")

    def close(self) -> None:
        for timer in (self.timer, self.limit):
            if timer is not None:
                timer.close()
        if self.saved is None:
            os.environ.pop("PMREORDER_MARKERS", None)
        else:
            os.environ["PMREORDER_MARKERS"] = self.saved

    def explore(
        self, point: CrashPoint, markers: str
    ) -> list[tuple[Deviations, Verdict, bytes, str]]:
        """Every read path of the point: ``(deviations, verdict, leaf, message)``.

        Raises :class:`NeedsBuffer` (having judged nothing for good) when the checker turns
        out to need a real buffer.
        """
        self.point = point
        state = point.state
        self.img.move_to(state)
        info = CrashInfo(point.index, point.kind, point.markers)
        os.environ["PMREORDER_MARKERS"] = markers
        alts = StateAlternatives(state)
        sizes = [64] * max(1, len(state.media))

        def run(dev: Deviations) -> Outcome:
            self.begun += 1
            obs = Observation(sizes, lambda m: m, steps=self.reads)
            if self.check is not None:
                err = self._recover(alts, dev, info, obs)
            else:
                err = self._call(dev, info, obs)
            return Outcome(Verdict.of(err), obs.events, obs.values, err)

        walk = Walk()
        out = []
        for path in self.explorer.explore(alts, info, run, walk=walk):
            message = message_of(path.error, path.verdict) if path.verdict.failed else ""
            out.append((path.deviations, path.verdict, path.leaf, message))
        self.runs += walk.runs
        self.paths += walk.paths
        return out

    def _recover(
        self, alts: StateAlternatives, dev: Deviations, info: CrashInfo, obs: Observation
    ) -> BaseException | None:
        from ..explore.recovery import run_recovery

        c = self.check
        # Recovery sees the first registered file (a CrashCheck has one pool): its reads
        # are the simulator's medium 0.
        obs_one = Observation((64,), lambda m: 0)
        err = run_recovery(
            c.recover,
            alts.snapshot(dev, 0),
            c.granularity,
            info,
            observation=obs_one,
            timer=self.timer,
        )
        obs.events, obs.values = obs_one.events, obs_one.values
        return err

    def _call(self, dev: Deviations, info: CrashInfo, obs: Observation) -> BaseException | None:
        img, checker = self.img, self.checker
        img.patch(dev)
        views = [img.view(i) for i in range(img.pools)]
        token = set_crash(ObservedInfo(info, obs))
        try:
            images = [RecordingImage(v, obs, i) for i, v in enumerate(views)]
            if checker.all_files:
                err = self._judge(dict(zip(self.names, images, strict=True)), views, info)
            else:
                err = None
                for i, image in enumerate(images):  # each file on its own
                    err = self._judge(image, views[i : i + 1], info)
                    if err is not None:
                        break
        finally:
            reset_crash(token)
            for v in views:
                v.release()
            img.restore(dev)
        return err

    def _judge(self, arg: Any, views: list[memoryview], info: CrashInfo) -> BaseException | None:
        try:
            ok = self._timed(arg)
        except NeedsBuffer:
            raise
        except _BUFFER_ERRORS as exc:
            # The same call on the real buffer: a checker that only needs one works there.
            token = set_crash(info)
            try:
                real: Any = (
                    views[0] if not isinstance(arg, dict) else dict(zip(arg, views, strict=True))
                )
                self._timed(real)
            except NeedsBuffer:
                raise
            except type(exc):
                return exc  # the checker's own mistake: that is its verdict
            except USER_FAILURES:
                pass
            finally:
                reset_crash(token)
            raise NeedsBuffer(
                f"the checker reads its image as a buffer ({type(exc).__name__}: {exc})"
            ) from None
        except USER_FAILURES as exc:  # the user's checker failed: that is the verdict
            return exc
        return CrashConsistencyError("returned False") if ok is False else None

    def _timed(self, arg: Any) -> object:
        """The checker's call on ``arg`` under its time limit; past it, or past
        :data:`READS` reads, NeedsBuffer."""
        timer = self.limit
        if timer is None:
            return self.checker.fn(arg)
        try:
            try:
                timer.arm()
                return self.checker.fn(arg)
            finally:
                timer.disarm()
        except CheckerStopped:
            why = f"passed the time limit ({timer.seconds:g} s)"
        except RecoveryHang:  # (the Observation's step budget: READS)
            why = f"read its image more than {READS:,} times"
        raise NeedsBuffer(f"a checker run {why}; a read path needs a run that ends")
