"""The durability self-check of the lean log replay: an independent model, line by line.

:mod:`pmemsim.pmlog.fastreplay` keeps its own bookkeeping (store records, atoms per line,
flush numbers, durable content per line in flight, the image buffers). This module derives,
from the log's operations alone and straight from persistency.md's rules for write-back
stores on ADR (CACHE_LINE) hardware, what every line must hold, and compares the two at
every crash point:

* a store is visible at once and in flight until a flush of its line *issued after it* is
  followed by a fence (or a deep sync, which flushes its range and fences);
* what a fence makes durable lands in program order, line by line.

At a crash point, for every line compared, three things must agree: the durable content
(the guaranteed image: what the line holds if it loses everything in flight), the stores in
flight as 8-byte-aligned pieces in program order (every other image is built from them), and
the all-persisted content the image buffers show (durable content with every store in flight
applied: the image every other one is patched from).

Which lines: every line in flight now on either side, every line the model changed since
the previous crash point (a store, or a fence making something durable), and every line the
replay says it changed (its stores and folds: the only places it writes). A line that none of
these name has nothing in flight on either side, so both read its durable content from what
they held at the previous point, where they agreed, and neither changed it since: comparing
only these is as strict as comparing every line every time, at a cost that follows what
changed and what is in flight, not the pool. tests/test_pmlog_fast.py plants bugs in the
replay and sees each caught.

Bad blocks, non-temporal stores and other granularities do not occur in logs; the
simulator's own check (:mod:`pmemsim.explore.durability`) covers those on its side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..explore.durability import DurabilityViolation

__all__ = ["LineModel"]

LINE = 64
_ZERO_LINE = bytes(LINE)


class LineModel:
    """Follows a log's operations (:meth:`store`, :meth:`flush`, :meth:`fence`,
    :meth:`deep_sync`, called in the log's order as the replay runs past each one: a crash
    point before a fence or deep sync comes before the operation is heard of);
    :meth:`verify` compares a crash point with them."""

    def __init__(self, initial: list[Callable[[int, int], bytes] | None], labels: list[str]):
        #: Per pool: reads ``[offset, offset + 64)`` of the initial content (None: zeros).
        self._initial = initial
        self.labels = labels
        #: Per pool: line offset -> what the line holds for good, for every line read so
        #: far (its initial content until something is made durable in it).
        self.held: list[dict[int, bytes]] = [{} for _ in initial]
        #: Per pool: line offset -> [its pieces in flight in program order as ``(offset,
        #: data)``, its content with all of them persisted, its atoms in flight, how many of
        #: its pieces a flush has covered (a flush covers every piece issued before it, so
        #: the covered ones are always the first ones)]: a line in flight.
        self.pending: list[dict[int, list[Any]]] = [{} for _ in initial]
        #: Per pool: lines holding a flushed piece (what the next fence makes durable).
        self.ready: list[set[int]] = [set() for _ in initial]
        #: ``(pool, line offset)`` of every line changed since the last comparison (one
        #: set, as the replay names its changed lines: verify joins them in one step).
        self.touched: set[tuple[int, int]] = set()

    # -- operations ----------------------------------------------------------------------

    def store(self, pool: int, off: int, data: bytes) -> None:
        """A store, visible at once, in flight until a flush of its line and a fence."""
        line = off - off % LINE
        if off + len(data) > line + LINE:  # across lines: a piece per line
            end = off + len(data)
            while off < end:
                take = min(line + LINE, end) - off
                self.store(pool, off, data[:take])
                data = data[take:]
                off += take
                line += LINE
            return
        pending = self.pending[pool]
        got = pending.get(line)
        if got is None:
            got = pending[line] = [[], self.content(pool, line), (), 0]
        got[0].append((off, data))
        o = off - line
        whole = got[1]
        got[1] = whole[:o] + data + whole[o + len(data) :]
        got[2] += ((off, data),) if (off & 7) + len(data) <= 8 else _atoms(off, data)
        self.touched.add((pool, line))

    def flush(self, pool: int, off: int, length: int) -> None:
        """Flush the lines ``[off, off + length)`` meets: their pieces issued so far."""
        pending = self.pending[pool]
        lo, end = off - off % LINE, off + length
        if length > 0 and end - lo <= LINE:  # one line: the common case
            got = pending.get(lo)
            if got is not None:
                got[3] = len(got[0])
                self.ready[pool].add(lo)
            return
        if (end - lo) // LINE < len(pending):
            lines: Iterable[int] = [n for n in range(lo, end, LINE) if n in pending]
        else:
            lines = [n for n in pending if lo <= n < end]
        ready = self.ready[pool]
        for line in lines:
            got = pending[line]
            got[3] = len(got[0])
            ready.add(line)

    def fence(self) -> None:
        """What every flush so far covered becomes durable, line by line."""
        touched = self.touched
        for pool, ready in enumerate(self.ready):
            if not ready:
                continue
            pending, held = self.pending[pool], self.held[pool]
            for line in ready:
                got = pending[line]
                pieces, n = got[0], got[3]
                if n == len(pieces):
                    # Every piece: the line holds for good what it shows with all of them
                    # persisted (the pieces on what it held, as below, kept up to date by
                    # store(); an epoch of one store each ends so).
                    held[line] = got[1]
                    touched.add((pool, line))
                    del pending[line]
                    continue
                content = bytearray(held[line])  # held since the line came into flight
                for off, data in pieces[:n]:  # program order: later pieces win
                    content[off - line : off - line + len(data)] = data
                held[line] = bytes(content)
                touched.add((pool, line))
                kept = pieces[n:]
                got[0], got[3] = kept, 0
                got[2] = tuple(a for p in kept for a in _atoms(p[0], p[1]))
            ready.clear()

    def deep_sync(self, pool: int, off: int, length: int) -> None:
        """A deep sync: a flush of its range and a fence."""
        self.flush(pool, off, length)
        self.fence()

    # -- the rules' answers --------------------------------------------------------------

    def content(self, pool: int, line: int) -> bytes:
        """What the line holds for good (nothing in flight persisted)."""
        held = self.held[pool]
        got = held.get(line)
        if got is None:
            read = self._initial[pool]
            got = held[line] = _ZERO_LINE if read is None else read(line, LINE)
        return got

    # -- comparing -----------------------------------------------------------------------

    def verify(
        self,
        point: int,
        lines: Iterable[Any],
        buffers: list[Any],
        changed: Iterable[tuple[int, int]],
    ) -> None:
        """Compare a crash point of the replay with the rules.

        ``lines``: the crash state's lines in flight (``pool``, ``offset``, ``base``: the
        durable content, ``signature()``: the atoms as ``(offset, data)``); ``buffers``:
        per pool, the image buffer (what it shows is the all-persisted content);
        ``changed``: ``(pool, line)`` of every line the replay changed since the previous
        crash point. Raises DurabilityViolation, naming crash point ``point``."""
        pending_of, held_of = self.pending, self.held
        # Every line in flight in the state: in flight by the rules too, with the same
        # durable content (held since it came into flight), stores in flight and
        # all-persisted content.
        state: set[tuple[int, int]] = set()
        for x in lines:
            pool, line = key = (x.pool, x.offset)
            state.add(key)
            shown = buffers[pool][line : line + LINE]
            got = pending_of[pool].get(line)
            if (
                got is None
                or shown != got[1]
                or x.signature() != got[2]
                or x.base != held_of[pool].get(line)
            ):
                self._violation(point, pool, line, x, _padded(shown))
        # Every other line either side changed: in flight by neither, showing what it holds.
        others = set(changed)
        others |= self.touched
        self.touched.clear()
        others -= state
        for pool, line in others:
            shown = buffers[pool][line : line + LINE]
            # (What it holds: self.content, inline for a line read before, as every line
            # either side changed commonly was.)
            held = held_of[pool].get(line)
            if held is None:
                held = self.content(pool, line)
            if line in pending_of[pool] or shown != held:
                self._violation(point, pool, line, None, _padded(shown))
        # And no line in flight by the rules is missing from the state.
        if len(state) != sum(map(len, pending_of)):
            for pool, pending in enumerate(pending_of):
                for line in pending:
                    if (pool, line) not in state:
                        shown = _padded(buffers[pool][line : line + LINE])
                        self._violation(point, pool, line, None, shown)

    def _violation(self, point: int, pool: int, line: int, x: Any, shown: bytes) -> None:
        durable = self.content(pool, line)
        got = self.pending[pool].get(line)
        atoms, whole = (got[2], got[1]) if got is not None else ((), durable)
        label = f"the line at +0x{line:x} of {self.labels[pool]}"
        base, mine = (shown, ()) if x is None else (x.base, x.signature())
        if base != durable:
            problem = (
                f"{label} holds {base.hex()} for good, but the rules made {durable.hex()} durable"
            )
        elif mine != atoms:
            problem = (
                f"the stores in flight in {label} are {_show(mine)} but the rules leave "
                f"{_show(atoms)}"
            )
        else:
            problem = (
                f"with every store in flight persisted, {label} shows {shown.hex()} but its "
                f"stores make {whole.hex()}"
            )
        raise DurabilityViolation(f"crash point {point}: {problem}; this is a pmemsim bug")


def _padded(shown: bytes) -> bytes:
    """A line as a buffer shows it, zeros past the pool's end."""
    return shown if len(shown) == LINE else bytes(shown) + bytes(LINE - len(shown))


def _atoms(off: int, data: bytes) -> tuple[tuple[int, bytes], ...]:
    """A piece cut at 8-byte boundaries, as ``(offset, data)``."""
    if (off & 7) + len(data) <= 8:
        return ((off, data),)
    out = []
    pos = 0
    while pos < len(data):
        take = min(8 - (off + pos) % 8, len(data) - pos)
        out.append((off + pos, bytes(data[pos : pos + take])))
        pos += take
    return tuple(out)


def _show(atoms: Iterable[tuple[int, bytes]]) -> str:
    parts = [f"+0x{o:x}={d.hex()}" for o, d in atoms]
    return "[" + ", ".join(parts) + "]" if parts else "nothing"
