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

__all__ = ["DEEP", "FENCE", "FLUSH", "STORE", "LineModel"]

LINE = 64
_ZERO_LINE = bytes(LINE)
#: Operation kinds in the queue (LineModel.ops).
STORE, FLUSH, FENCE, DEEP = range(4)


class LineModel:
    """Follows a log's operations; :meth:`verify` compares a crash point with them."""

    def __init__(self, initial: list[Callable[[int, int], bytes] | None], labels: list[str]):
        #: Per pool: reads ``[offset, offset + 64)`` of the initial content (None: zeros).
        self._initial = initial
        self._read: list[dict[int, bytes]] = [{} for _ in initial]
        self.labels = labels
        #: Per pool: line offset -> durable content, for lines something was made durable in.
        self.durable: list[dict[int, bytes]] = [{} for _ in initial]
        #: Per pool: line offset -> [its pieces in flight in program order, its content with
        #: all of them persisted, its atoms in flight]: a line in flight.
        self.pending: list[dict[int, list[Any]]] = [{} for _ in initial]
        #: Per pool: lines holding a flushed piece (what the next fence makes durable).
        self.ready: list[set[int]] = [set() for _ in initial]
        #: Per pool: lines changed since the last comparison.
        self.touched: list[set[int]] = [set() for _ in initial]
        #: The log's operations since the last comparison (see :meth:`_apply`).
        self.ops: list[tuple[Any, ...]] = []

    # -- operations ----------------------------------------------------------------------

    def _apply(self) -> None:
        """Take the operations queued since the last comparison (``ops``: ``(STORE, pool,
        offset, data)``, ``(FLUSH, pool, offset, length)``, ``(FENCE,)``, ``(DEEP, pool,
        offset, length)``), in order: the replay queues each one once the run is past it
        (a crash point before a fence or deep sync comes before the operation is queued)."""
        ops = self.ops
        for op in ops:
            kind = op[0]
            if kind == STORE:
                self._store(op[1], op[2], op[3])
            elif kind == FENCE:
                self._fence_now()
            elif kind == FLUSH:
                self._flush(op[1], op[2], op[3])
            else:
                self._flush(op[1], op[2], op[3])
                self._fence_now()
        ops.clear()  # the list the replay appends to: kept

    def _store(self, pool: int, off: int, data: bytes) -> None:
        pending, touched = self.pending[pool], self.touched[pool]
        line = off - off % LINE
        if off + len(data) <= line + LINE:  # one line: the common case
            got = pending.get(line)
            if got is None:
                got = pending[line] = [[], self.content(pool, line), ()]
            got[0].append([off, data, False])
            o = off - line
            got[1] = got[1][:o] + data + got[1][o + len(data) :]
            got[2] += _atoms(off, data)
            touched.add(line)
            return
        end = off + len(data)
        while off < end:
            take = min(line + LINE, end) - off
            self._store(pool, off, data[:take])
            data = data[take:]
            off += take
            line += LINE

    def _flush(self, pool: int, off: int, length: int) -> None:
        """Flush the lines ``[off, off + length)`` meets: their pieces issued so far."""
        pending, ready = self.pending[pool], self.ready[pool]
        lo, end = off - off % LINE, off + length
        if (end - lo) // LINE < len(pending):
            lines: Iterable[int] = [n for n in range(lo, end, LINE) if n in pending]
        else:
            lines = [n for n in pending if lo <= n < end]
        for line in lines:
            for p in pending[line][0]:
                p[2] = True
            ready.add(line)

    def _fence_now(self) -> None:
        for pool, pending in enumerate(self.pending):
            ready = self.ready[pool]
            if not ready:
                continue
            self.ready[pool] = set()
            durable, touched = self.durable[pool], self.touched[pool]
            for line in ready:
                got = pending[line]
                content = bytearray(self.content(pool, line))
                kept = []
                for piece in got[0]:  # program order: later pieces win
                    off, data, flushed = piece
                    if flushed:
                        content[off - line : off - line + len(data)] = data
                    else:
                        kept.append(piece)
                durable[line] = bytes(content)
                touched.add(line)
                if kept:
                    got[0] = kept
                    got[2] = tuple(a for p in kept for a in _atoms(p[0], p[1]))
                else:
                    del pending[line]

    # -- the rules' answers --------------------------------------------------------------

    def content(self, pool: int, line: int) -> bytes:
        """What the line holds for good (nothing in flight persisted)."""
        got = self.durable[pool].get(line)
        if got is not None:
            return got
        got = self._read[pool].get(line)
        if got is None:
            read = self._initial[pool]
            got = _ZERO_LINE if read is None else read(line, LINE)
            self._read[pool][line] = got
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
        self._apply()
        where = f"crash point {point}"
        state = {(x.pool, x.offset): x for x in lines}
        todo = set(state)
        todo.update(changed)
        in_flight = 0
        for pool, touched in enumerate(self.touched):
            if touched:
                todo.update([(pool, line) for line in touched])
                touched.clear()
            in_flight += len(self.pending[pool])
        matched = 0
        pending_of, content = self.pending, self.content
        for key in todo:
            pool, line = key
            shown = bytes(buffers[pool][line : line + LINE])
            if len(shown) < LINE:
                shown += bytes(LINE - len(shown))
            x = state.get(key)
            got = pending_of[pool].get(line)
            if got is None:  # nothing in flight: it shows what it holds
                if x is not None or shown != content(pool, line):
                    self._violation(where, pool, line, x, shown)
                continue
            matched += 1
            if (
                x is None
                or shown != got[1]
                or x.signature() != got[2]
                or x.base != content(pool, line)
            ):
                self._violation(where, pool, line, x, shown)
        if matched != in_flight:  # a line in flight here but not in the state
            for pool, pending in enumerate(pending_of):
                for line in pending:
                    if (pool, line) not in state:
                        shown = bytes(buffers[pool][line : line + LINE])
                        self._violation(where, pool, line, None, shown)

    def _violation(self, where: str, pool: int, line: int, x: Any, shown: bytes) -> None:
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
        raise DurabilityViolation(f"{where}: {problem}; this is a pmemsim bug")


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
