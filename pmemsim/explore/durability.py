"""An independent check of the simulator's durability promise, run on every exploration.

The simulator folds guaranteed stores into its media by its own (optimised) bookkeeping. This
module re-derives, from the operation stream alone and straight from persistency.md, which
bytes must be durable at each crash point, and compares them with the crash state's
"nothing unguaranteed persisted" image. Every other image of a point only adds stores on
top of that one, so if it holds, data persisted before the crash point is in every image.
A disagreement is a bug in pmemsim, reported as :class:`DurabilityViolation`.

The comparison is incremental, and as strict as comparing every durable byte at every point:
at the previous point the two sides agreed on every byte; since then a byte can have come to
differ only where one side changed. So each point compares the pages where this model made
something durable, and the pages where the crash state's guaranteed image may have changed
(``CrashState.changed_pages``: media pages replaced since, by identity, which the simulator
must do because it freezes the pages a state holds; and the pages with stores in flight
then or now). Work per point follows what changed, not the pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..enums import Granularity

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState

__all__ = ["DurabilityModel", "DurabilityViolation"]

LINE = 64
PAGE = 4096
PAGE_LINES = PAGE // LINE


class DurabilityViolation(AssertionError):
    """The simulator lost data that was guaranteed durable (a bug in pmemsim: please report)."""


class _Pending:
    """A piece of a store inside one line, not yet durable."""

    __slots__ = ("data", "flushed", "nontemporal", "offset")

    def __init__(self, offset: int, data: bytes, nontemporal: bool, flushed: bool = False) -> None:
        self.offset = offset
        self.data = data
        self.nontemporal = nontemporal
        self.flushed = flushed


class _Medium:
    """What the model knows of one medium."""

    def __init__(self) -> None:
        #: line index -> its pieces not yet durable, in program order (pieces never span
        #: lines, and stores to different lines never overlap, so per-line order is enough).
        self.lines: dict[int, list[_Pending]] = {}
        #: Lines holding a flushed or non-temporal piece: what the next fence makes durable.
        self.ready: set[int] = set()
        #: page -> (content of guaranteed bytes, mask: 0xFF where a guaranteed store wrote)
        self.pages: dict[int, tuple[bytearray, bytearray]] = {}
        #: Pages whose guaranteed bytes changed since the last comparison.
        self.touched: set[int] = set()

    def lines_in(self, lo: int, hi: int) -> list[int]:
        """Lines in ``[lo, hi)`` (line indexes) holding something in flight."""
        if hi - lo <= len(self.lines):
            return [n for n in range(lo, hi) if n in self.lines]
        return [n for n in self.lines if lo <= n < hi]

    def cut(self, start: int, end: int) -> None:
        """Drop ``[start, end)`` from every pending piece."""
        for n in self.lines_in(start // LINE, -(-end // LINE)):
            keep = []
            for p in self.lines[n]:
                lo, hi = p.offset, p.offset + len(p.data)
                if hi <= start or end <= lo:
                    keep.append(p)
                    continue
                if lo < start:
                    keep.append(_Pending(lo, p.data[: start - lo], p.nontemporal, p.flushed))
                if end < hi:
                    keep.append(_Pending(end, p.data[end - lo :], p.nontemporal, p.flushed))
            self._set(n, keep)

    def add(self, p: _Pending) -> None:
        self.lines.setdefault(p.offset // LINE, []).append(p)

    def _set(self, n: int, pieces: list[_Pending]) -> None:
        if pieces:
            self.lines[n] = pieces
        else:
            self.lines.pop(n, None)
            self.ready.discard(n)

    def make_durable(self, p: _Pending) -> None:
        off, data = p.offset, p.data  # inside one line, so inside one page
        page, o = divmod(off, PAGE)
        content, mask = self.pages.setdefault(page, (bytearray(PAGE), bytearray(PAGE)))
        content[o : o + len(data)] = data
        mask[o : o + len(data)] = b"\xff" * len(data)
        self.touched.add(page)

    def apply(self, n: int, durable: Any) -> None:
        """Make line ``n``'s pieces that ``durable`` accepts durable, in program order."""
        keep = []
        for p in self.lines.get(n, ()):  # program order: later stores to the same bytes win
            if durable(p):
                self.make_durable(p)
            else:
                keep.append(p)
        self._set(n, keep)


def _flushed(p: _Pending) -> bool:
    return p.flushed


def _fenced(p: _Pending) -> bool:
    return p.flushed or p.nontemporal


