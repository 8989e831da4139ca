"""An independent check of the simulator's durability promise, run on every exploration.

The simulator folds guaranteed stores into its media by its own (optimised) bookkeeping. This
module re-derives, from the operation stream alone and straight from persistency.md, which
bytes must be durable at each crash point, and compares them with the crash state's
"nothing unguaranteed persisted" image. Every other image of a point only adds stores on
top of that one, so if it holds, data persisted before the crash point is in every image.
A disagreement is a bug in pmemsim, reported as :class:`DurabilityViolation`.

The model holds whole pages: a page starts as the medium's initial content (durable before
any store) and takes each store when the rules make it durable, so a page of the model is
exactly what the guaranteed image must hold there, byte for byte.

The comparison is incremental, and as strict as comparing every page at every point: at the
previous point the two sides agreed on every page; since then a page can have come to differ
only where one side changed. So each point compares the pages where this model made
something durable, and the pages where the crash state's guaranteed image may have changed
(``CrashState.changed_pages``: media pages replaced since, by identity, which the simulator
must do because it freezes the pages a state holds; and the pages with stores in flight
then or now). A page that agrees is then shared with the crash state (both are immutable
until the model copies it to write again), so memory follows the pages in flight, not the
pool. Work per point follows what changed, not the pool.

The guaranteed image says nothing about the stores still in flight, yet every other image
is built from them: a simulator that kept a stale store in flight, lost one, or cut one
wrongly would leave durable data intact in the guaranteed image and lose it in another. So
each point also compares every unit's stores in flight (its write-back atoms in program
order, its non-temporal atoms as a set) with the model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..enums import Granularity

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState

__all__ = ["DurabilityModel", "DurabilityViolation"]

LINE = 64
PAGE = 4096


class DurabilityViolation(AssertionError):
    """The simulator lost data that was guaranteed durable (a bug in pmemsim: please report)."""


class _Pending:
    """A piece of a store inside one line, not yet durable."""

    __slots__ = ("data", "flushed", "nontemporal", "offset", "seq")

    def __init__(
        self, seq: int, offset: int, data: bytes, nontemporal: bool, flushed: bool = False
    ) -> None:
        #: The store's place in program order (the pieces of one store share it).
        self.seq = seq
        self.offset = offset
        self.data = data
        self.nontemporal = nontemporal
        self.flushed = flushed


class _Medium:
    """What the model knows of one medium."""

    __slots__ = ("lines", "medium", "pages", "ready", "touched")

    def __init__(self, medium: Any) -> None:
        self.medium = medium
        #: line index -> its pieces not yet durable, in program order (pieces never span
        #: lines, and stores to different lines never overlap, so per-line order is enough).
        self.lines: dict[int, list[_Pending]] = {}
        #: Lines holding a flushed or non-temporal piece: what the next fence makes durable.
        self.ready: set[int] = set()
        #: page -> its guaranteed content (bytes: shared with a crash state that agreed).
        self.pages: dict[int, bytes | bytearray] = {}
        #: Pages whose guaranteed bytes changed since the last comparison.
        self.touched: set[int] = set()

    def expected(self, p: int) -> bytes | bytearray:
        """What page ``p`` of the guaranteed image must hold."""
        page = self.pages.get(p)
        return self.medium.initial_page(p) if page is None else page

    def lines_in(self, lo: int, hi: int) -> list[int]:
        """Lines in ``[lo, hi)`` (line indexes) holding something in flight."""
        if hi - lo <= len(self.lines):
            return [n for n in range(lo, hi) if n in self.lines]
        return [n for n in self.lines if lo <= n < hi]

    def add(self, p: _Pending) -> None:
        lst = self.lines.get(p.offset >> 6)
        if lst is None:
            self.lines[p.offset >> 6] = [p]
        else:
            lst.append(p)

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
                    keep.append(_Pending(p.seq, lo, p.data[: start - lo], p.nontemporal, p.flushed))
                if end < hi:
                    keep.append(_Pending(p.seq, end, p.data[end - lo :], p.nontemporal, p.flushed))
            self._set(n, keep)

    def _set(self, n: int, pieces: list[_Pending]) -> None:
        if pieces:
            self.lines[n] = pieces
        else:
            self.lines.pop(n, None)
            self.ready.discard(n)

    def write(self, off: int, data: bytes) -> None:
        """``data`` at ``off`` is durable now (it lies inside one page)."""
        p = off >> 12
        page = self.pages.get(p)
        if type(page) is not bytearray:  # absent, or shared with a crash state: copy
            page = self.pages[p] = bytearray(self.expected(p))
        o = off & (PAGE - 1)
        page[o : o + len(data)] = data
        self.touched.add(p)

    def apply(self, n: int, durable: Any) -> None:
        """Make line ``n``'s pieces that ``durable`` accepts durable, in program order."""
        keep = []
        folded = []
        for p in self.lines.get(n, ()):  # program order: later stores to the same bytes win
            if durable(p):
                self.write(p.offset, p.data)
                folded.append(p)
            else:
                keep.append(p)
        if durable is _flushed and folded and any(p.nontemporal for p in keep):
            keep = _without_older_nt(keep, folded)
        self._set(n, keep)


