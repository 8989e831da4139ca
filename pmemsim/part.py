"""Parts (what to map), descriptors (what got mapped) and part-map handles."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ErrorCode, InvalidArgumentError, error_for
from .source import Source

if TYPE_CHECKING:
    from .backend import BackendMap
    from .placement import Holder
    from .set import Set

__all__ = ["Descriptor", "Part", "PartMap"]

INT64_MAX = (1 << 63) - 1


class Part:
    """A request to map ``[offset, offset + length)`` of ``source``; length 0: the whole file.

    Mapping consumes the part: after a successful :meth:`pmemsim.Set.map` it cannot be mapped
    again (a failed map leaves it usable).
    """

    __slots__ = ("consumed", "length", "offset", "source")

    def __init__(self, source: Source, offset: int = 0, length: int = 0) -> None:
        if not isinstance(source, Source):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{source!r} is not a pmemsim.Source")
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise InvalidArgumentError(ErrorCode.EINVAL, f"invalid part offset {offset!r}")
        if offset < 0 or offset > INT64_MAX:
            raise error_for(ErrorCode.INVALID_OFFSET_VALUE, f"part offset {offset} out of range")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"invalid part length {length!r}")
        self.source = source
        self.offset = offset
        self.length = length
        self.consumed = False

    def __repr__(self) -> str:
        state = " consumed" if self.consumed else ""
        return f"<Part {self.source.label} +0x{self.offset:x} len={self.length}{state}>"


@dataclass(frozen=True, slots=True)
class Descriptor:
    """Where a part map lies: ``address`` and ``size``."""

    address: int
    size: int

    @property
    def end(self) -> int:
        return self.address + self.size


@dataclass(slots=True)
class MappedPart:
    """One part as mapped: its source range and the backend map that holds it."""

    source: Source
    offset: int
    length: int
    address: int
    map: BackendMap
    #: The source's identity when it was mapped ("in use" bookkeeping for SDS).
    key: tuple[object, ...] = ()
    #: Unmapped: an operation that found this part before it went must not touch it.
    gone: bool = False

    @property
    def end(self) -> int:
        return self.address + self.length

    def unmap(self) -> None:
        self.gone = True
        self.map.unmap()


class PartMap:
    """A reference to one part map of a set, from first / next / by-address lookups.

    Every handle counts as a use of the part map until it is dropped (``drop()``, the end of a
    ``with`` block, or garbage collection); ``Set.remove_part_map(handle)`` refuses with
    PART_MAP_POSSIBLE_USE_AFTER_DROP while any *other* handle is alive.
    """

    __slots__ = ("__weakref__", "_finalizer", "_holder", "_set")

    def __init__(self, owner: Set, holder: Holder) -> None:
        self._set = owner
        self._holder: Holder | None = holder
        holder.refs += 1
        self._finalizer = weakref.finalize(self, _release, holder)

    def _live(self) -> Holder:
        h = self._holder
        if h is None or not self._finalizer.alive or h.removed:
            raise error_for(
                ErrorCode.CANNOT_FIND_PART_MAP, "this part map handle is no longer valid"
            )
        return h

    @property
    def address(self) -> int:
        return self._live().address

    @property
    def size(self) -> int:
        return self._live().size

    @property
    def descriptor(self) -> Descriptor:
        h = self._live()
        return Descriptor(h.address, h.size)

    @property
    def valid(self) -> bool:
        h = self._holder
        return h is not None and self._finalizer.alive and not h.removed

    def drop(self) -> None:
        """Stop using this handle."""
        self._finalizer()
        self._holder = None

    def __enter__(self) -> PartMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PartMap) and other._holder is self._holder

    def __hash__(self) -> int:
        return id(self._holder)

    def __repr__(self) -> str:
        if not self.valid:
            return "<PartMap (dropped)>"
        return f"<PartMap 0x{self.address:x} +{self.size}>"


def _release(holder: Holder) -> None:
    holder.refs -= 1
