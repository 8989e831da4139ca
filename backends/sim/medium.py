"""One simulated persistent device region: what the media holds and what is still in flight.

A medium keeps three things:

* ``media``: the bytes that are durable no matter when power fails (4 KiB pages, created on
  first touch, so a 64 GiB source costs memory only for what was touched);
* ``visible``: the bytes a load sees (media plus every store issued so far);
* ``pending``: the stores that are visible but not yet guaranteed, in program order, as
  records ``(seq, offset, data, nontemporal, code, lasti)`` (the issuing frame kept inline:
  one tuple less per store). A record is kept whole (a 1 MiB copy is
  one record) and cut into cache lines and 8-byte atoms only when crash images are built.

A record leaves ``pending`` when it becomes guaranteed: at a fence for the parts covered by an
earlier flush of their line (and for every non-temporal record), at once for an msync (PAGE)
or a clflush. Its bytes are then written into ``media``. Media pages are copy-on-write, so a
snapshot for crash images costs the pages changed since the previous one: the media as of
each snapshot is a persistent map (pagemap.py) that shares everything unchanged with the
one before, and the pages it holds are frozen into ``bytes`` so nothing can change them.

Guaranteed is not deep-flushed: a fence only brings data to the memory controller's queues,
which an unsafe shutdown (ADR failure) may lose. ``deep`` keeps, for every page written since
its last deep flush, the page as the last deep flush left it (saved copy-on-write at the first
write after it), so an unsafe-shutdown crash can revert a unit to it. At PAGE granularity an
msync already reaches the device, so nothing is kept.

``badblocks`` is the source's list of bad blocks, shared with the backend (injected and
cleared there): loads through a map check it, and it is empty on the fast path.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping
from types import CodeType
from typing import TYPE_CHECKING

from pmemsim.enums import Granularity
from pmemsim.errors import PoisonError
from pmemsim.provenance import Frame, Provenance

from .intervals import IntervalSet
from .lint import FindingKind, LintLog
from .pagemap import PageMap

if TYPE_CHECKING:  # (events only for annotations: crash-state readers need none of them)
    from pmemsim.events import BadBlock

    from .machine import Machine

__all__ = ["PAGE", "Flush", "LintMark", "Medium", "Rec", "lint_mark"]

PAGE_SHIFT = 12
PAGE = 1 << PAGE_SHIFT
PAGE_MASK = PAGE - 1
ATOM = 8
LINE = 64

#: (seq, offset, data, nontemporal, code, lasti): ``(code, lasti)`` is the issuing frame.
#: ``data`` is a bytearray only while store_wb may still extend the record.
Rec = tuple[int, int, bytes | bytearray, bool, CodeType, int]
#: (seq, start, end, provenance): a flush awaiting its fence, already unit-aligned.
Flush = tuple[int, int, int, Provenance]
#: See :func:`lint_mark`.
LintMark = tuple[int, int, int]

Loader = Callable[[int], bytes]

_ZERO_PAGE = bytes(PAGE)


class Medium:
    """The content and in-flight stores of one source, as one simulated device holds it."""

    __slots__ = (
        "_frozen",
        "_initial_loader",
        "_owned",
        "_touched",
        "_touched_limit",
        "badblocks",
        "changed",
        "deep",
        "flush_unit",
        "granularity",
        "ident",
        "initial",
        "key",
        "label",
        "lint_mark",
        "loader",
        "machine",
        "media",
        "nt_pending",
        "pending",
        "runs",
        "size",
        "source_ident",
        "unit",
        "visible",
        "wb_durable",
        "_tail",
        "_tail_bounds",
        "_tail_seq",
        "__weakref__",
    )

    def __init__(
        self,
        machine: Machine,
        ident: int,
        label: str,
        size: int,
        granularity: Granularity,
        unit: int,
        loader: Loader | None = None,
        base_pages: Mapping[int, bytes | bytearray] | None = None,
        source_ident: int = 0,
        badblocks: list[BadBlock] | None = None,
        key: tuple[object, ...] | None = None,
    ) -> None:
        self.machine = machine
        #: The pmemsim Source this medium holds the content of (its ``ident``).
        self.source_ident = source_ident
        self.ident = ident
        self.label = label
        self.size = size
        self.granularity = granularity
        #: Persistence unit for the prefix rule: 64 (line), 4096 (page) or 512 (sector).
        self.unit = unit
        #: What one flush covers at least: a line, or a page for msync.
        self.flush_unit = PAGE if granularity == Granularity.PAGE else LINE
        #: eADR: write-back stores are durable as soon as they are visible.
        self.wb_durable = granularity == Granularity.BYTE
        self.loader = loader
        #: Pages touched so far (a page of the base is fetched from ``_frozen`` on first use).
        #: A page that ``_owned`` lacks is shared with a snapshot: copy it before writing.
        self.media: dict[int, bytes | bytearray] = {}
        # The media as of the last snapshot (at first: the base).
        self._frozen: PageMap[bytes | bytearray] = PageMap.of(base_pages or {})
        #: What the medium started from (see initial_page).
        self.initial: PageMap[bytes | bytearray] = self._frozen
        self._initial_loader = loader
        # Pages created or copied since the last snapshot: no snapshot shares them.
        self._owned: set[int] = set()
        self.visible: dict[int, bytearray] = {}
        self.pending: list[Rec] = []
        # The record the last write-back store made or extended, and that store's sequence
        # number (see store_wb).
        self._tail: Rec | None = None
        self._tail_seq = -2
        # The entry of runs of the last record that became a run (kept here: store_wb's hot
        # path), extended while that record is the tail; None without lint, whose store
        # path keeps no runs (a store's data is bytes, so every record becomes a run by
        # the branch that sets this).
        self._tail_bounds: array[int] | None = None
        #: A pending record that is a run of stores (see store_wb), by its sequence number ->
        #: its stores' boundaries: store ``k`` (number ``seq + k``) wrote ``[b[k], b[k+1])``.
        #: Lint counts the stores a finding covers by them; without lint it stays empty.
        self.runs: dict[int, array[int]] = {}
        self.nt_pending = 0
        #: Media pages changed since load: what a file receives at write-back.
        self.changed: set[int] = set()
        # Ranges that became durable, merged lazily (for the statistics).
        self._touched: list[tuple[int, int]] = []
        self._touched_limit = 4096
        #: Pages written since their last deep flush -> their content as of it (never changed
        #: in place once stored: crash states share them). None at PAGE (msync is deep).
        self.deep: dict[int, bytes | bytearray] | None = (
            None if granularity == Granularity.PAGE else {}
        )
        #: The source's bad blocks (the backend's list, shared); empty for most media.
        self.badblocks: list[BadBlock] = badblocks if badblocks is not None else []
        #: What the backend files devices and bad blocks under (None: anonymous memory).
        self.key = key
        #: Where the last epoch lint stopped (see :func:`lint_mark`).
        self.lint_mark: LintMark = (0, 0, 0)

    # -- loads -------------------------------------------------------------------------

    def _base_page(self, p: int) -> bytes | bytearray:
        page = self.media.get(p)
        if page is None:
            page = self._frozen.get(p)
            if page is not None:  # from the base: shared, never written in place
                self.media[p] = page
                return page
            raw = self.loader(p) if self.loader is not None else _ZERO_PAGE
            page = bytearray(raw)
            if len(page) < PAGE:
                page.extend(bytes(PAGE - len(page)))
            self.media[p] = page
            self._owned.add(p)
        return page

    def _visible_page(self, p: int) -> bytearray:
        page = self.visible.get(p)
        if page is None:
            page = bytearray(self._base_page(p))
            self.visible[p] = page
        return page

    def read(self, off: int, n: int) -> bytes:
        p = off >> PAGE_SHIFT
        o = off & PAGE_MASK
        if o + n <= PAGE:
            seen = self.visible.get(p)
            return bytes((self._base_page(p) if seen is None else seen)[o : o + n])
        out = bytearray()
        end = off + n
        while off < end:
            p = off >> PAGE_SHIFT
            o = off & PAGE_MASK
            take = min(PAGE - o, end - off)
            seen = self.visible.get(p)
            out += (self._base_page(p) if seen is None else seen)[o : o + take]
            off += take
        return bytes(out)

    def poisoned(self, off: int, n: int) -> PoisonError | None:
        """The error a load of ``[off, off + n)`` raises, if it touches a bad block."""
        end = off + n
        for bb in self.badblocks:  # sorted by offset: the first hit is the lowest byte
            if bb.offset < end and off < bb.offset + bb.length:
                return PoisonError(offset=max(off, bb.offset), source=self.label, badblock=bb)
        return None

    def read_media(self, off: int, n: int) -> bytes:
        """Durable content only (what survives any crash right now)."""
        out = bytearray()
        end = off + n
        while off < end:
            p = off >> PAGE_SHIFT
            o = off & PAGE_MASK
            take = min(PAGE - o, end - off)
            out += self._base_page(p)[o : o + take]
            off += take
        return bytes(out)

    # -- stores ------------------------------------------------------------------------

    def _write_visible(self, off: int, data: bytes) -> None:
        pos = 0
        n = len(data)
        src = memoryview(data)  # slices without copying
        while pos < n:
            p = (off + pos) >> PAGE_SHIFT
            o = (off + pos) & PAGE_MASK
            take = min(PAGE - o, n - pos)
            page = self.visible.get(p)
            if page is None:
                page = self._visible_page(p)
            page[o : o + take] = src[pos : pos + take]
            pos += take

    def write_media(self, off: int, data: bytes | bytearray | memoryview) -> None:
        pos = 0
        n = len(data)
        src = memoryview(data)  # slices without copying
        media, owned, deep = self.media, self._owned, self.deep
        while pos < n:
            p = (off + pos) >> PAGE_SHIFT
            o = (off + pos) & PAGE_MASK
            take = min(PAGE - o, n - pos)
            held = media.get(p)
            if held is None:
                held = self._base_page(p)  # fresh and ours, or shared with the base
            if p in owned:
                page: bytearray = held  # type: ignore[assignment]  # owned pages are bytearrays
            else:  # shared with a snapshot: copy before writing
                if deep is not None and p not in deep:
                    deep[p] = held  # the shared page is the deep content: no extra copy
                page = media[p] = bytearray(held)
                owned.add(p)
            if deep is not None and p not in deep:
                page = self._keep_deep(p, page)
            page[o : o + take] = src[pos : pos + take]
            self.changed.add(p)
            pos += take
        touched = self._touched
        touched.append((off, off + n))
        if len(touched) > self._touched_limit:
            # Merged as it grows (not only when asked), so that a long run's memory stays
            # the ranges it touched, not one entry per store made durable.
            self.durable_ranges()
            self._touched_limit = 2 * len(self._touched) + 4096

    def _keep_deep(self, p: int, page: bytearray) -> bytearray:  # page: owned, so mutable
        """First write to page ``p`` since its last deep flush: keep what the flush left.

        Returns the page to write into (a copy when the old one must stay as it is).
        """
        assert self.deep is not None
        if self.loader is None and p not in self.changed:
            # Never written and loaded from nothing: all zeros, no copy needed.
            self.deep[p] = _ZERO_PAGE
            return page
        self.deep[p] = page
        page = self.media[p] = bytearray(page)
        return page

    def deep_clean(self, start: int, end: int) -> None:
        """``[start, end)`` reached the media through a deep flush: no unsafe shutdown loses it."""
        deep = self.deep
        if not deep or start >= end:
            return
        first, last = start >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        if last - first + 1 <= len(deep):
            pages = [p for p in range(first, last + 1) if p in deep]
        else:  # a deep flush of a huge range (a whole part map): walk the kept pages instead
            pages = [p for p in deep if first <= p <= last]
        for p in pages:
            lo = max(start, p << PAGE_SHIFT) & PAGE_MASK
            hi = min(end, (p + 1) << PAGE_SHIFT) - (p << PAGE_SHIFT)
            current = self._base_page(p)
            if lo == 0 and hi == PAGE:
                del deep[p]
                continue
            kept = bytearray(deep[p])  # never in place: crash states may share the old one
            kept[lo:hi] = current[lo:hi]
            if kept == current:
                del deep[p]
            else:
                deep[p] = kept

    def store_wb(self, off: int, data: bytes, code: CodeType, lasti: int) -> int:
        """An ordinary write-back store that is not durable at once (not BYTE): the hot path.

        Loads see it at once; it stays pending, whatever becomes of it on power failure.
        Returns its sequence number.
        """
        machine = self.machine
        n = len(data)
        machine.stores += 1
        machine.store_bytes += n
        machine.since_barrier = True
        o = off & PAGE_MASK
        if o + n <= PAGE:
            page = self.visible.get(off >> PAGE_SHIFT)
            if page is None:
                page = self._visible_page(off >> PAGE_SHIFT)
            page[o : o + n] = data
        else:
            self._write_visible(off, data)
        seq = next(machine.seq)
        pending = self.pending
        if seq == self._tail_seq + 1 and not off & 7 and pending and pending[-1] is self._tail:
            # The previous event of the whole machine was a store to this medium, still the
            # last record: if it came from the same instruction and ends exactly here, at an
            # 8-byte boundary, extend it. Its atoms are the same ones in the same (program)
            # order, so no crash image changes, and a fence resolves one record, not thousands.
            last = self._tail
            if last[4] is code and last[5] == lasti and last[1] + len(last[2]) == off:
                buf = last[2]
                if type(buf) is not bytearray:  # its second store: the record becomes a run
                    buf = bytearray(buf)
                    last = pending[-1] = self._tail = (last[0], last[1], buf, False, code, lasti)
                    if machine.lint is not None:  # lint counts each store of a run
                        self._tail_bounds = self.runs[last[0]] = array("q", (last[1], off))
                buf += data
                self._tail_seq = seq
                bounds = self._tail_bounds
                if bounds is not None:
                    bounds.append(off + n)
                return seq
        rec = (seq, off, data, False, code, lasti)
        pending.append(rec)
        self._tail = rec
        self._tail_seq = seq
        return seq

    def store(self, off: int, data: bytes, frame: Frame, nontemporal: bool) -> int:
        """A store of ``data`` at ``off``; ``data`` must be immutable. Returns its sequence
        number."""
        if (not nontemporal or self.granularity == Granularity.PAGE) and not self.wb_durable:
            return self.store_wb(off, data, frame[0], frame[1])
        machine = self.machine
        machine.stores += 1
        machine.store_bytes += len(data)
        machine.since_barrier = True
        seq = next(machine.seq)
        n = len(data)
        self._write_visible(off, data)
        if nontemporal and self.granularity != Granularity.PAGE:
            if self.pending and not self.wb_durable:
                self._implicit_flush(seq, off, off + n, frame)
            self.pending.append((seq, off, data, True, frame[0], frame[1]))
            self.nt_pending += 1
            machine.unfenced.add(self)
        else:  # eADR: durable once visible
            if self.nt_pending:
                self._supersede_nt(off, off + n)
            self.write_media(off, data)
        return seq

    def _implicit_flush(self, seq: int, start: int, end: int, frame: Frame) -> None:
        """A non-temporal store evicts the lines it hits: earlier stores to them get flushed.

        Without this a later fence could make the non-temporal data durable underneath an
        older write-back store to the same bytes, which the hardware never does.
        """
        u = self.flush_unit
        lo, hi = start - start % u, -(-end // u) * u
        for _, roff, rdata, rnt, _, _ in self.pending:
            if not rnt and roff < hi and roff + len(rdata) > lo:
                self.machine.flushes.append((self, (seq, lo, hi, ())))
                return

    def _supersede_nt(self, start: int, end: int) -> None:
        """eADR: a newer write-back store wins over older pending non-temporal bytes."""
        self._cut_pending(start, end, nontemporal_only=True)

    def _cut_pending(self, start: int, end: int, nontemporal_only: bool) -> None:
        """Remove ``[start, end)`` from the pending records (only non-temporal ones if asked)."""
        kept: list[Rec] = []
        for rec in self.pending:
            seq, off, data, nt, code, lasti = rec
            rend = off + len(data)
            if (nontemporal_only and not nt) or rend <= start or off >= end:
                kept.append(rec)
                continue
            if off < start:
                kept.append((seq, off, data[: start - off], nt, code, lasti))
            if rend > end:
                kept.append((seq, end, data[end - off :], nt, code, lasti))
        self.pending = kept
        self.nt_pending = sum(1 for r in kept if r[3])
        self._forget_runs()

    def initial_page(self, p: int) -> bytes:
        """Page ``p`` as the medium started: durable before any store (independent checks
        start from it)."""
        page = self.initial.get(p)
        if page is not None:
            return bytes(page)
        loader = self._initial_loader  # a file's loader keeps what it read before a write-back
        raw = loader(p) if loader is not None else _ZERO_PAGE
        return raw + bytes(PAGE - len(raw)) if len(raw) < PAGE else bytes(raw)

    def erase(self, start: int, end: int) -> None:
        """A cleared bad block: its content is gone, durable and in flight; it reads as zeros."""
        tap = self.machine.tap
        if tap is not None:  # not a program's operation, but it changes the media
            from .machine import Op

            tap(Op("erase", self, start, end - start, b"", False, ()))
        self._cut_pending(start, end, nontemporal_only=False)
        zeros = bytes(end - start)
        self.write_media(start, zeros)
        self._write_visible(start, zeros)
        # The kernel clears a block synchronously, through the device: no queue can lose it.
        self.deep_clean(start, end)

    # -- making stores durable ---------------------------------------------------------

    def align(self, start: int, end: int) -> tuple[int, int]:
        u = self.flush_unit
        return start - start % u, min(-(-end // u) * u, max(self.size, end))

    def resolve(self, flushes: list[Flush], fence_nt: bool, lint: LintLog | None) -> None:
        """Make durable what ``flushes`` (and, if ``fence_nt``, the fence) guarantee.

        A write-back record becomes durable where a flush issued after it covers its line;
        non-temporal records all become durable at a fence. Durable parts are written to the
        media in program order; the rest stays pending, cut at the flushed boundaries.
        """
        if lint is not None and self.granularity == Granularity.CACHE_LINE:
            self._lint_epoch(flushes, lint)
            self.lint_mark = lint_mark(self.pending, flushes)
        if not self.pending:
            return
        if (
            len(flushes) == 1
            and (fence_nt or not self.nt_pending)
            and self._resolve_one(flushes[0])
        ):
            return
        order = sorted(flushes, key=lambda f: f[0], reverse=True)
        cover = IntervalSet()
        j = 0
        keep: list[Rec] = []
        fold: list[Rec] = []
        for rec in reversed(self.pending):
            seq, off, data, nt, code, lasti = rec
            while j < len(order) and order[j][0] > seq:
                cover.add(order[j][1], order[j][2])
                j += 1
            if nt:
                if fence_nt:
                    fold.append(rec)
                else:
                    keep.append(rec)
                continue
            end = off + len(data)
            if not cover or not cover.overlaps(off, end):
                keep.append(rec)
                continue
            inside, outside = cover.split(off, end)
            for s, e in reversed(inside):
                fold.append((seq, s, data[s - off : e - off], False, code, lasti))
            for s, e in reversed(outside):
                keep.append((seq, s, data[s - off : e - off], False, code, lasti))
        for _, off, data, _, _, _ in reversed(fold):
            self.write_media(off, data)
        keep.reverse()
        if fold and not fence_nt and self.nt_pending:
            keep = _drop_older_nt(keep, fold)
        self.pending = keep
        self.nt_pending = sum(1 for r in keep if r[3])
        if not keep:
            self._drop_visible()
        self._forget_runs()

    def _resolve_one(self, flush: Flush) -> bool:
        """The common case of :meth:`resolve` (one flush, as ``persist`` issues), if it applies.

        Applies when every write-back record lies wholly inside or wholly outside the flushed
        range; returns False (changing nothing) when one would have to be cut. Non-temporal
        records are only present when the fence makes them durable.
        """
        fseq, lo, hi, _ = flush
        keep: list[Rec] = []
        fold: list[Rec] = []
        for rec in self.pending:
            seq, off, data, nt = rec[0], rec[1], rec[2], rec[3]
            end = off + len(data)
            if nt or (seq < fseq and lo <= off and end <= hi):
                fold.append(rec)
            elif seq > fseq or end <= lo or off >= hi:
                keep.append(rec)
            else:
                return False
        for rec in fold:  # pending is in program order, so fold is too
            self.write_media(rec[1], rec[2])
        self.pending = keep
        self.nt_pending = 0
        if not keep:
            self._drop_visible()
        self._forget_runs()
        return True

    def _forget_runs(self) -> None:
        """Drop the boundaries of runs no longer in flight."""
        runs = self.runs
        if not runs:
            return
        if not self.pending:
            runs.clear()
            return
        live = {r[0] for r in self.pending}
        for seq in [seq for seq in runs if seq not in live]:
            del runs[seq]

    def _drop_visible(self) -> None:
        """Nothing is in flight: loads see the media, so the copies loads saw go (memory then
        holds the pages with stores in flight twice, not every page ever stored to)."""
        self.visible.clear()
        self._tail = None

    def _lint_epoch(self, flushes: list[Flush], lint: LintLog) -> None:
        """Replay pending stores and this epoch's flushes in program order, noting misuse:
        flushes of clean lines or of lines flushed again, and overwrites of stores not yet
        durable.

        A fence lints its epoch (see resolve); the end of a run (or a ``lint()`` before it)
        lints the epoch no fence has ended yet, with its flushes still pending, as its fence
        would. An overwrite is noted by the stores issued since the last epoch lint of this
        medium (see :func:`lint_mark`): one seen before was noted then.
        """
        u = self.flush_unit
        if len(flushes) == 1 and len(self.pending) == 1:
            # One store, one flush (a persist): only a flush of clean lines can be wrong.
            fseq, start, end, prov = flushes[0]
            seq, off, data, nt = self.pending[0][:4]
            if not prov:
                return
            unstored = IntervalSet([(start, end)])
            if not nt and seq < fseq:
                unstored.remove(off - off % u, -(-(off + len(data)) // u) * u)
            for s, e in unstored:
                lint.add(FindingKind.CLEAN_FLUSH, self.label, s, e - s, prov, seq=fseq)
            return
        # (seq, 0 = store / 1 = flush, index): stores sort before a flush of equal seq.
        events = [(r[0], 0, i) for i, r in enumerate(self.pending)]
        events += [(f[0], 1, i) for i, f in enumerate(flushes)]
        events.sort()
        dirty = IntervalSet()  # lines with a store no flush has covered yet
        flushed = IntervalSet()  # lines flushed in this epoch with no store since
        unsafe = IntervalSet()  # bytes whose latest store is not yet durable
        owners: list[Rec] = []
        bound, run_seq, run_end = self.lint_mark
        for _, is_flush, i in events:
            if is_flush:
                fseq, start, end, prov = flushes[i]
                if not prov:  # implicit (a non-temporal store's eviction): not user code
                    continue
                for cs, ce in dirty.split(start, end)[1]:
                    again, clean = flushed.split(cs, ce)
                    for rs, re_ in again:
                        lint.add(
                            FindingKind.REDUNDANT_FLUSH, self.label, rs, re_ - rs, prov, seq=fseq
                        )
                    for rs, re_ in clean:
                        lint.add(FindingKind.CLEAN_FLUSH, self.label, rs, re_ - rs, prov, seq=fseq)
                dirty.remove(start, end)
                flushed.add(start, end)
                continue
            rec = self.pending[i]
            seq, off, data, nt = rec[0], rec[1], rec[2], rec[3]
            end = off + len(data)
            # Only the stores since the mark: a whole record, or what a run that was the
            # last record at the mark has grown by since (store_wb extends it in place).
            start = off if seq > bound else max(off, run_end) if seq == run_seq else end
            if start < end and unsafe.overlaps(start, end):
                _note_overwrites(self.label, rec, start, end, unsafe, owners, lint, self.runs)
            unsafe.add(off, end)
            owners.append(rec)
            lo, hi = off - off % u, -(-end // u) * u
            if nt:
                dirty.remove(lo, hi)
            else:
                dirty.add(lo, hi)
            flushed.remove(lo, hi)

    def _lint_in_flight(self, flushes: list[Flush], lint: LintLog) -> None:
        """Note each store not durable now: never flushed, flushed (by ``flushes``, the
        pending ones) but not fenced, or non-temporal and not fenced."""
        # A record may be a run of stores (see store_wb) spanning lines that were flushed
        # and lines that were not: each part is reported for what it is.
        label = self.label
        for rec, parts in Medium.flushed_parts(self, flushes):
            seq, off, data, nt, code, lasti = rec
            prov = ((code, lasti),)
            run = self.runs.get(seq)
            if nt:
                lint.add(FindingKind.UNDRAINED_NT_STORE, label, off, len(data), prov, seq=seq)
                continue
            pos = off
            for s, e in parts:
                if s > pos:
                    lint.add(FindingKind.UNFLUSHED_STORE, label, pos, s - pos, prov, (), seq, run)
                lint.add(FindingKind.UNFENCED_STORE, label, s, e - s, prov, (), seq, run)
                pos = e
            end = off + len(data)
            if pos < end:
                lint.add(FindingKind.UNFLUSHED_STORE, label, pos, end - pos, prov, (), seq, run)

    def flushed_parts(self, flushes: list[Flush]) -> list[tuple[Rec, list[tuple[int, int]]]]:
        """Each pending record with the parts of it that a pending flush issued later covers.

        A flush may cover only some lines of a record (a 128-byte store, one line flushed):
        those lines are flushed even though the record as a whole is not.
        """
        order = sorted(flushes, key=lambda f: f[0], reverse=True)
        cover = IntervalSet()
        j = 0
        out: list[tuple[Rec, list[tuple[int, int]]]] = []
        for rec in reversed(self.pending):
            while j < len(order) and order[j][0] > rec[0]:
                cover.add(order[j][1], order[j][2])
                j += 1
            parts = [] if rec[3] or not cover else cover.intersection(rec[1], rec[1] + len(rec[2]))
            out.append((rec, parts))
        out.reverse()
        return out

    def durable_ranges(self) -> IntervalSet:
        """Every range that ever became durable (merged on demand)."""
        merged = IntervalSet(self._touched)
        self._touched = list(merged)
        return merged

    # -- snapshots ---------------------------------------------------------------------

    def snapshot_pages(self) -> PageMap[bytes | bytearray]:
        """The media pages as of now, frozen; later changes copy a page before writing it.

        Costs the pages created or changed since the previous snapshot, not the pool."""
        owned = self._owned
        if owned:
            media = self.media
            changes: dict[int, bytes | bytearray | None] = {}
            for p in owned:
                page = media[p]
                if type(page) is bytearray:
                    page = media[p] = bytes(page)
                changes[p] = page
            self._frozen = self._frozen.updated(changes)
            owned.clear()
        return self._frozen

    def discard_visible(self) -> None:
        """Drop the cached view (after a crash only media content survives)."""
        self.visible.clear()
        self.pending.clear()
        self.runs.clear()
        self.nt_pending = 0


def _note_overwrites(
    label: str,
    rec: Rec,
    start: int,
    end: int,
    unsafe: IntervalSet,
    owners: list[Rec],
    lint: LintLog,
    runs: dict[int, array[int]],
) -> None:
    """Note where ``[start, end)`` of ``rec`` overwrites ``unsafe`` bytes (the bytes of the
    earlier records in flight, ``owners``; ``runs``: the medium's, see Medium.runs)."""
    # A record may be a run of stores (see store_wb): report the bytes that were
    # overwritten, each against the latest store that wrote them.
    # Bytes stored again with the value they held lose nothing: memcpy of an odd size
    # writes its tail as a word overlapping the previous one (10 bytes: at 0 and at 2).
    left = IntervalSet(unsafe.intersection(start, end))
    prov = ((rec[4], rec[5]),)
    off, data = rec[1], rec[2]
    for prev in reversed(owners):
        ps, pe = prev[1], prev[1] + len(prev[2])
        for s, e in left.intersection(ps, pe):
            if data[s - off : e - off] == prev[2][s - ps : e - ps]:
                continue
            lint.add(
                FindingKind.OVERWRITTEN_STORE,
                label,
                s,
                e - s,
                prov,
                ((prev[4], prev[5]),),
                rec[0],
                runs.get(rec[0]),
            )
        left.remove(ps, pe)
        if not left:
            break


def lint_mark(pending: list[Rec], flushes: list[Flush]) -> LintMark:
    """Where an epoch lint stops: ``(bound, run_seq, run_end)``.

    Every store issued later has a sequence number above ``bound``; the last record in
    flight (``run_seq``, ending at ``run_end``) is the one a later store may still extend.
    """
    bound = max((f[0] for f in flushes), default=0)
    if not pending:
        return bound, 0, 0
    last = pending[-1]
    return max(bound, last[0]), last[0], last[1] + len(last[2])


def _drop_older_nt(keep: list[Rec], fold: list[Rec]) -> list[Rec]:
    """Cut from ``keep`` the non-temporal bytes that a newer, now durable store overwrote.

    Only a clflush or an msync makes write-back stores durable without fencing the pending
    non-temporal ones. An older non-temporal store to the same bytes can no longer be what
    the media ends up holding: left pending, the next fence would write it over the newer
    store that the clflush guaranteed.
    """
    out: list[Rec] = []
    for rec in keep:
        seq, off, data, nt, code, lasti = rec
        if not nt:
            out.append(rec)
            continue
        left = IntervalSet([(off, off + len(data))])
        for fseq, foff, fdata, _, _, _ in fold:
            if fseq > seq:
                left.remove(foff, foff + len(fdata))
        for s, e in left:
            out.append((seq, s, data[s - off : e - off], True, code, lasti))
    return out
