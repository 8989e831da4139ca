"""Crash images of a recorded state: their names, what they lose, and keys by content.

An image is named by its deviations (unit, alternative) from the state's all-persisted
image. These turn deviations into a :class:`Crash` and back, list the lines and stores an
image loses, and key images by content so that each distinct one is run once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..digest import blake2b
from ..errors import ErrorCode, InvalidArgumentError
from .crash import Crash
from .lazy import StateAlternatives
from .report import LineOutcome, LostStore
from .trace import CrashPoint

if TYPE_CHECKING:
    from pmemsim_backends.sim import CrashState

__all__ = ["SECTOR", "Deviations", "crash_for", "deviations_for", "lost_of"]

#: Bad blocks are injected in sectors, the unit Linux reports them in.
SECTOR = 512

Deviations = tuple[tuple[int, int], ...]


_MOD = 1 << 128
#: Page digests kept (with their pages, 4 KiB each): the pages of the last state or two are
#: all that carrying a sum over needs, and keeping more would keep old states' pages alive.
PAGE_SUMS_KEPT = 1 << 10


class _PageSums:
    """Content keys of one pool's images that cost the lines an image changes.

    A key is the sum, modulo 2^128, of a digest of (line address, 64 bytes) over every line
    of the pages the image holds. A state's all-persisted sum is carried over from the
    previous state through the pages that changed between them (a page's digest is the sum
    of its lines', computed once per page object); an image adds, per unit it deviates in,
    the difference of the unit's two contents. Equal content (held the same way), equal key.
    """

    def __init__(self) -> None:
        self._pages: dict[int, tuple[object, int]] = {}
        self._units: dict[tuple[int, int], int] = {}
        self._state: CrashState | None = None
        self._sum = 0

    @staticmethod
    def _lines(offset: int, data: bytes | bytearray) -> int:
        total = 0
        for k in range(0, len(data), 64):
            h = blake2b((offset + k).to_bytes(8, "little"), digest_size=16)
            h.update(data[k : k + 64])
            total += int.from_bytes(h.digest(), "little")
        return total

    def _page(self, p: int, page: bytes | bytearray | None) -> int:
        if page is None:
            return 0
        hit = self._pages.get(id(page))
        if hit is not None and hit[0] is page:
            return hit[1]
        d = self._lines(p << 12, page)
        if len(self._pages) >= PAGE_SUMS_KEPT:
            self._pages.clear()
        self._pages[id(page)] = (page, d)
        return d

    def base(self, state: CrashState) -> int:
        if state is self._state:
            return self._sum
        prev = self._state
        if prev is None or prev.media[0] is not state.media[0]:
            total = sum(self._page(p, state.persisted_page(p)) for p in state.changed_pages(None))
        else:
            total = self._sum
            for p in state.changed_pages(prev):
                total += self._page(p, state.persisted_page(p)) - self._page(
                    p, prev.persisted_page(p)
                )
        self._state, self._sum = state, total % _MOD
        self._units.clear()
        return self._sum

    def key(self, state: CrashState, alts: StateAlternatives, deviations: Deviations) -> bytes:
        total = self.base(state)
        for i, o in deviations:
            total += self._unit(state, alts, i, o) - self._unit(state, alts, i, 0)
        return (total % _MOD).to_bytes(16, "little")

    def _unit(self, state: CrashState, alts: StateAlternatives, i: int, o: int) -> int:
        d = self._units.get((i, o))
        if d is None:
            d = self._units[(i, o)] = self._lines(state.units[i].offset, alts.content(i, o))
        return d


def lost_of(
    state: CrashState, deviations: Deviations
) -> tuple[tuple[LineOutcome, ...], tuple[LostStore, ...]]:
    lines = []
    stores = []
    for i, o in deviations:
        u = state.units[i]
        option = state.option(i, o)
        atoms = u.lost_atoms(option)
        in_flight = len(u.wb) + sum(len(g) for g in u.nt_groups)
        lines.append(LineOutcome(u.medium_index, u.offset, in_flight, len(atoms), option.reverted))
        stores += [LostStore(u.medium_index, a.offset, len(a.data), (a.frame,)) for a in atoms]
    return tuple(lines), tuple(stores)


def crash_for(
    point: CrashPoint,
    deviations: Deviations,
    state: CrashState | None = None,
) -> Crash:
    units = (state or point.state).units
    return Crash(
        point.index,
        tuple(sorted((units[i].medium_index, units[i].offset, o) for i, o in deviations)),
    )


def deviations_for(state: CrashState, crash: Crash, *, strict: bool = False) -> Deviations:
    """The deviations a crash means at a state. By default values are clamped and lines not
    in flight are ignored (so every shrink of a crash is a crash); ``strict`` refuses both
    (a replay token names exactly one image)."""
    index = {(u.medium_index, u.offset): i for i, u in enumerate(state.units)}
    out = []
    for m, off, alt in crash.lines:
        i = index.get((m, off))
        if i is None:
            if strict:
                raise InvalidArgumentError(
                    ErrorCode.EINVAL,
                    f"crash {crash}: line {m}.{off:x} has nothing in flight at crash point "
                    f"{crash.point}",
                )
            continue
        n = len(state.units[i].options(state.base(i)))
        if strict and not 0 <= alt < n:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"crash {crash}: line {m}.{off:x} has alternatives 0 to {n - 1}, not {alt}",
            )
        alt = min(max(alt, 0), n - 1)
        if alt:
            out.append((i, alt))
    return tuple(sorted(dict(out).items()))
