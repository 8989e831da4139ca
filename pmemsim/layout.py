"""Typed layouts: declare a C struct once, then read and write its fields on a view.

A layout is a ``ctypes`` structure, so fields, offsets, padding, arrays and nesting follow
the C compiler's rules (``ctypes`` computes them); either write one directly::

    class Header(ctypes.LittleEndianStructure):
        _fields_ = [("magic", ctypes.c_uint64), ("count", ctypes.c_uint32)]

or declare it like a dataclass with :func:`struct`::

    @layout.struct
    class Record:
        key: layout.u64
        value: layout.array(layout.u8, 16)
        checksum: layout.u64 = layout.offset(56)   # explicit offset: padding before it

:func:`typed` puts a layout on a view. Every field assignment is **one store** of that
field's size, issued from the assigning line (so a lost store points at it), as C stores
field by field: ``rec.key = 7`` stores 8 bytes, ``rec.value = b"abc"`` stores 16 (padded
with zeros), assigning a whole struct or array stores each leaf field in turn. Reads decode
the current content. :func:`offsetof`, :func:`addressof` and :func:`span` give where a
field lives (``v.persist(*layout.span(rec, "value"))``); :func:`crossings` lists the fields
that straddle a cache line (or, with ``unit=8``, are not failure-atomic).
"""

from __future__ import annotations

import ctypes
import re
import sys
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ErrorCode, InvalidArgumentError
from .view import View

__all__ = [
    "array",
    "addressof",
    "crossings",
    "i8",
    "i16",
    "i32",
    "i64",
    "lines",
    "offset",
    "offsetof",
    "sizeof",
    "span",
    "struct",
    "typed",
    "u8",
    "u16",
    "u32",
    "u64",
]

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
i8, i16, i32, i64 = ctypes.c_int8, ctypes.c_int16, ctypes.c_int32, ctypes.c_int64

#: ctypes type codes by what they hold.
_SIGNED, _UNSIGNED, _FLOAT = "bhilq", "BHILQ", "fdg"
_LINE = 64


