"""An independent check of the simulator's durability promise, run on every exploration.

The simulator folds guaranteed stores into its media by its own (optimised) bookkeeping. This
module re-derives, from the operation stream alone and straight from persistency.md, which
bytes must be durable at each crash point, and compares them with the crash state's
"nothing unguaranteed persisted" image. Every other image of a point only adds stores on
top of that one, so if it holds, data persisted before the crash point is in every image.
A disagreement is a bug in pmemsim, reported as :class:`DurabilityViolation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..enums import Granularity

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState

__all__ = ["DurabilityModel", "DurabilityViolation"]

LINE = 64
PAGE = 4096


class DurabilityViolation(AssertionError):
    """The simulator lost data that was guaranteed durable (a bug in pmemsim: please report)."""


@dataclass
class _Pending:
    seq: int
    offset: int
    data: bytes
    nontemporal: bool
    flushed: bool = False


@dataclass
class _Medium:
    pending: list[_Pending] = field(default_factory=list)
    #: page -> (content of guaranteed bytes, mask: 0xFF where a guaranteed store wrote)
    pages: dict[int, tuple[bytearray, bytearray]] = field(default_factory=dict)

    def cut(self, start: int, end: int) -> None:
        """Drop ``[start, end)`` from every pending store."""
        keep = []
        for p in self.pending:
            lo, hi = p.offset, p.offset + len(p.data)
            if hi <= start or end <= lo:
                keep.append(p)
                continue
            if lo < start:
                keep.append(_Pending(p.seq, lo, p.data[: start - lo], p.nontemporal, p.flushed))
            if end < hi:
                keep.append(_Pending(p.seq, end, p.data[end - lo :], p.nontemporal, p.flushed))
        self.pending = sorted(keep, key=lambda p: (p.seq, p.offset))

    def make_durable(self, p: _Pending) -> None:
        off, data = p.offset, p.data
        pos = 0
        while pos < len(data):
            page, o = divmod(off + pos, PAGE)
            take = min(PAGE - o, len(data) - pos)
            content, mask = self.pages.setdefault(page, (bytearray(PAGE), bytearray(PAGE)))
            content[o : o + take] = data[pos : pos + take]
            mask[o : o + take] = b"\xff" * take
            pos += take


class DurabilityModel:
    """Follows the operations of one run (a Machine tap) at one granularity."""

    def __init__(self, granularity: Granularity, *, clflush: bool = False) -> None:
        self.granularity = granularity
        self.clflush = clflush
        self.media: dict[int, tuple[Any, _Medium]] = {}
        self.seq = 0
        # A fence or an msync is tapped before it takes effect, and a crash point "before"
        # it is captured in between: its effect waits until the run moves on.
        self._deferred: Any = None

    def _medium(self, medium: Any) -> _Medium:
        hit = self.media.get(id(medium))
        if hit is None or hit[0] is not medium:
            hit = self.media[id(medium)] = (medium, _Medium())
        return hit[1]

    def on_op(self, op: Any) -> None:
        self.settle()
        g = self.granularity
        if op.kind == "fence" or (op.kind == "flush" and (g == Granularity.PAGE or self.clflush)):
            self._deferred = op
            return
        self._effect(op)

    def settle(self) -> None:
        op, self._deferred = self._deferred, None
        if op is not None:
            self._effect(op)

    def _effect(self, op: Any) -> None:
        self.seq += 1
        g = self.granularity
        if op.kind == "store":
            m = self._medium(op.medium)
            if g == Granularity.BYTE and not op.nontemporal:
                # Durable at once; an older store still in flight to the same bytes can never
                # land over it (a core's stores to one address stay in program order).
                m.cut(op.offset, op.offset + op.length)
                m.make_durable(_Pending(self.seq, op.offset, op.data, False))
                return
            # Split at line boundaries: a flush covers whole lines.
            off, data = op.offset, op.data
            pos = 0
            while pos < len(data):
                take = min(LINE - (off + pos) % LINE, len(data) - pos)
                m.pending.append(_Pending(self.seq, off + pos, data[pos : pos + take], False))
                pos += take
            if op.nontemporal:
                lines = {(op.offset + i) // LINE for i in range(0, op.length, LINE)}
                lines.add((op.offset + op.length - 1) // LINE)
                for p in m.pending[: len(m.pending)]:
                    if p.seq == self.seq:
                        p.nontemporal = True
                    elif p.offset // LINE in lines:
                        p.flushed = True  # a non-temporal store evicts the line first
        elif op.kind == "flush":
            if g == Granularity.BYTE:
                return
            m = self._medium(op.medium)
            self._mark_flushed(m, op)
            if g == Granularity.PAGE or self.clflush:
                self._apply(m, lambda p: p.flushed)
        elif op.kind == "fence":
            if g != Granularity.PAGE:
                for m in (mm for _, mm in self.media.values()):
                    self._apply(m, lambda p: p.flushed or p.nontemporal)
        elif op.kind == "deep_flush":
            self._deep_flush(self._medium(op.medium), op)

    def _mark_flushed(self, m: _Medium, op: Any) -> None:
        """Write-back stores issued so far in the lines (pages) the flush covers."""
        unit = PAGE if self.granularity == Granularity.PAGE else LINE
        lo = op.offset - op.offset % unit
        hi = -(-(op.offset + op.length) // unit) * unit
        for p in m.pending:
            if not p.nontemporal and lo <= p.offset < hi:
                p.flushed = True

    def _deep_flush(self, m: _Medium, op: Any) -> None:
        # A deep flush flushes its range and fences (the whole machine's flushes).
        g = self.granularity
        if g != Granularity.BYTE:
            self._mark_flushed(m, op)
        if g == Granularity.PAGE:
            self._apply(m, lambda p: p.flushed)
        else:
            for _, mm in self.media.values():
                self._apply(mm, lambda p: p.flushed or p.nontemporal)

    @staticmethod
    def _apply(m: _Medium, durable: Any) -> None:
        keep = []
        for p in m.pending:  # program order: later stores to the same bytes win
            if durable(p):
                m.make_durable(p)
            else:
                keep.append(p)
        m.pending = keep

    def verify(self, state: CrashState, where: str, *, before_barrier: bool) -> None:
        """Raise DurabilityViolation if ``state``'s guaranteed image lacks a durable byte.

        ``before_barrier``: the state was captured just before the barrier tapped last takes
        effect (see on_op); the caller settles it once the barrier has taken effect."""
        if not before_barrier:
            self.settle()
        self._compare(state, where)

    def _compare(self, state: CrashState, where: str) -> None:
        image = state.guaranteed_image()
        for medium in state.media:
            hit = self.media.get(id(medium))
            if hit is None or hit[0] is not medium:
                continue
            snap = image.snapshot(medium)
            for page, (content, mask) in hit[1].pages.items():
                got = snap.page(page)
                m = int.from_bytes(mask, "little")
                if int.from_bytes(got, "little") & m != int.from_bytes(content, "little") & m:
                    bad = next(i for i in range(PAGE) if mask[i] and got[i] != content[i])
                    raise DurabilityViolation(
                        f"{where}: byte +0x{page * PAGE + bad:x} of {medium.label} was made "
                        f"durable as 0x{content[bad]:02x} but a crash image can hold "
                        f"0x{got[bad]:02x}; this is a pmemsim bug"
                    )