class DurabilityModel:
    """Follows the operations of one run (a Machine tap) at one granularity."""

    def __init__(self, granularity: Granularity, *, clflush: bool = False) -> None:
        self.granularity = granularity
        self.clflush = clflush
        self.media: dict[int, tuple[Any, _Medium]] = {}
        # A fence or an msync is tapped before it takes effect, and a crash point "before"
        # it is captured in between: its effect waits until the run moves on.
        self._deferred: Any = None
        # The state compared last: the two sides agreed on every durable byte there.
        self._last: CrashState | None = None

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
        g = self.granularity
        if op.kind == "store":
            m = self._medium(op.medium)
            if g == Granularity.BYTE and not op.nontemporal:
                # Durable at once; an older store still in flight to the same bytes can never
                # land over it (a core's stores to one address stay in program order).
                m.cut(op.offset, op.offset + op.length)
                _split(op.offset, op.data, m.make_durable, False)
                return
            # Split at line boundaries: a flush covers whole lines.
            _split(op.offset, op.data, m.add, op.nontemporal)
            if op.nontemporal:
                # A non-temporal store evicts the lines it hits first: what is pending there
                # gets flushed.
                for n in range(op.offset // LINE, (op.offset + op.length - 1) // LINE + 1):
                    for p in m.lines[n]:
                        if not p.nontemporal:
                            p.flushed = True
                    m.ready.add(n)
        elif op.kind == "flush":
            if g == Granularity.BYTE:
                return
            m = self._medium(op.medium)
            lines = self._mark_flushed(m, op)
            if g == Granularity.PAGE or self.clflush:
                for n in lines:
                    m.apply(n, _flushed)
        elif op.kind == "fence":
            if g != Granularity.PAGE:
                self._fence_all()
        elif op.kind == "deep_flush":
            self._deep_flush(self._medium(op.medium), op)

    def _mark_flushed(self, m: _Medium, op: Any) -> list[int]:
        """Flush the lines (pages) the flush covers: their write-back pieces issued so far."""
        unit = PAGE if self.granularity == Granularity.PAGE else LINE
        lo = (op.offset - op.offset % unit) // LINE
        hi = -(-(op.offset + op.length) // unit) * unit // LINE
        lines = m.lines_in(lo, hi)
        for n in lines:
            for p in m.lines[n]:
                if not p.nontemporal:
                    p.flushed = True
            m.ready.add(n)
        return lines

    def _fence_all(self) -> None:
        for _, m in self.media.values():
            ready, m.ready = m.ready, set()
            for n in ready:
                m.apply(n, _fenced)

    def _deep_flush(self, m: _Medium, op: Any) -> None:
        # A deep flush flushes its range and fences (the whole machine's flushes).
        g = self.granularity
        lines = self._mark_flushed(m, op) if g != Granularity.BYTE else []
        if g == Granularity.PAGE:
            for n in lines:
                m.apply(n, _flushed)
        else:
            self._fence_all()

    def verify(self, state: CrashState, where: str, *, before_barrier: bool) -> None:
        """Raise DurabilityViolation if ``state``'s guaranteed image lacks a durable byte.

        ``before_barrier``: the state was captured just before the barrier tapped last takes
        effect (see on_op); the caller settles it once the barrier has taken effect.
        States must come in program order, all from the run this model follows."""
        if not before_barrier:
            self.settle()
        last, self._last = self._last, state
        for mi, medium in enumerate(state.media):
            hit = self.media.get(id(medium))
            if hit is None or hit[0] is not medium:
                continue
            m = hit[1]
            pages = set(state.changed_pages(last, mi))
            pages.update(m.touched)
            m.touched.clear()
            for p in sorted(pages):
                if p in m.pages:
                    self._compare(state, mi, p, m.pages[p], where)

    @staticmethod
    def _compare(
        state: CrashState, mi: int, page: int, held: tuple[bytearray, bytearray], where: str
    ) -> None:
        # The guaranteed image is the media: every unit's floor is, by definition, the option
        # whose content is its durable (media) content, so no unit needs patching in.
        content, mask = held
        medium = state.media[mi]
        got = state.snapshots[mi].page(page)
        m = int.from_bytes(mask, "little")
        if int.from_bytes(got, "little") & m != int.from_bytes(content, "little") & m:
            bad = next(i for i in range(PAGE) if mask[i] and got[i] != content[i])
            raise DurabilityViolation(
                f"{where}: byte +0x{page * PAGE + bad:x} of {medium.label} was made "
                f"durable as 0x{content[bad]:02x} but a crash image can hold "
                f"0x{got[bad]:02x}; this is a pmemsim bug"
            )


def _split(offset: int, data: bytes, put: Any, nontemporal: bool) -> None:
    """Hand ``put`` the store's pieces, cut at line boundaries."""
    pos = 0
    n = len(data)
    while pos < n:
        take = min(LINE - (offset + pos) % LINE, n - pos)
        put(_Pending(offset + pos, data[pos : pos + take], nontemporal))
        pos += take
