"""Crash images as bytes, fast: one buffer per registered file, patched per image.

The engine builds a Snapshot per image and maps it into a fresh set, which is right for a
recovery written against a view but costs far more than a checker that reads bytes needs.
Here one buffer per pool holds the all-persisted image of the current crash state, moved from
state to state by rewriting only the pages the two states differ in
(:meth:`CrashState.changed_pages`), and an image is those buffers with its deviating lines
patched in place: a checker sees the image for the length of one call, and an image costs
the lines it changes, not the pool. A buffer is the file's pages mapped copy-on-write, or an
anonymous mapping that reserves nothing: a pool of a terabyte costs the pages the images
touch.

Images are deduplicated across crash points by a 128-bit key that is a sum of one hash per
line that differs from the pool's initial content: updated per changed line when the buffers
move, per line when an image deviates, never by hashing a pool.

:attr:`PoolImage.moves` counts the moves and :meth:`PoolImage.pages_since` says which pages
changed since a given move, so that copies of the images (image files for checker programs,
see :mod:`pmemsim.pmlog.slots`) follow at the same cost.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..digest import blake2b as _blake2b

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState

__all__ = ["Pool", "PoolImage"]

PAGE = 4096
LINE = 64
_MASK = KEY_MASK = (1 << 128) - 1
_ZERO_PAGE = bytes(PAGE)
_ZERO_LINE = bytes(LINE)
#: Linux's MAP_NORESERVE (Python's mmap module does not name it before 3.13).
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_CHUNK = 1 << 20
_ZERO_CHUNK = bytes(_CHUNK)
#: Moves remembered for :meth:`PoolImage.pages_since` (older ones: "everything").
_HISTORY = 4096

Deviations = Sequence[tuple[int, int]]
#: A pool's size, and the file holding its initial content and how many bytes of it there
#: are (None, 0: zeros).
Pool = tuple[int, "str | None", int]


class _Buffer:
    """One pool: its buffer, its initial content, the key of what the buffer shows."""

    __slots__ = ("_ro", "buf", "initial", "initial_map", "key", "salt", "size")

    def __init__(
        self, number: int, size: int, source: str | None, source_size: int, file: str | None
    ) -> None:
        if size <= 0:
            raise ValueError("a pool image needs at least one byte")
        self.size = size
        self.salt = number << 64
        self.key = 0
        self.initial: memoryview | None = None
        self.initial_map: mmap.mmap | None = None
        buf: mmap.mmap | None = None
        if source is not None and source_size > 0:
            n = min(size, source_size)
            with open(source, "rb") as f:
                # Private and read-only: the file's pages, shared with the page cache.
                self.initial_map = mmap.mmap(f.fileno(), n, mmap.MAP_PRIVATE, mmap.PROT_READ)
                if n == size and file is None:
                    # The buffer too, its pages copied when first written.
                    buf = mmap.mmap(f.fileno(), size, mmap.MAP_PRIVATE)
            self.initial = memoryview(self.initial_map)
        if file is not None:
            # The buffer is that file (a checker that takes a path reads the image there).
            fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, size)
                if source is not None and source_size > 0:
                    from .imagefile import copy_base

                    copy_base(source, fd, min(size, source_size))
                buf = mmap.mmap(fd, size, mmap.MAP_SHARED)
            finally:
                os.close(fd)
        if buf is None:
            # Private (forked workers patch their own copies) and not reserved.
            buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | _MAP_NORESERVE)
            init = self.initial
            for start in range(0, 0 if init is None else len(init), _CHUNK):
                assert init is not None
                chunk = init[start : start + _CHUNK]
                if chunk != _ZERO_CHUNK[: len(chunk)]:  # zeros are there already
                    buf[start : start + len(chunk)] = chunk
        self.buf = buf
        self._ro = memoryview(buf).toreadonly()

    def close(self) -> None:
        self._ro.release()
        with contextlib.suppress(BufferError):  # a checker kept a view: the GC frees it
            self.buf.close()
        if self.initial is not None:
            self.initial.release()
            assert self.initial_map is not None
            with contextlib.suppress(BufferError):
                self.initial_map.close()

    def view(self) -> memoryview:
        return self._ro[:]

    def initial_bytes(self, start: int, end: int) -> bytes:
        init = self.initial
        if init is None or start >= len(init):
            return bytes(end - start)
        chunk = bytes(init[start:end])
        return chunk + bytes(end - start - len(chunk)) if len(chunk) < end - start else chunk

    def line_key(self, offset: int, content: bytes) -> int:
        """A line's key contribution: 0 when it holds the initial content."""
        end = offset + len(content)
        init = self.initial_map
        if init is None:  # zeros (no initial_bytes to call: once per line a move rewrites)
            if (content == _ZERO_LINE) if end - offset == LINE else not any(content):
                return 0
        elif end <= len(init):  # (an mmap's slice: bytes, no view)
            if content == init[offset:end]:
                return 0
        elif content == self.initial_bytes(offset, end):
            return 0
        salt = (self.salt | offset).to_bytes(16, "little")
        return int.from_bytes(_blake2b(content, digest_size=16, salt=salt).digest(), "little")

    def show(self, p: int, page: bytes | bytearray | None) -> list[int]:
        """Make page ``p`` show ``page`` (None: the initial content), updating the key by
        the lines that change; returns their offsets."""
        start = p * PAGE
        if start >= self.size:
            return []
        end = min(start + PAGE, self.size)
        new = self.initial_bytes(start, end) if page is None else bytes(page[: end - start])
        old = self.buf[start:end]
        if old == new:
            return []
        delta = 0
        lines = []
        for lo, hi in _differing(old, new, 0, len(new)):
            for o in range(lo, hi, LINE):
                e = min(o + LINE, len(new))
                delta += self.line_key(start + o, new[o:e]) - self.line_key(start + o, old[o:e])
                lines.append(start + o)
        self.key = (self.key + delta) & _MASK
        self.buf[start:end] = new
        return lines


