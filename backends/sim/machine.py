"""The simulated CPU side: program order, the flush queue, fences and barriers.

One machine orders every store, flush and fence issued to any of its media (a fence orders
all earlier flushes, whichever source they touched). Observers hear of every *barrier* (a
fence, a clflush, an msync, a deep flush) just before it takes effect: that is where a crash
can reveal something new, and where crash exploration looks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from pmemsim._records import NamedTuple
from pmemsim.enums import Granularity
from pmemsim.provenance import HELPERS, STACK_DEPTH, Provenance, blamed, capture_stack

from .lint import FindingKind, LintLog
from .medium import Flush, Medium

__all__ = ["Barrier", "Machine", "Op", "Statistics"]


@dataclass(frozen=True, slots=True)
class Barrier:
    """A point where stores may become guaranteed; a crash just before it is a crash point."""

    #: 0, 1, 2, ... in program order, counting every barrier of the machine.
    index: int
    #: "fence", "clflush", "msync" or "deep_flush".
    kind: str
    #: Whether any store was issued since the previous barrier (if not, crashing here shows
    #: nothing that crashing at the previous barrier did not).
    after_store: bool
    provenance: Provenance


class Statistics(NamedTuple):
    """Counters of one simulated machine."""

    stores: int
    store_bytes: int
    flushes: int
    fences: int
    deep_flushes: int
    #: Lines (persistence units) holding a store that no flush covers.
    dirty_lines: int
    #: Lines whose stores are all flushed but await a fence.
    flushed_lines: int
    #: Lines that were written and hold nothing in flight.
    persistent_lines: int


Observer = Callable[[Barrier], None]


class Op(NamedTuple):
    """One operation as the program issued it, after it took effect (see Machine.tap)."""

    #: "store", "flush", "fence" or "deep_flush".
    kind: str
    medium: Medium | None
    offset: int
    length: int
    #: The bytes of a store; empty otherwise.
    data: bytes
    nontemporal: bool
    provenance: Provenance
    #: The number lint findings name it by (see lint.Finding.occurrences): a store's,
    #: flush's or deep flush's sequence number; a fence's count among the machine's fences
    #: (fences take no sequence number). 0: none (an eADR flush, which does nothing; an
    #: erase).
    seq: int = 0


Tap = Callable[[Op], None]


class Machine:
    """Program order and persistence state across every medium of one simulator."""

    def __init__(self, *, clflush: bool = False, lint: bool = True) -> None:
        self.seq = itertools.count(1)
        #: Flushes awaiting a fence: (medium, (seq, start, end, provenance)).
        self.flushes: list[tuple[Medium, Flush]] = []
        #: Media with non-temporal stores or flushes awaiting a fence.
        self.unfenced: set[Medium] = set()
        #: clflush takes effect at its own position (Intel) instead of waiting for a fence.
        self.clflush = clflush
        self.lint: LintLog | None = LintLog() if lint else None
        self.observers: list[Observer] = []
        #: Hears every operation after it took effect (crash points after each operation,
        #: log export). None keeps the store path free of any cost.
        self.tap: Tap | None = None
        #: How many frames a tapped operation's provenance keeps (0: none, for taps that
        #: never report where an operation came from).
        self.tap_depth = STACK_DEPTH
        #: Hears every read ``(medium, offset, length)`` (read-guided exploration).
        self.read_tap: Callable[[Medium, int, int], None] | None = None
        self.stores = 0
        self.store_bytes = 0
        self.flush_count = 0
        self.fence_count = 0
        self.deep_flush_count = 0
        self.barriers = 0
        self.since_barrier = False

    # -- barriers ----------------------------------------------------------------------

    def _barrier(self, kind: str, caller: FrameType) -> Provenance:
        prov = capture_stack(caller)
        if self.observers:
            b = Barrier(self.barriers, kind, self.since_barrier, prov)
            for obs in tuple(self.observers):
                obs(b)
        self.barriers += 1
        self.since_barrier = False
        return prov

    # -- flush and fence ---------------------------------------------------------------

    def flush(self, medium: Medium, start: int, end: int, caller: FrameType) -> None:
        if HELPERS.active:
            caller = blamed(caller)
        self.flush_count += 1
        if medium.wb_durable:
            if self.tap is not None:
                self._tapped("flush", medium, start, end - start, caller)
            return  # eADR: a flush has nothing to do
        seq = next(self.seq)
        if self.tap is not None:
            self._tapped("flush", medium, start, end - start, caller, seq=seq)
        lo, hi = medium.align(start, end)
        if medium.granularity == Granularity.PAGE or self.clflush:
            # msync (PAGE) and Intel's clflush guarantee the range by themselves.
            kind = "msync" if medium.granularity == Granularity.PAGE else "clflush"
            prov = self._barrier(kind, caller)
            medium.resolve([(seq, lo, hi, prov[:1])], False, self.lint)
            return
        self.flushes.append((medium, (seq, lo, hi, ((caller.f_code, caller.f_lasti),))))
        self.unfenced.add(medium)

    def fence(self, granularity: Granularity, caller: FrameType) -> None:
        """sfence: every earlier flush and non-temporal store becomes guaranteed."""
        if HELPERS.active:
            caller = blamed(caller)
        self.fence_count += 1
        if self.tap is not None:
            self._tapped("fence", None, 0, 0, caller, seq=self.fence_count)
        if granularity == Granularity.PAGE:
            return  # drain of a PAGE map is a no-op: msync already waited
        if not self.unfenced and not self.flushes:
            if self.lint is not None and granularity == Granularity.CACHE_LINE:
                prov = capture_stack(caller, 1)
                self.lint.add(FindingKind.EMPTY_FENCE, "-", 0, 0, prov, seq=self.fence_count)
            # Nothing to order: not a barrier that can reveal anything.
            return
        self._barrier("fence", caller)
        self._resolve_all()

    def deep_flush(self, medium: Medium, start: int, end: int, caller: FrameType) -> None:
        """Flush the range through the memory controller: durable even if ADR fails.

        At PAGE granularity this is an msync, which already reaches the device.
        """
        if HELPERS.active:
            caller = blamed(caller)
        self.deep_flush_count += 1
        lo, hi = medium.align(start, end)
        self._barrier("deep_flush", caller)
        seq = next(self.seq)
        if self.tap is not None:
            self._tapped("deep_flush", medium, start, end - start, caller, seq=seq)
        if medium.granularity == Granularity.PAGE:
            medium.resolve([(seq, lo, hi, ())], False, None)
            return
        # A deep flush flushes and fences; its own flush is not user code for the lint.
        self.flushes.append((medium, (seq, lo, hi, ())))
        self._resolve_all()
        # ... and pushes the range out of the memory controller's queues: an unsafe shutdown
        # can no longer lose it. Only the range: libpmem2 promises no more (the hardware
        # flushes a whole region's queues, but a program must not count on that).
        medium.deep_clean(lo, hi)

    def _tapped(
        self,
        kind: str,
        medium: Medium | None,
        offset: int,
        length: int,
        caller: FrameType,
        data: bytes = b"",
        nontemporal: bool = False,
        seq: int = 0,
    ) -> None:
        # A flush or fence is reported before it takes effect, so the tap sees the state
        # the operation found; a store after (see SimMap). Either way the order of taps is
        # program order.
        assert self.tap is not None
        depth = self.tap_depth
        prov = capture_stack(caller, depth) if depth else ()
        self.tap(Op(kind, medium, offset, length, data, nontemporal, prov, seq))

    def _resolve_all(self) -> None:
        by_medium: dict[Medium, list[Flush]] = {m: [] for m in self.unfenced}
        for medium, fl in self.flushes:
            by_medium.setdefault(medium, []).append(fl)
        self.flushes.clear()
        self.unfenced.clear()
        for medium in sorted(by_medium, key=lambda m: m.ident):
            medium.resolve(by_medium[medium], True, self.lint)

    def pending_flushes(self, medium: Medium) -> list[Flush]:
        return [fl for m, fl in self.flushes if m is medium]