def _error(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(ErrorCode.EINVAL, message)


def array(element: Any, length: int) -> Any:
    """``element[length]`` (the same as ``element * length`` in ctypes)."""
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise _error(f"an array length is an int >= 0, not {length!r}")
    return element * length


@dataclass(frozen=True)
class _Offset:
    at: int


def offset(at: int) -> Any:
    """In a :func:`struct` declaration, ``name: type = offset(N)`` places the field at byte
    ``N`` (padding is inserted before it; N may not go backwards or break alignment)."""
    if not isinstance(at, int) or isinstance(at, bool) or at < 0:
        raise _error(f"an offset is an int >= 0, not {at!r}")
    return _Offset(at)


def struct(cls: type | None = None, *, pack: int | None = None) -> Any:
    """Turn a class of annotated fields (ctypes types, :func:`array`, other layouts) into a
    little-endian ctypes structure with the same name; ``pack`` as C's ``#pragma pack``."""

    def build(c: type, scope: Any) -> Any:
        # Annotations are names in the scope that defines the class (a module, a function,
        # code run with exec).
        hints = typing.get_type_hints(c, scope.f_globals, scope.f_locals)
        fields: list[tuple[str, Any]] = []
        at = 0
        for i, (name, ftype) in enumerate(hints.items()):
            _check_type(ftype, f"{c.__name__}.{name}")
            place = vars(c).get(name)
            if isinstance(place, _Offset):
                align = 1 if pack else ctypes.alignment(ftype)
                if place.at < at or place.at % align:
                    raise _error(
                        f"{c.__name__}.{name}: offset {place.at} is before the end of the "
                        f"previous field ({at}) or not a multiple of its alignment ({align})"
                    )
                if place.at > at:
                    fields.append((f"_pad{i}", ctypes.c_uint8 * (place.at - at)))
                at = place.at
            fields.append((name, ftype))
            probe = _make(c.__name__, fields, pack)
            at = getattr(probe, name).offset + ctypes.sizeof(ftype)
        return _make(c.__name__, fields, pack)

    if cls is None:
        return lambda c: build(c, sys._getframe(1))
    return build(cls, sys._getframe(1))


def _make(name: str, fields: list[tuple[str, Any]], pack: int | None) -> Any:
    body: dict[str, Any] = {"_fields_": fields}
    if pack:
        body["_pack_"] = pack
    return type(name, (ctypes.LittleEndianStructure,), body)


def _is_array(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, ctypes.Array)


def _is_struct(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, (ctypes.Structure, ctypes.Union))


def _check_type(t: Any, where: str) -> None:
    if _is_struct(t):
        return
    if _is_array(t):
        _check_type(t._type_, where)
        return
    code = getattr(t, "_type_", None)
    if not isinstance(code, str) or code not in _SIGNED + _UNSIGNED + _FLOAT + "c?":
        raise _error(
            f"{where}: {getattr(t, '__name__', t)!r} is not a layout type (an integer, float, "
            "char or bool ctypes type, an array of them, or a structure)"
        )


def sizeof(t: Any) -> int:
    """Bytes of layout ``t``, padding included (C's ``sizeof``)."""
    return int(ctypes.sizeof(t))


# -- where fields are ----------------------------------------------------------------------

_STEP = re.compile(r"\.?([A-Za-z_]\w*)|\[(\d+)\]")


def _resolve(t: Any, path: str) -> tuple[int, Any]:
    """(offset within ``t``, type) of the field ``path`` names: ``a.b[3].c``."""
    at = 0
    pos = 0
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None:
            raise _error(f"{path!r}: not a field path (names, dots and [index])")
        pos = m.end()
        if m[1] is not None:
            names = {f[0]: f for f in getattr(t, "_fields_", ())}
            if m[1] not in names:
                raise _error(f"{getattr(t, '__name__', t)} has no field {m[1]!r} ({path!r})")
            at += getattr(t, m[1]).offset
            t = names[m[1]][1]
        else:
            if not _is_array(t):
                raise _error(f"{path!r}: [{m[2]}] indexes something that is not an array")
            i = int(m[2])
            if i >= t._length_:
                raise _error(f"{path!r}: index {i} is outside an array of {t._length_}")
            at += i * ctypes.sizeof(t._type_)
            t = t._type_
    return at, t


def offsetof(t: Any, path: str = "") -> int:
    """Byte offset of the field ``path`` (``"records[2].key"``): within the layout ``t``,
    or, for a :func:`typed` accessor, within its view."""
    if isinstance(t, _Typed):
        return span(t, path)[0]
    return _resolve(t, path)[0]


def span(t: Any, path: str = "") -> tuple[int, int]:
    """``(offset, size)`` of a field of a typed accessor in its view:
    ``v.persist(*span(rec, "value"))``."""
    if not isinstance(t, _Typed):
        raise _error(f"span() takes a typed accessor (from layout.typed), not {t!r}")
    base, ctype = object.__getattribute__(t, "_at"), object.__getattribute__(t, "_type")
    at, ftype = _resolve(ctype, path)
    return base + at, ctypes.sizeof(ftype)


def addressof(t: Any, path: str = "") -> int:
    """The absolute address of a field of a typed accessor (for the set's own methods)."""
    view: View = object.__getattribute__(t, "_view")
    return view.address_of(span(t, path)[0])


def lines(t: Any, path: str = "", *, unit: int = _LINE) -> list[int]:
    """Offsets of the cache lines (or other ``unit``) the field occupies."""
    if isinstance(t, _Typed):
        at, size = span(t, path)
    else:
        at, ftype = _resolve(t, path)
        size = ctypes.sizeof(ftype)
    first, last = at - at % unit, at + max(size, 1) - 1
    return list(range(first, last - last % unit + 1, unit))


def _leaves(t: Any, prefix: str, at: int) -> Iterator[tuple[str, int, Any]]:
    if _is_struct(t):
        for f in t._fields_:
            if f[0].startswith("_pad"):
                continue
            name = f"{prefix}.{f[0]}" if prefix else f[0]
            yield from _leaves(f[1], name, at + getattr(t, f[0]).offset)
    elif _is_array(t) and t._type_ is not ctypes.c_char:
        for i in range(t._length_):
            yield from _leaves(t._type_, f"{prefix}[{i}]", at + i * ctypes.sizeof(t._type_))
    else:
        yield prefix, at, t


def crossings(t: Any, *, unit: int = _LINE, base: int = 0) -> list[tuple[str, int, int]]:
    """``(path, offset, size)`` of every leaf field of layout ``t`` (placed at ``base``) that
    straddles a ``unit`` boundary: with 64, a field two cache lines hold (two lines, two
    flushes, no ordering between them); with 8, a field no single store can write
    failure-atomically."""
    out = []
    for path, at, ftype in _leaves(t, "", base):
        size = ctypes.sizeof(ftype)
        if size and at // unit != (at + size - 1) // unit:
            out.append((path, at, size))
    return out


# -- accessors -----------------------------------------------------------------------------


def typed(view: View, t: Any, at: int = 0) -> Any:
    """The layout ``t`` (a ctypes structure or array) at offset ``at`` of ``view``: fields
    read and assigned as attributes (and items, for arrays), each assignment one store."""
    if not isinstance(view, View):
        raise _error(f"typed() puts a layout on a View, not {view!r}")
    _check_type(t, "typed()")
    view.address_of(at)  # the offset is inside the view
    if at + ctypes.sizeof(t) > view.size:
        raise _error(
            f"{getattr(t, '__name__', t)} ({ctypes.sizeof(t)} bytes) at {at} does not fit a "
            f"view of {view.size} bytes"
        )
    return _accessor(view, t, at)


def _accessor(view: View, t: Any, at: int) -> Any:
    if _is_array(t) and t._type_ is not ctypes.c_char:
        return _TypedArray(view, t, at)
    if _is_struct(t):
        return _TypedStruct(view, t, at)
    return None


def _encode(t: Any, value: Any, where: str) -> bytes:
    """``value`` as the bytes a store of type ``t`` writes (range-checked: ctypes would wrap)."""
    if _is_array(t):  # char[N]: bytes, zero-padded
        if not isinstance(value, (bytes, bytearray, memoryview)) or len(value) > t._length_:
            raise _error(f"{where} takes at most {t._length_} bytes, not {value!r}")
        return bytes(value).ljust(t._length_, b"\0")
    code = t._type_
    size = ctypes.sizeof(t)
    if code in _SIGNED + _UNSIGNED:
        lo, hi = (
            (-(1 << (8 * size - 1)), 1 << (8 * size - 1)) if code in _SIGNED else (0, 1 << 8 * size)
        )
        if type(value) is not int or not lo <= value < hi:
            raise _error(f"{value!r} does not fit {where} ({t.__name__}: [{lo}, {hi - 1}])")
    elif code == "?":
        if not isinstance(value, bool):
            raise _error(f"{where} is a bool, not {value!r}")
    elif code == "c":
        if not isinstance(value, bytes) or len(value) != 1:
            raise _error(f"{where} is one byte (bytes of length 1), not {value!r}")
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _error(f"{where} is a number, not {value!r}")
    return bytes(t(value))


class _Typed:
    __slots__ = ("_at", "_type", "_view")

    def __init__(self, view: View, t: Any, at: int) -> None:
        object.__setattr__(self, "_view", view)
        object.__setattr__(self, "_type", t)
        object.__setattr__(self, "_at", at)

    def _load(self, t: Any, at: int) -> Any:
        view: View = object.__getattribute__(self, "_view")
        sub = _accessor(view, t, at)
        if sub is not None:
            return sub
        data = view.read(at, ctypes.sizeof(t))
        if _is_array(t):  # char[N]: the raw bytes
            return data
        return t.from_buffer_copy(data).value

    def _assign(self, t: Any, at: int, value: Any, where: str, frame: Any) -> None:
        """Store ``value`` into the field of type ``t`` at ``at``: one store per leaf."""
        view: View = object.__getattribute__(self, "_view")
        if _is_struct(t):
            if isinstance(value, t):
                value = {f[0]: getattr(value, f[0]) for f in t._fields_}
            if not isinstance(value, dict):
                raise _error(
                    f"assign {where} a {t.__name__} or a dict of its fields, not {value!r}"
                )
            names = {f[0]: f[1] for f in t._fields_}
            unknown = set(value) - set(names)
            if unknown:
                raise _error(f"{t.__name__} has no field(s) {', '.join(sorted(unknown))}")
            for name, ftype in names.items():  # declaration order, as C writes a struct
                if name in value:
                    sub = at + getattr(t, name).offset
                    self._assign(ftype, sub, value[name], f"{where}.{name}", frame)
            return
        if _is_array(t) and t._type_ is not ctypes.c_char:
            items = list(value) if isinstance(value, (Sequence, ctypes.Array)) else None
            if items is None or len(items) != t._length_:
                raise _error(f"assign {where} a sequence of {t._length_} items, not {value!r}")
            width = ctypes.sizeof(t._type_)
            for i, item in enumerate(items):
                self._assign(t._type_, at + i * width, item, f"{where}[{i}]", frame)
            return
        view._store_from(at, _encode(t, value, where), frame)


class _TypedStruct(_Typed):
    """A struct on a view: ``s.field`` reads, ``s.field = x`` stores."""

    __slots__ = ()

    def _field(self, name: str) -> tuple[Any, int]:
        t = object.__getattribute__(self, "_type")
        for f in t._fields_:
            if f[0] == name:
                if len(f) > 2:
                    raise _error(f"{t.__name__}.{name} is a bit field: store its unit instead")
                return f[1], object.__getattribute__(self, "_at") + getattr(t, name).offset
        raise AttributeError(f"{t.__name__} has no field {name!r}")

    def __getattr__(self, name: str) -> Any:
        ftype, at = self._field(name)
        return self._load(ftype, at)

    def __setattr__(self, name: str, value: Any) -> None:
        ftype, at = self._field(name)
        t = object.__getattribute__(self, "_type")
        self._assign(ftype, at, value, f"{t.__name__}.{name}", sys._getframe(1))

    def __dir__(self) -> list[str]:
        return [f[0] for f in object.__getattribute__(self, "_type")._fields_]

    def __repr__(self) -> str:
        t = object.__getattribute__(self, "_type")
        return f"<{t.__name__} at +0x{object.__getattribute__(self, '_at'):x}>"


class _TypedArray(_Typed):
    """An array on a view: ``a[i]`` reads, ``a[i] = x`` stores one element."""

    __slots__ = ()

    def __len__(self) -> int:
        return int(object.__getattribute__(self, "_type")._length_)

    def _element(self, index: int) -> tuple[Any, int]:
        t = object.__getattribute__(self, "_type")
        if type(index) is not int:
            raise _error(f"an array index is an int, not {index!r}")
        n = t._length_
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise _error(f"index {index} is outside an array of {n}")
        return t._type_, object.__getattribute__(self, "_at") + index * ctypes.sizeof(t._type_)

    def __getitem__(self, index: int) -> Any:
        etype, at = self._element(index)
        return self._load(etype, at)

    def __setitem__(self, index: int, value: Any) -> None:
        etype, at = self._element(index)
        self._assign(etype, at, value, f"[{index}]", sys._getframe(1))

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        t = object.__getattribute__(self, "_type")
        return f"<{t._type_.__name__}[{t._length_}] at +0x{object.__getattribute__(self, '_at'):x}>"
