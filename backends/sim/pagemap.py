"""A persistent (immutable, structure-sharing) map from page number to page.

Every crash state keeps the media pages as they were at its crash point. Copying the whole
page dictionary into each state costs the pool per crash point; here a state's map is a
radix tree of 32-way nodes, and the next state's map is the previous one with the changed
pages' paths copied: a state costs what changed since the one before, and two maps can say
which pages differ by walking only the nodes they do not share.

Pages are compared by identity: the simulator never changes a page that a map holds (it
copies a page before writing it again), so "the same object" means "the same content".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TypeVar

__all__ = ["PageMap"]

BITS = 5
FAN = 1 << BITS
MASK = FAN - 1

V = TypeVar("V")
#: A node: FAN children (nodes, or values at the bottom level), None where empty.
Node = tuple[object, ...]

_EMPTY: Node = (None,) * FAN


class PageMap(Mapping[int, V]):
    """An immutable map of page numbers (>= 0) to pages; ``updated`` returns a new map."""

    __slots__ = ("_count", "_root", "_shift")

    def __init__(self, root: Node | None = None, shift: int = 0, count: int = 0) -> None:
        self._root = root
        #: Bits below the root's index: the root covers page numbers < 1 << (shift + BITS).
        self._shift = shift
        self._count = count

    @classmethod
    def of(cls, pages: Mapping[int, V]) -> PageMap[V]:
        """A map holding ``pages`` (a PageMap is returned as it is)."""
        if isinstance(pages, PageMap):
            return pages
        return PageMap[V]().updated(dict(pages))

    # -- reading -------------------------------------------------------------------------

    def get(self, key: int, default: V | None = None) -> V | None:  # type: ignore[override]
        node = self._root
        shift = self._shift
        if node is None or key < 0 or key >> (shift + BITS):
            return default
        while shift:
            node = node[(key >> shift) & MASK]  # type: ignore[assignment]
            if node is None:
                return default
            shift -= BITS
        value = node[key & MASK]
        return default if value is None else value  # type: ignore[return-value]

    def __getitem__(self, key: int) -> V:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and self.get(key) is not None

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        """Page numbers in ascending order."""
        if self._root is not None:
            yield from _keys(self._root, self._shift, 0)

    def __repr__(self) -> str:
        return f"<PageMap of {self._count} page(s)>"

    # -- changing ------------------------------------------------------------------------

    def updated(self, changes: Mapping[int, V | None]) -> PageMap[V]:
        """This map with ``changes`` applied (a None value removes the page)."""
        if not changes:
            return self
        top = max(changes)
        if min(changes) < 0:
            raise ValueError("page numbers are >= 0")
        root, shift = self._root, self._shift
        if root is None:
            shift = 0
            while top >> (shift + BITS):
                shift += BITS
        else:
            while top >> (shift + BITS):  # grow upwards: the old tree is child 0
                root = (root, *_EMPTY[1:])
                shift += BITS
        if len(changes) == 1:
            ((key, value),) = changes.items()
            root, delta = _set_one(root, shift, key, value)
        else:
            items = sorted(changes.items())
            root, delta = _update(root, shift, items, 0, len(items))
        if self._count + delta == 0:
            return PageMap()
        return PageMap(root, shift, self._count + delta)

    # -- comparing -----------------------------------------------------------------------

    def diff(self, other: PageMap[V] | None) -> list[int]:
        """Page numbers whose page differs (by identity, or is present in one map only),
        ascending; the walk skips every subtree the two maps share."""
        if other is None:
            return list(self)
        a, b = self._root, other._root
        sa, sb = self._shift, other._shift
        # Bring both roots to the same height (the taller tree's extra levels hold the
        # shorter one in child 0).
        while sa < sb:
            a = None if a is None else (a, *_EMPTY[1:])
            sa += BITS
        while sb < sa:
            b = None if b is None else (b, *_EMPTY[1:])
            sb += BITS
        out: list[int] = []
        _diff(a, b, sa, 0, out)
        return out


def _keys(node: Node, shift: int, base: int) -> Iterator[int]:
    if not shift:
        for i, v in enumerate(node):
            if v is not None:
                yield base | i
        return
    for i, child in enumerate(node):
        if child is not None:
            yield from _keys(child, shift - BITS, base | (i << shift))  # type: ignore[arg-type]


def _update(
    node: Node | None, shift: int, items: Sequence[tuple[int, object]], lo: int, hi: int
) -> tuple[Node | None, int]:
    """``node`` with ``items[lo:hi]`` (all under it, sorted) applied; and the change in count."""
    slots = list(node) if node is not None else list(_EMPTY)
    delta = 0
    if not shift:
        for k in range(lo, hi):
            key, value = items[k]
            i = key & MASK
            delta += (value is not None) - (slots[i] is not None)
            slots[i] = value
    else:
        k = lo
        while k < hi:
            i = (items[k][0] >> shift) & MASK
            j = k + 1
            while j < hi and (items[j][0] >> shift) & MASK == i:
                j += 1
            slots[i], d = _update(slots[i], shift - BITS, items, k, j)  # type: ignore[arg-type]
            delta += d
            k = j
    if slots.count(None) == FAN:
        return None, delta
    return tuple(slots), delta


def _set_one(root: Node | None, shift: int, key: int, value: object) -> tuple[Node | None, int]:
    """``_update`` for one key (the common case: one page changed since the last state)."""
    path: list[Node | None] = []
    node = root
    for level in range(shift, 0, -BITS):
        path.append(node)
        node = None if node is None else node[(key >> level) & MASK]  # type: ignore[assignment]
    slots = list(node) if node is not None else list(_EMPTY)
    i = key & MASK
    delta = (value is not None) - (slots[i] is not None)
    slots[i] = value
    new: Node | None = None if slots.count(None) == FAN else tuple(slots)
    level = BITS
    for parent in reversed(path):
        up = list(parent) if parent is not None else list(_EMPTY)
        up[(key >> level) & MASK] = new
        new = None if up.count(None) == FAN else tuple(up)
        level += BITS
    return new, delta


def _diff(a: Node | None, b: Node | None, shift: int, base: int, out: list[int]) -> None:
    if a is b:
        return
    if a is None:
        out.extend(_keys(b, shift, base))  # type: ignore[arg-type]
        return
    if b is None:
        out.extend(_keys(a, shift, base))
        return
    if not shift:
        for i in range(FAN):
            if a[i] is not b[i]:
                out.append(base | i)
        return
    for i in range(FAN):
        ca, cb = a[i], b[i]
        if ca is not cb:
            _diff(ca, cb, shift - BITS, base | (i << shift), out)  # type: ignore[arg-type]
