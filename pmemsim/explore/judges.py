"""Judges: what each kind of check does with a crash state.

:class:`Judge` is what exploration asks of a check (build an image, key it, add bad blocks,
run recovery); the pool judge here serves a CrashCheck, :mod:`.files` has FileCrashCheck's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ErrorCode, InvalidArgumentError
from ..events import BadBlock
from ..markers import CrashInfo
from ..snapshot import Snapshot
from .checks import CrashCheck
from .harness import PoolHarness
from .images import SECTOR, Deviations, _PageSums
from .lazy import Observation, ObservedInfo, Outcome, StateAlternatives, Verdict
from .recovery import _cleared, _crash_recovery, run_recovery
from .runtimer import RunTimer
from .trace import Trace, record

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState

__all__ = ["Judge"]


class Judge(Protocol):
    """What one kind of check does with crash states: build the thing its recovery runs on
    (a pool snapshot for CrashCheck, a directory of files for FileCrashCheck), key it by
    content, add bad blocks, and run recovery. The exploration itself is shared."""

    #: The run limits (set by the engine before exploring).
    timer: RunTimer | None
    steps: int | None

    def image(self, state: CrashState, deviations: Deviations) -> Any:
        """What recovery gets for one crash image of ``state``."""

    def key(self, image: Any, state: CrashState, deviations: Deviations) -> bytes:
        """A digest of the image's content (equal content, equal key)."""

    def badblocks(self, image: Any) -> list[tuple[str, Any]]:
        """``(fault, image with it)``: a bad block in each sector recovery reads."""

    def with_badblock(self, image: Any, fault: str) -> Any:
        """The image with the bad block a ``badblock...`` fault names (from a token)."""

    def verdict(self, image: Any, info: CrashInfo) -> BaseException | None:
        """Recovery's outcome on the image: None when consistent."""

    def observed(self, state: CrashState, deviations: Deviations, info: CrashInfo) -> Outcome:
        """Recovery's outcome on an image, with what it observed (lazy exploration)."""

    def context(self, state: CrashState, faults: tuple[str, ...]) -> object:
        """States with one context share lazy runs: recovery sees nothing else differ."""

    def probe(self, state: CrashState) -> set[int]:
        """Units of ``state`` that recovery reads on its all-persisted image."""

    def sources(self, state: CrashState) -> tuple[str, ...]:
        """Names of the state's media, by index, for reports (empty: one anonymous pool)."""


class _PoolJudge:
    """CrashCheck's judge: recovery maps a snapshot of the one pool."""

    def __init__(self, c: CrashCheck) -> None:
        self.c = c
        self.sums = _PageSums()
        self._alts: StateAlternatives | None = None
        self.timer: RunTimer | None = None
        self.steps: int | None = None
        self.harness = PoolHarness(c.granularity, c.size)

    def close(self) -> None:
        """Close the set and source recovery runs on (again if it runs later). Whoever
        makes the judge calls it as its session ends, however it ends: left to the
        collector, the source stayed open until some collection, maybe inside a later run."""
        self.harness.close()

    def _images(self, state: CrashState) -> StateAlternatives:
        if self._alts is None or self._alts.state is not state:
            self._alts = StateAlternatives(state)
        return self._alts

    def image(self, state: CrashState, deviations: Deviations) -> Snapshot:
        return self._images(state).snapshot(deviations)

    def key(self, image: Snapshot, state: CrashState, deviations: Deviations) -> bytes:
        return self.sums.key(state, self._images(state), deviations)

    def badblocks(self, image: Snapshot) -> list[tuple[str, Snapshot]]:
        sectors: set[int] = set()

        def tap(medium: Any, off: int, n: int) -> None:
            sectors.update(range(off - off % SECTOR, off + n, SECTOR))

        info = CrashInfo(-1, "probe", ())
        run_recovery(self.c.recover, image, self.c.granularity, info, tap, timer=self.timer)
        return [
            (f"badblock.{s:x}", self.with_badblock(image, f"badblock.{s:x}"))
            for s in sorted(sectors)
            if s < image.size
        ]

    def with_badblock(self, image: Snapshot, fault: str) -> Snapshot:
        try:
            sector = int(fault.split(".", 1)[1], 16)
        except (IndexError, ValueError):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"malformed fault {fault!r}") from None
        return dataclasses.replace(image, badblocks=(*image.badblocks, BadBlock(sector, SECTOR)))

    def _steps(self) -> Observation | None:
        if self.steps is None:
            return None
        return Observation((64,), lambda m: None, steps=self.steps)

    def verdict(self, image: Snapshot, info: CrashInfo) -> BaseException | None:
        return self._verdict(image, info, self._steps())

    def _verdict(
        self, image: Snapshot, info: CrashInfo, observation: Observation | None
    ) -> BaseException | None:
        c = self.c
        err = run_recovery(
            c.recover,
            image,
            c.granularity,
            info,
            None,
            c.badblock_policy,
            observation=observation,
            timer=self.timer,
            harness=self.harness,
        )
        if err is None and c.recovery_crash_depth:
            # Recovery crashed and run again may ask about the crash too: still observed.
            seen = info if observation is None else ObservedInfo(info, observation)
            return _crash_recovery(
                c,
                _cleared(image),
                c.recovery_crash_depth,
                seen,
                observation=observation,
                timer=self.timer,
            )
        return err

    def observed(self, state: CrashState, deviations: Deviations, info: CrashInfo) -> Outcome:
        unit = state.media[0].unit if state.media else 64
        # Writes are followed within one run; crashed recovery runs again on images its own
        # stores shaped, where every byte read is counted as the crash image's (sound: it
        # only branches more).
        obs = Observation(
            (unit,),
            lambda m: 0,
            track_writes=not self.c.recovery_crash_depth,
            steps=self.steps,
        )
        err = self._verdict(self.image(state, deviations), info, obs)
        return Outcome(Verdict.of(err), obs.events, obs.values, err)

    def context(self, state: CrashState, faults: tuple[str, ...]) -> object:
        return faults

    def probe(self, state: CrashState) -> set[int]:
        read: set[tuple[int, int]] = set()
        size = state.units[0].size if state.units else 64  # one pool: one unit size

        def tap(medium: Any, off: int, n: int) -> None:
            for idx in range(off // size, (off + n - 1) // size + 1):
                read.add((0, idx * size))

        run_recovery(
            self.c.recover,
            state.image(()).snapshot(),
            self.c.granularity,
            CrashInfo(-1, "probe", ()),
            tap,
            timer=self.timer,
        )
        return {i for i, u in enumerate(state.units) if (u.medium_index, u.offset) in read}

    def sources(self, state: CrashState) -> tuple[str, ...]:
        return ()


@contextmanager
def _recorded(c: Any, unsafe_shutdown: bool) -> Iterator[tuple[Trace, Judge]]:
    """The check's workload recorded once, and the judge of its crash images."""
    from .files import FileCrashCheck, recorded_files

    if isinstance(c, FileCrashCheck):
        with recorded_files(c, unsafe_shutdown) as recorded:
            yield recorded
        return
    trace = record(
        c.workload,
        size=c.size,
        granularity=c.granularity,
        crash_points=c.crash_points,
        unsafe_shutdown=unsafe_shutdown,
    )
    judge = _PoolJudge(c)
    try:
        yield trace, judge
    finally:
        judge.close()
