"""Views: a bounded window on a set, with offsets relative to its start.

A view is how a program writes into a mapping as it would through a pointer in C::

    v = s.view(desc)
    v.u64[0] = 42                       # one 8-byte store
    v[8:16] = b"abcdefgh"               # a slice store
    v.pack_into("<IQ", 16, 7, 9)        # a struct store (one store, 12 bytes)
    v.plain_memcpy(32, b"xy")           # C's memcpy: stores, not persisted
    v.memcpy(64, b"xy")                 # pmem2_memcpy: persisted unless flags say not
    v.persist(0, 28)                    # flush + drain

Typed C structs, one store per field: :mod:`pmemsim.layout`.

Every offset is checked against the view before anything is written.
"""

from __future__ import annotations

import struct
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

from .enums import MemFlag
from .errors import ErrorCode, InvalidArgumentError, error_for
from .events import Kind

if TYPE_CHECKING:
    from .set import SafeRead, Set, StoreFn

__all__ = ["TypedArray", "View"]

_getframe = sys._getframe
_COPY = Kind.COPY
_MOVE = Kind.MOVE


def _bytes(data: object) -> bytes:
    """``data`` as bytes (its length in bytes, even for a memoryview of wider items)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise InvalidArgumentError(
        ErrorCode.EINVAL, f"data must be bytes-like, not {type(data).__name__}"
    )


class TypedArray:
    """Fixed-width little-endian integers over a view: ``v.u64[i]`` is bytes ``8i..8i+8``."""

    __slots__ = ("_base", "_count", "_gen", "_set", "_signed", "_store", "_width", "name")

    def __init__(self, view: View, width: int, signed: bool, name: str) -> None:
        self._set = view.set
        # The backend's store for the view's range, valid while the set's generation holds:
        # the common case skips the set's own address checks, already done by _offset.
        self._gen = -1
        self._store: StoreFn | None = None
        self._base = view.address
        self._width = width
        self._signed = signed
        self._count = view.size // width
        self.name = name

    def __len__(self) -> int:
        return self._count

    def _offset(self, index: int) -> int:
        if type(index) is not int:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{self.name} index must be an int")
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise error_for(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"{self.name}[{index}] is outside a view of {self._count} elements",
            )
        return self._base + index * self._width

    def __getitem__(self, index: int) -> int:
        raw = self._set.read(self._offset(index), self._width)
        return int.from_bytes(raw, "little", signed=self._signed)

    def __setitem__(self, index: int, value: int) -> None:
        # The common case of _offset inline: this is the hottest path of a workload.
        if type(index) is int and 0 <= index < self._count:
            addr = self._base + index * self._width
        else:
            addr = self._offset(index)
        try:
            data = value.to_bytes(self._width, "little", signed=self._signed)
        except (OverflowError, AttributeError, TypeError):
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"{value!r} does not fit {self.name}"
            ) from None
        s = self._set
        if self._gen != s._generation:
            self._gen, self._store = s._direct_store(self._base, self._count * self._width)
        store = self._store
        if store is None:
            s._store(addr, data, _getframe(1))
        else:
            store(addr, data, _getframe(1))


class View:
    """A window ``[address, address + size)`` on a set."""

    __slots__ = ("address", "i32", "i64", "set", "size", "u16", "u32", "u64", "u8")

    def __init__(self, owner: Set, address: int, size: int) -> None:
        self.set = owner
        self.address = address
        self.size = size
        self.u8 = TypedArray(self, 1, False, "u8")
        self.u16 = TypedArray(self, 2, False, "u16")
        self.u32 = TypedArray(self, 4, False, "u32")
        self.u64 = TypedArray(self, 8, False, "u64")
        self.i32 = TypedArray(self, 4, True, "i32")
        self.i64 = TypedArray(self, 8, True, "i64")

    def __repr__(self) -> str:
        return f"<View 0x{self.address:x} +{self.size}>"

    def __len__(self) -> int:
        return self.size

    def _range(self, offset: int, length: int) -> int:
        if type(offset) is not int or type(length) is not int or offset < 0 or length < 0:
            raise InvalidArgumentError(
                ErrorCode.EINVAL, f"invalid offset/length {offset!r}, {length!r}"
            )
        if offset + length > self.size:
            raise error_for(
                ErrorCode.LENGTH_OUT_OF_RANGE,
                f"[{offset}, {offset + length}) is outside a view of {self.size} bytes",
            )
        return self.address + offset

    def _slice(self, key: slice) -> tuple[int, int]:
        start, stop, step = key.indices(self.size)
        if step != 1:
            raise InvalidArgumentError(ErrorCode.EINVAL, "view slices must be contiguous")
        return start, max(0, stop - start)

    def address_of(self, offset: int) -> int:
        """The absolute address of ``offset`` (for the set's own methods)."""
        return self._range(offset, 0)

    # -- loads and stores --------------------------------------------------------------

    def __getitem__(self, key: int | slice) -> int | bytes:
        if isinstance(key, slice):
            start, length = self._slice(key)
            return self.set.read(self.address + start, length)
        if type(key) is not int:
            raise InvalidArgumentError(ErrorCode.EINVAL, "view index must be an int or a slice")
        if key < 0:
            key += self.size
        return self.set.read(self._range(key, 1), 1)[0]

    def __setitem__(self, key: int | slice, value: bytes | bytearray | memoryview | int) -> None:
        if isinstance(key, slice):
            start, length = self._slice(key)
            if isinstance(value, int):
                raise InvalidArgumentError(ErrorCode.EINVAL, "assign bytes to a slice")
            value = _bytes(value)
            if len(value) != length:
                raise InvalidArgumentError(
                    ErrorCode.EINVAL, f"slice of {length} bytes assigned {len(value)} bytes"
                )
            self.set._store(self.address + start, value, _getframe(1))
            return
        if type(key) is not int:
            raise InvalidArgumentError(ErrorCode.EINVAL, "view index must be an int or a slice")
        if key < 0:
            key += self.size
        if type(value) is not int or not 0 <= value <= 255:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"{value!r} is not a byte")
        self.set._store(self._range(key, 1), bytes((value,)), _getframe(1))

    def read(self, offset: int, length: int) -> bytes:
        return self.set.read(self._range(offset, length), length)

    def read_mcsafe(self, offset: int, length: int) -> SafeRead:
        """:meth:`pmemsim.Set.read_mcsafe` at ``offset`` of this view."""
        return self.set.read_mcsafe(self._range(offset, length), length)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """One ordinary store of ``data`` at ``offset`` (see :meth:`plain_memcpy`)."""
        data = _bytes(data)
        self.set._store(self._range(offset, len(data)), data, _getframe(1))

    def plain_memcpy(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """What C's ``memcpy`` does to persistent memory: ordinary (write-back) stores,
        nothing flushed, nothing fenced. The data is durable only after a flush and a fence
        (:meth:`persist`), or when a dirty line happens to be evicted. This is the copy a C
        program makes with ``memcpy``; :meth:`memcpy` is libpmem2's ``pmem2_memcpy``, which
        persists unless told not to."""
        data = _bytes(data)
        self.set._store(self._range(offset, len(data)), data, _getframe(1))

    def _store_from(self, offset: int, data: bytes, frame: FrameType) -> None:
        """One store issued from ``frame`` (helpers that store for their caller, such as
        :mod:`pmemsim.layout`, name the caller's line)."""
        self.set._store(self._range(offset, len(data)), data, frame)

    def pack_into(self, fmt: str, offset: int, *values: object) -> None:
        """``struct.pack_into`` as one store (it tears at 8-byte boundaries like any store)."""
        try:
            data = struct.pack(fmt, *values)
        except struct.error as exc:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"pack {fmt!r}: {exc}") from None
        self.set._store(self._range(offset, len(data)), data, _getframe(1))

    def unpack_from(self, fmt: str, offset: int = 0) -> tuple[Any, ...]:
        try:
            size = struct.calcsize(fmt)
        except struct.error as exc:
            raise InvalidArgumentError(ErrorCode.EINVAL, f"unpack {fmt!r}: {exc}") from None
        return struct.unpack(fmt, self.read(offset, size))

    # -- mem operations and persistence ------------------------------------------------

    def memcpy(
        self, offset: int, data: bytes | bytearray | memoryview, flags: MemFlag | int = 0
    ) -> None:
        """libpmem2's ``pmem2_memcpy``: the copy is **persisted** (flushed and fenced) unless
        ``flags`` say otherwise (NOFLUSH, NODRAIN, ...). For the unpersisted copy C's
        ``memcpy`` makes, use :meth:`plain_memcpy`."""
        data = _bytes(data)
        dest = self._range(offset, len(data))
        self.set._mem(_COPY, dest, data, None, flags, _getframe(1))

    def memmove(self, dest: int, src: int, length: int, flags: MemFlag | int = 0) -> None:
        """Move ``length`` bytes from offset ``src`` to offset ``dest`` of this view."""
        d = self._range(dest, length)
        s = self._range(src, length)
        self.set._mem(_MOVE, d, s, length, flags, _getframe(1))

    def memset(self, offset: int, value: int, length: int, flags: MemFlag | int = 0) -> None:
        self.set._memset(self._range(offset, length), value, length, flags, _getframe(1))

    def flush(self, offset: int = 0, length: int | None = None) -> None:
        n = self.size - offset if length is None else length
        self.set._flush(self._range(offset, n), n, _getframe(1))

    def drain(self) -> None:
        self.set._drain(_getframe(1))

    def persist(self, offset: int = 0, length: int | None = None) -> None:
        n = self.size - offset if length is None else length
        caller = _getframe(1)
        self.set._flush(self._range(offset, n), n, caller)
        self.set._drain(caller)

    def deep_flush(self, offset: int = 0, length: int | None = None) -> None:
        n = self.size - offset if length is None else length
        self.set._deep_flush_range(self._range(offset, n), n, _getframe(1))

    def view(self, offset: int, length: int) -> View:
        """A sub-view ``[offset, offset + length)``."""
        return View(self.set, self._range(offset, length), length)