def _flushed(p: _Pending) -> bool:
    return p.flushed


def _without_older_nt(keep: list[_Pending], folded: list[_Pending]) -> list[_Pending]:
    """A clflush or msync made write-back stores durable without fencing the non-temporal
    ones still in flight: an older non-temporal store to the same bytes can no longer be
    what the media ends up holding (the newer store is durable), so those bytes leave it."""
    out: list[_Pending] = []
    for p in keep:
        parts = [p]
        if p.nontemporal:
            for f in folded:
                if f.seq > p.seq:
                    parts = [c for q in parts for c in _minus(q, f.offset, f.offset + len(f.data))]
        out += parts
    return out


def _minus(p: _Pending, start: int, end: int) -> list[_Pending]:
    lo, hi = p.offset, p.offset + len(p.data)
    if hi <= start or end <= lo:
        return [p]
    out = []
    if lo < start:
        out.append(_Pending(p.seq, lo, p.data[: start - lo], p.nontemporal, p.flushed))
    if end < hi:
        out.append(_Pending(p.seq, end, p.data[end - lo :], p.nontemporal, p.flushed))
    return out


def _fenced(p: _Pending) -> bool:
    return p.flushed or p.nontemporal


class DurabilityModel:
    """Follows the operations of one run (a Machine tap) at one granularity."""

    def __init__(self, granularity: Granularity, *, clflush: bool = False) -> None:
        self.granularity = granularity
        self.clflush = clflush
        self.byte = granularity == Granularity.BYTE
        self.page = granularity == Granularity.PAGE
        #: A flush that guarantees by itself (msync, Intel's clflush) is a barrier.
        self.flush_barrier = self.page or clflush
        self.media: dict[int, _Medium] = {}
        self._last_medium: Any = None
        self._last_model: _Medium | None = None
        # A fence or an msync is tapped before it takes effect, and a crash point "before"
        # it is captured in between: its effect waits until the run moves on.
        self._deferred: Any = None
        # The state compared last: the two sides agreed on every page there.
        self._last: CrashState | None = None
        self.seq = 0
        #: Compare the stores in flight at every point too (see the module docstring).
        self.check_in_flight = True

    def _medium(self, medium: Any) -> _Medium:
        if medium is self._last_medium:
            assert self._last_model is not None
            return self._last_model
        hit = self.media.get(id(medium))
        if hit is None or hit.medium is not medium:
            hit = self.media[id(medium)] = _Medium(medium)
        self._last_medium, self._last_model = medium, hit
        return hit

    def on_op(self, op: Any) -> None:
        if self._deferred is not None:
            self.settle()
        kind = op.kind
        if kind == "store":
            self._store(op)
        elif kind == "fence" or (kind == "flush" and self.flush_barrier):
            self._deferred = op
        else:
            self._effect(op)

    def settle(self) -> None:
        op, self._deferred = self._deferred, None
        if op is not None:
            self._effect(op)

    def _store(self, op: Any) -> None:
        m = self._medium(op.medium)
        off, data, nt = op.offset, op.data, op.nontemporal
        self.seq += 1
        seq = self.seq
        if self.byte and not nt:
            # Durable at once; an older store still in flight to the same bytes can never
            # land over it (a core's stores to one address stay in program order).
            end = off + len(data)
            if m.lines:
                m.cut(off, end)
            pos = 0
            while pos < len(data):  # cut at page boundaries
                take = min(PAGE - (off + pos) % PAGE, len(data) - pos)
                m.write(off + pos, data[pos : pos + take])
                pos += take
            return
        if (off & 63) + len(data) <= LINE:
            m.add(_Pending(seq, off, data, nt))
        else:  # cut at line boundaries: a flush covers whole lines
            pos = 0
            while pos < len(data):
                take = min(LINE - (off + pos) % LINE, len(data) - pos)
                m.add(_Pending(seq, off + pos, data[pos : pos + take], nt))
                pos += take
        if nt:
            # A non-temporal store evicts the lines it hits first: what is pending there
            # gets flushed.
            for n in range(off // LINE, (off + len(data) - 1) // LINE + 1):
                for p in m.lines[n]:
                    if not p.nontemporal:
                        p.flushed = True
                m.ready.add(n)

    def _effect(self, op: Any) -> None:
        kind = op.kind
        if kind == "flush":
            if self.byte:
                return
            m = self._medium(op.medium)
            lines = self._mark_flushed(m, op)
            if self.flush_barrier:
                for n in lines:
                    m.apply(n, _flushed)
        elif kind == "fence":
            if not self.page:
                self._fence_all()
        elif kind == "deep_flush":
            self._deep_flush(self._medium(op.medium), op)
        elif kind == "erase":  # a cleared bad block: zeros, durable at once, nothing in flight
            m = self._medium(op.medium)
            m.cut(op.offset, op.offset + op.length)
            pos, end = op.offset, op.offset + op.length
            while pos < end:
                take = min(PAGE - pos % PAGE, end - pos)
                m.write(pos, bytes(take))
                pos += take
        elif kind == "store":  # pragma: no cover - on_op handles stores itself
            self._store(op)

    def _mark_flushed(self, m: _Medium, op: Any) -> list[int]:
        """Flush the lines (pages) the flush covers: their write-back pieces issued so far."""
        unit = PAGE if self.page else LINE
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
        for m in self.media.values():
            if m.ready:
                ready, m.ready = m.ready, set()
                for n in ready:
                    m.apply(n, _fenced)

    def _deep_flush(self, m: _Medium, op: Any) -> None:
        # A deep flush flushes its range and fences (the whole machine's flushes).
        lines = self._mark_flushed(m, op) if not self.byte else []
        if self.page:
            for n in lines:
                m.apply(n, _flushed)
        else:
            self._fence_all()

    def expected_page(self, medium: Any, p: int) -> bytes | bytearray:
        """What page ``p`` of ``medium``'s guaranteed image must hold now."""
        hit = self.media.get(id(medium))
        if hit is None or hit.medium is not medium:
            return bytes(medium.initial_page(p))
        return hit.expected(p)

    def verify(self, state: CrashState, where: str, *, before_barrier: bool) -> None:
        """Raise DurabilityViolation if ``state``'s guaranteed image is not what the rules
        made durable.

        ``before_barrier``: the state was captured just before the barrier tapped last takes
        effect (see on_op); the caller settles it once the barrier has taken effect.
        States must come in program order, all from the run this model follows."""
        if not before_barrier:
            self.settle()
        last, self._last = self._last, state
        for mi, medium in enumerate(state.media):
            m = self.media.get(id(medium))
            if m is not None and m.medium is not medium:
                m = None
            pages = state.changed_pages(last, mi)
            if m is not None and m.touched:
                pages = sorted(m.touched.union(pages))
                m.touched.clear()
            frozen = state.snapshots[mi].pages
            for p in pages:
                # The guaranteed image is the media: every unit's floor is, by definition,
                # the option whose content is its durable (media) content.
                got = frozen.get(p)
                want = medium.initial_page(p) if m is None else m.expected(p)
                if got is None:
                    got = state.snapshots[mi].page(p)
                if got != want:
                    _violation(where, medium.label, p, got, want)
                if m is not None and type(got) is bytes:
                    m.pages[p] = got  # equal and immutable: share it
        if self.check_in_flight:
            self._compare_in_flight(state, where)

    def _compare_in_flight(self, state: CrashState, where: str) -> None:
        """Every unit's stores in flight, atom by atom, against the model's."""
        seen: set[tuple[int, int]] = set()
        models = []
        for medium in state.media:
            m = self.media.get(id(medium))
            models.append(m if m is not None and m.medium is medium else None)
        for u in state.units:
            mi, offset = u.medium_index, u.offset
            seen.add((mi, offset))
            m = models[mi]
            pieces = [] if m is None else _pieces(m, offset, u.size)
            wb = [a for p in pieces if not p.nontemporal for a in _atoms(p)]
            got_wb = [(a.offset, a.data) for a in u.wb]
            nt: list[tuple[int, bytes]] = []
            got_nt: list[tuple[int, bytes]] = []
            if u.nt_groups or any(p.nontemporal for p in pieces):
                nt = sorted(a for p in pieces if p.nontemporal for a in _atoms(p))
                got_nt = sorted((a.offset, a.data) for g in u.nt_groups for a in g)
            if wb != got_wb or nt != got_nt:
                self._in_flight_violation(state, where, mi, offset, got_wb, got_nt, wb, nt)
        # Stores the model has in flight where the state has no unit at all.
        for mi, m in enumerate(models):
            if m is None or not m.lines:
                continue
            size = state.media[mi].unit
            for n in m.lines:
                at = n * LINE - n * LINE % size
                if (mi, at) not in seen:
                    pieces = _pieces(m, at, size)
                    wb = [a for p in pieces if not p.nontemporal for a in _atoms(p)]
                    nt = sorted(a for p in pieces if p.nontemporal for a in _atoms(p))
                    self._in_flight_violation(state, where, mi, at, [], [], wb, nt)

    @staticmethod
    def _in_flight_violation(
        state: CrashState,
        where: str,
        mi: int,
        offset: int,
        got_wb: list[tuple[int, bytes]],
        got_nt: list[tuple[int, bytes]],
        wb: list[tuple[int, bytes]],
        nt: list[tuple[int, bytes]],
    ) -> None:
        raise DurabilityViolation(
            f"{where}: the stores in flight in the unit at +0x{offset:x} of "
            f"{state.media[mi].label} are {_show(got_wb, got_nt)} but the rules "
            f"leave {_show(wb, nt)}; this is a pmemsim bug"
        )


def _pieces(m: _Medium, offset: int, size: int) -> list[_Pending]:
    """The model's pieces in flight in the unit ``[offset, offset + size)``, in program
    order."""
    if size == LINE:
        return m.lines.get(offset >> 6, [])  # one line: already in program order
    found = [p for n in m.lines_in(offset >> 6, (offset + size) >> 6) for p in m.lines[n]]
    found.sort(key=lambda p: (p.seq, p.offset))
    return found


def _atoms(p: _Pending) -> list[tuple[int, bytes]]:
    """A piece cut at 8-byte boundaries, as the simulator cuts stores into atoms."""
    if (p.offset & 7) + len(p.data) <= 8:
        return [(p.offset, p.data)]
    out = []
    pos, data = 0, p.data
    while pos < len(data):
        take = min(8 - (p.offset + pos) % 8, len(data) - pos)
        out.append((p.offset + pos, bytes(data[pos : pos + take])))
        pos += take
    return out


def _show(wb: list[tuple[int, bytes]], nt: list[tuple[int, bytes]]) -> str:
    parts = [f"+0x{o:x}={d.hex()}" for o, d in wb] + [f"+0x{o:x}={d.hex()} (nt)" for o, d in nt]
    return "[" + ", ".join(parts) + "]" if parts else "nothing"


def _violation(where: str, label: str, page: int, got: bytes, want: bytes | bytearray) -> None:
    bad = next(i for i in range(PAGE) if got[i] != want[i])
    raise DurabilityViolation(
        f"{where}: byte +0x{page * PAGE + bad:x} of {label} was made durable as "
        f"0x{want[bad]:02x} but a crash image can hold 0x{got[bad]:02x}; this is a pmemsim bug"
    )
