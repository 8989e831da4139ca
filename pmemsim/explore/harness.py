"""One set and one map that recovery runs on, reloaded with each crash image.

A fresh simulator, set, source and map per image cost several times the user's own
recovery when that is short (issue 16). A :class:`PoolHarness` builds them once per check
(and per worker process) and, before each run, loads the image into the map's medium: the
medium is re-initialised from the image's pages exactly as a fresh map of
``Source.from_image(image)`` would be, and the machine forgets any flush or fence that the
previous run left pending. Recovery sees the same view object each time.

Only images that a fresh map would treat alike qualify: the pool's size, no bad blocks, no
device (anonymous pools: a CrashCheck's). After each run the harness checks that recovery
left the set as it found it (still open, the one part map, the one simulator map); if not,
it is rebuilt before the next run. Tests compare it image by image with the fresh path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import Config
from ..enums import Granularity
from ..part import Part
from ..set import Set
from ..snapshot import Snapshot
from ..source import Source
from ..view import View

if TYPE_CHECKING:
    from pmemsim_backends.sim import SimBackend

__all__ = ["PoolHarness"]


class PoolHarness:
    """A reusable recovery target for images of one pool size at one granularity."""

    def __init__(self, granularity: Granularity, size: int) -> None:
        self.granularity = granularity
        self.size = size
        self._built = False

    def fits(self, snapshot: Snapshot) -> bool:
        return (
            snapshot.size == self.size
            and not snapshot.badblocks
            and snapshot.device_id is None
            and not snapshot.unsafe_shutdown
        )

    def _build(self) -> None:
        from pmemsim_backends.sim import SimBackend

        self.sim: SimBackend = SimBackend(self.granularity, lint=False)
        self.set = Set(Config(granularity=self.granularity, backend=self.sim))
        self.source = Source.from_image(Snapshot("pool", self.size, {}))
        try:
            self.descriptor = self.set.map(Part(self.source))
            self.view: View = self.set.view(self.descriptor)
            (self.map,) = tuple(self.sim.iter_maps())
            self.medium: Any = self.map.medium
        except BaseException:
            self._close()
            raise
        self._built = True

    def close(self) -> None:
        """Close the set and its source (a later :meth:`load` builds them again). Its owner
        calls it as it ends: left to the collector, the source (whose handles refer back to
        it) stays open until some collection, maybe inside a later run."""
        if self._built:
            self._built = False
            self._close()

    def _close(self) -> None:
        self.set.close()
        self.source.close()

    def __enter__(self) -> PoolHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self, snapshot: Snapshot) -> View:
        """The view, showing ``snapshot`` as a fresh map of it would."""
        if not self._built:
            self._build()
        m = self.medium
        type(m).__init__(
            m,
            m.machine,
            m.ident,
            m.label,
            m.size,
            m.granularity,
            m.unit,
            snapshot.loader,
            snapshot.pages,
            m.source_ident,
            m.badblocks,
            m.key,
        )
        machine = m.machine
        machine.flushes.clear()
        machine.unfenced.clear()
        machine.since_barrier = False
        return self.view

    def taps(self, read: Any, ops: Any) -> None:
        machine = self.medium.machine
        machine.read_tap = read
        machine.tap = ops
        machine.tap_depth = 0  # the observation needs what was stored where, not the stack

    def check(self) -> None:
        """After a run: rebuild before the next one if recovery changed the set."""
        intact = (
            not self.set.closed
            and list(self.set.part_maps()) == [self.descriptor]
            and tuple(self.sim.iter_maps()) == (self.map,)
            and self.map.medium is self.medium
            and not self.medium.badblocks
        )
        if not intact:
            self.close()  # (the next load builds another)
