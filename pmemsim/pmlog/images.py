"""Crash images as bytes, fast: one pool buffer, patched per image and restored after.

The engine builds a Snapshot per image and maps it into a fresh set, which is right for a
recovery written against a view but costs far more than a checker that reads bytes needs.
Here one buffer holds the all-persisted image of the current crash state (moved from state to
state by rewriting only the pages that changed), and an image is that buffer with its
deviating lines patched in place: a checker sees the image for the length of one call, and an
image costs what it changes, not the pool. The buffer is an anonymous mmap, so a large pool
that a log barely touches stays mostly unallocated.

Images are deduplicated across crash points by a 128-bit key that is a sum of one hash per
line that differs from the pool's initial content: updated per page when the buffer moves,
per line when an image deviates, never by hashing the pool.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState

__all__ = ["PoolImage"]

_PAGE = 4096
_LINE = 64
_MASK = (1 << 128) - 1
_ZERO_LINE = bytes(_LINE)
#: Linux's MAP_NORESERVE (Python's mmap module does not name it before 3.13).
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_CHUNK = 1 << 20
_ZERO_CHUNK = bytes(_CHUNK)

Deviations = Sequence[tuple[int, int]]


def _line_key(offset: int, content: bytes) -> int:
    h = hashlib.blake2b(content, digest_size=16, salt=offset.to_bytes(16, "little"))
    return int.from_bytes(h.digest(), "little")


class PoolImage:
    """The crash images of one pool, one at a time, in one reusable buffer."""

    def __init__(self, size: int, source: str | None = None, source_size: int = 0) -> None:
        """A pool of ``size`` bytes whose initial content is the first ``source_size``
        bytes of the file ``source`` (zeros after them; all zeros without a source)."""
        if size <= 0:
            raise ValueError("a pool image needs at least one byte")
        self.size = size
        self._initial: memoryview | None = None
        self._initial_map: mmap.mmap | None = None
        if source is not None and source_size > 0:
            n = min(size, source_size)
            with open(source, "rb") as f:
                # Private and read-only: the file's pages, shared with the page cache.
                self._initial_map = mmap.mmap(f.fileno(), n, mmap.MAP_PRIVATE, mmap.PROT_READ)
                if n == size:
                    # The buffer too: pages copied on write, so a large file costs the
                    # pages the images change.
                    self.buf = mmap.mmap(f.fileno(), size, mmap.MAP_PRIVATE)
            self._initial = memoryview(self._initial_map)
        if self._initial is None or len(self._initial) < size:
            # Private (forked workers each patch their own copy) and not reserved: a pool
            # of a terabyte costs the pages an image touches, not its size.
            self.buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | _MAP_NORESERVE)
            init = self._initial
            for start in range(0, 0 if init is None else len(init), _CHUNK):
                chunk = init[start : start + _CHUNK]  # type: ignore[index]
                if chunk != _ZERO_CHUNK[: len(chunk)]:  # zeros are there already
                    self.buf[start : start + len(chunk)] = chunk
        self._ro = memoryview(self.buf).toreadonly()
        #: Page index -> the page object whose content the buffer shows (absent: initial).
        self._shown: dict[int, object] = {}
        self._contrib: dict[int, int] = {}
        #: Key contribution of frozen media pages, by identity (page kept alive with it).
        self._frozen: dict[int, tuple[object, int]] = {}
        #: Key of the buffer's current content.
        self.key0 = 0
        self.state: CrashState | None = None
        # Per unit of the current state: content before patching, and per (unit, option):
        # (content, key delta, atoms lost).
        self._persisted: dict[int, bytes] = {}
        self._options: dict[tuple[int, int], tuple[bytes, int, int, int, int]] = {}

    def close(self) -> None:
        self._ro.release()
        with contextlib.suppress(BufferError):  # a checker kept a view: the GC frees it
            self.buf.close()
        if self._initial is not None:
            self._initial.release()
            assert self._initial_map is not None
            self._initial_map.close()

    # -- keys --------------------------------------------------------------------------

    def _initial_line(self, offset: int, n: int) -> bytes:
        init = self._initial
        if init is None or offset >= len(init):
            return _ZERO_LINE[:n]
        chunk = bytes(init[offset : offset + n])
        return chunk + _ZERO_LINE[: n - len(chunk)]

    def _initial_range(self, start: int, end: int) -> bytes:
        init = self._initial
        if init is None or start >= len(init):
            return bytes(end - start)
        chunk = bytes(init[start:end])
        return chunk + bytes(end - start - len(chunk))

    def _line(self, offset: int, content: bytes) -> int:
        """The key contribution of one line's content (0 when it is the initial content)."""
        if content == self._initial_line(offset, len(content)):
            return 0
        return _line_key(offset, content)

    def _page_key(self, p: int) -> int:
        start = p * _PAGE
        end = min(start + _PAGE, self.size)
        buf = self.buf
        total = 0
        for off in range(start, end, _LINE):
            total += self._line(off, buf[off : min(off + _LINE, end)])
        return total & _MASK

    # -- moving between crash states ---------------------------------------------------

    def move_to(self, state: CrashState) -> None:
        """Make the buffer the all-persisted image of ``state`` (of its first medium)."""
        if state is self.state:
            return
        self.state = state
        self._persisted = {}
        self._options = {}
        # The simulator's state holds media pages (frozen, shared copy-on-write between
        # states) and, for pages with stores in flight, the content loads see.
        overlay = state._visible[0]
        target: dict[int, object] = dict(state.snapshots[0].pages)
        target.update(overlay)
        for p in [p for p in self._shown if p not in target]:
            self._show(p, None, False)
        shown = self._shown
        for p, page in target.items():
            if shown.get(p) is not page:
                self._show(p, page, p not in overlay)

    def _show(self, p: int, page: object, frozen: bool) -> None:
        start = p * _PAGE
        if start >= self.size:
            return
        end = min(start + _PAGE, self.size)
        if page is None:
            self.buf[start:end] = self._initial_range(start, end)
            self._shown.pop(p, None)
            new = 0
        else:
            self.buf[start:end] = memoryview(page)[: end - start]  # type: ignore[arg-type]
            self._shown[p] = page
            hit = self._frozen.get(id(page)) if frozen else None
            if hit is not None and hit[0] is page:
                new = hit[1]
            else:
                new = self._page_key(p)
                if frozen:
                    self._frozen[id(page)] = (page, new)
        old = self._contrib.pop(p, 0)
        if new:
            self._contrib[p] = new
        self.key0 = (self.key0 - old + new) & _MASK

    # -- images of the current state ---------------------------------------------------

    def _option(self, i: int, o: int) -> tuple[bytes, int, int, int, int]:
        """``(content, key delta, atoms lost, start, end)`` of unit ``i`` at option ``o``."""
        hit = self._options.get((i, o))
        if hit is not None:
            return hit
        state = self.state
        assert state is not None
        u = state.units[i]
        base = state._bases[i]
        opt = u.options(base)[o]
        start = u.offset
        n = min(u.size, self.size - start)
        persisted = self._persisted.get(i)
        if persisted is None:
            persisted = self._persisted[i] = bytes(self.buf[start : start + n])
        content = u.content(base, opt)[:n]
        delta = (self._line(start, content) - self._line(start, persisted)) & _MASK
        hit = self._options[(i, o)] = (content, delta, len(u.lost_atoms(opt)), start, start + n)
        return hit

    def key(self, deviations: Deviations) -> int:
        """The content key of the image with these deviations from the current state."""
        k = self.key0
        get = self._options.get
        for d in deviations:
            hit = get(d)
            k += (hit or self._option(*d))[1]
        return k & _MASK

    def lost(self, deviations: Deviations) -> int:
        """How many atoms (8-byte pieces of stores) the image loses."""
        return sum(self._option(i, o)[2] for i, o in deviations)

    def patch(self, deviations: Deviations) -> None:
        """Apply the deviations to the buffer (their options are known: key() came first)."""
        buf = self.buf
        get = self._options.get
        for d in deviations:
            hit = get(d) or self._option(*d)
            buf[hit[3] : hit[4]] = hit[0]

    def restore(self, deviations: Deviations) -> None:
        buf = self.buf
        persisted = self._persisted
        options = self._options
        for d in deviations:
            hit = options[d]
            buf[hit[3] : hit[4]] = persisted[d[0]]

    def view(self) -> memoryview:
        """A read-only view of the buffer as it is now (release it when done)."""
        return self._ro[:]

    def to_bytes(self) -> bytes:
        return bytes(self.buf)