def _differing(a: bytes, b: bytes, lo: int, hi: int) -> list[tuple[int, int]]:
    """Line-aligned ranges of ``[lo, hi)`` in which ``a`` and ``b`` differ (halving: a page
    with one changed line costs a dozen comparisons, not 64)."""
    if a[lo:hi] == b[lo:hi]:
        return []
    if hi - lo <= LINE:
        return [(lo, hi)]
    mid = lo + ((hi - lo) // 2 + LINE - 1) // LINE * LINE
    return _differing(a, b, lo, mid) + _differing(a, b, mid, hi)


class PoolImage:
    """The crash images of a log's pools, one at a time, in one reusable buffer per pool."""

    def __init__(self, pools: Sequence[Pool], files: Sequence[str] | None = None) -> None:
        """``files``: paths of new files to hold the pools' buffers (else anonymous memory)."""
        self._pools: list[_Buffer] = []
        try:
            for i, (size, source, source_size) in enumerate(pools):
                file = None if files is None else files[i]
                self._pools.append(_Buffer(i, size, source, source_size, file))
        except BaseException:
            self.close()
            raise
        self.state: CrashState | None = None
        #: How many times the buffers moved to another state, and the pages (pool, page)
        #: each of the last moves rewrote.
        self.moves = 0
        self._history: deque[set[tuple[int, int]]] = deque(maxlen=_HISTORY)
        # Per unit of the current state: content before patching, and per (unit, option):
        # (content, key delta, atoms lost, pool, start, end).
        self._persisted: dict[int, bytes] = {}
        self._options: dict[tuple[int, int], tuple[bytes, int, int, int, int, int]] = {}
        #: A log machine writing the buffers itself (:meth:`follow`), and then per line that
        #: differs from the initial content its key contribution.
        self._machine: Any = None
        self._contrib: dict[tuple[int, int], int] = {}
        #: The current state's lines in flight when the machine's (its unit i is line i).
        self._lines: list[Any] | None = None
        #: Hears the (pool, line) of every line each move rewrote (see :meth:`listen`).
        self._listener: Callable[[set[tuple[int, int]]], None] | None = None

    @property
    def pools(self) -> int:
        return len(self._pools)

    def size(self, pool: int = 0) -> int:
        return self._pools[pool].size

    @property
    def buf(self) -> mmap.mmap:
        """The first pool's buffer."""
        return self._pools[0].buf

    def buffer(self, pool: int) -> mmap.mmap:
        return self._pools[pool].buf

    @property
    def key0(self) -> int:
        """Key of the all-persisted image of the current state."""
        pools = self._pools
        if len(pools) == 1:  # (one pool, commonly: no generator, once per crash point)
            return pools[0].key & _MASK
        return sum(b.key for b in pools) & _MASK

    def close(self) -> None:
        """Unmap the buffers (closing again does nothing)."""
        for b in self._pools:
            b.close()

    # -- moving between crash states ---------------------------------------------------

    def follow(self, machine: object) -> dict[tuple[int, int], int]:
        """From now on a log machine (:mod:`pmemsim.pmlog.fastreplay`) writes every store
        into the buffers itself, so that they always show the all-persisted image of its
        current crash state; :meth:`move_to` then only brings the keys up to date, line by
        line (``machine.take_dirty()``: the lines written since). Returns, for the machine
        to read, the key contribution of each line (pool, offset) as of the last move (a
        line missing contributes 0), which those updates keep up to date."""
        self._machine = machine
        self._contrib = {}
        return self._contrib

    def listen(self, fn: Callable[[set[tuple[int, int]]], None] | None) -> None:
        """Call ``fn(lines)`` with the (pool, line offset) of the lines each move rewrites
        (copies of the image follow at that cost); None: stop."""
        self._listener = fn

    def move_to(self, state: CrashState) -> None:
        """Make the buffers the all-persisted image of ``state``."""
        if state is self.state:
            return
        machine = self._machine
        if machine is not None and getattr(state, "_machine", None) is machine:
            self._sync(self._machine.take_dirty())
            self._lines = state.in_flight
        else:
            self._show_pages(state)
            self._lines = None
        self.state = state
        self._persisted = {}
        self._options = {}
        self.moves += 1

    def _sync(self, lines: set[tuple[int, int]]) -> None:
        """The keys after the machine wrote ``lines`` ((pool, line offset))."""
        pools, contrib = self._pools, self._contrib
        changed = set()
        for key in lines:
            pool, line = key
            b = pools[pool]
            new = b.line_key(line, b.buf[line : line + LINE])  # (an mmap's slice: bytes)
            old = contrib.get(key, 0)
            if new != old:
                b.key = (b.key + new - old) & _MASK
                if new:
                    contrib[key] = new
                else:
                    del contrib[key]
            changed.add((pool, line // PAGE))
        self._history.append(changed)
        if self._listener is not None:
            self._listener(lines)

    def _show_pages(self, state: CrashState) -> None:
        before = self.state
        changed: set[tuple[int, int]] = set()
        lines: set[tuple[int, int]] = set()
        for mi, b in enumerate(self._pools):
            if mi >= len(state.media):
                continue
            for p in state.changed_pages(before, mi):
                for line in b.show(p, state.persisted_page(p, mi)):
                    lines.add((mi, line))
                changed.add((mi, p))
        self._history.append(changed)
        if self._listener is not None:
            self._listener(lines)

    def pages_since(self, move: int) -> set[tuple[int, int]] | None:
        """``(pool, page)`` of every page rewritten by the moves after the ``move``-th
        (None: too long ago to say)."""
        n = self.moves - move
        if n > len(self._history) or move < 0:
            return None
        out: set[tuple[int, int]] = set()
        history = self._history
        for k in range(len(history) - n, len(history)):
            out |= history[k]
        return out

    # -- images of the current state ---------------------------------------------------

    def _option(self, i: int, o: int) -> tuple[bytes, int, int, int, int, int]:
        """``(content, key delta, atoms lost, pool, start, end)`` of unit ``i`` at option
        ``o``."""
        hit = self._options.get((i, o))
        if hit is not None:
            return hit
        if self._lines is not None:
            return self._line_option(i, o)
        state = self.state
        assert state is not None
        u = state.units[i]
        base = state.base(i)
        opt = u.options(base)[o]
        b = self._pools[u.medium_index]
        start = u.offset
        n = min(u.size, b.size - start)
        persisted = self._persisted.get(i)
        if persisted is None:
            persisted = self._persisted[i] = bytes(b.buf[start : start + n])
        content = u.content(base, opt)[:n]
        if self._machine is not None:  # the line's key is known
            was = self._contrib.get((u.medium_index, start), 0)
        else:
            was = b.line_key(start, persisted)
        delta = (b.line_key(start, content) - was) & _MASK
        hit = (content, delta, len(u.lost_atoms(opt)), u.medium_index, start, start + n)
        self._options[(i, o)] = hit
        return hit

    def _line_option(self, i: int, o: int) -> tuple[bytes, int, int, int, int, int]:
        """:meth:`_option` of a log machine's state, from its line in flight."""
        assert self._lines is not None
        line = self._lines[i]
        pool, start = line.pool, line.offset
        # (A log machine's pools are whole pages: its lines are whole.)
        content = line.contents[o]
        k = line.keys[o]
        if k is None:
            k = line.keys[o] = self._pools[pool].line_key(start, content)
        if i not in self._persisted:
            self._persisted[i] = line.contents[0]
        delta = (k - self._contrib.get((pool, start), 0)) & _MASK
        hit = (content, delta, len(line.atoms) - line.kept[o], pool, start, start + LINE)
        self._options[(i, o)] = hit
        return hit

    def options(self, deviations: Deviations) -> tuple[tuple[bytes, int, int, int, int, int], ...]:
        """The option each deviation patches in (see :meth:`_option`), in their order."""
        get = self._options.get
        return tuple([get(d) or self._option(*d) for d in deviations])

    def key(self, deviations: Deviations) -> int:
        """The content key of the image with these deviations from the current state."""
        k = self.key0
        get = self._options.get
        for d in deviations:
            hit = get(d)
            k += (hit or self._option(*d))[1]
        return k & _MASK

    def pool_key(self, deviations: Deviations, pool: int) -> int:
        """The content key of one pool's image."""
        k = self._pools[pool].key
        for d in deviations:
            hit = self._options.get(d) or self._option(*d)
            if hit[3] == pool:
                k += hit[1]
        return k & _MASK

    def lost(self, deviations: Deviations) -> int:
        """How many atoms (8-byte pieces of stores) the image loses."""
        return sum(self._option(i, o)[2] for i, o in deviations)

    def pages_of(self, deviations: Deviations) -> set[tuple[int, int]]:
        """``(pool, page)`` of every page the deviations patch."""
        out = set()
        for d in deviations:
            hit = self._options.get(d) or self._option(*d)
            out.add((hit[3], hit[4] // PAGE))
        return out

    def patch(self, deviations: Deviations) -> None:
        """Apply the deviations to the buffers."""
        pools = self._pools
        get = self._options.get
        for d in deviations:
            hit = get(d) or self._option(*d)
            pools[hit[3]].buf[hit[4] : hit[5]] = hit[0]

    def restore(self, deviations: Deviations) -> None:
        pools = self._pools
        persisted = self._persisted
        options = self._options
        for d in deviations:
            hit = options[d]
            pools[hit[3]].buf[hit[4] : hit[5]] = persisted[d[0]]

    def view(self, pool: int = 0) -> memoryview:
        """A read-only view of a pool's buffer as it is now (release it when done)."""
        return self._pools[pool].view()

    def to_bytes(self, pool: int = 0) -> bytes:
        return bytes(self._pools[pool].buf)
