"""``NamedTuple`` for pmemsim's named tuples, without compiling anything.

``typing.NamedTuple`` compiles each field's annotation (a string, under postponed
evaluation) and ``collections.namedtuple`` compiles ``__new__``: 66 compilations for the
11 named tuples on ``check-log``'s path, which with the compiler's first use and typing's
own work took 8% of a short check's instructions (valgrind's callgrind: 208 million
instructions, 190 million without). Here the annotations are only read for the fields'
names, and ``__new__``'s code comes from :mod:`pmemsim._dataclass`'s code cache.

The classes behave as ``typing.NamedTuple``'s (tests/test_records.py compares them): a
``tuple`` subclass with named fields and defaults, ``_fields``, ``_field_defaults``,
``_make``, ``_replace``, ``_asdict``, ``__match_args__``, pickling, and the methods and
properties the class body defines. Type checkers see ``typing.NamedTuple`` (import it as
``from pmemsim._records import NamedTuple``).
"""

from __future__ import annotations

import _collections  # type: ignore[import-not-found]
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ._dataclass import _compiled

__all__ = ["NamedTuple"]

#: What a named tuple's class body may not define (the tuple's own machinery).
_OWN = frozenset(
    ("__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults")
) | frozenset(("_make", "_replace", "_asdict", "_source"))
#: What the class body holds that is not a field, a default or something to keep.
_SKIP = frozenset(
    ("__annotations__", "__module__", "__qualname__", "__orig_bases__", "__classcell__")
)


class _Meta(type):
    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
        if bases != (_Base,):
            raise TypeError("a named tuple's class must have NamedTuple as its only base")
        fields = list(ns.get("__annotations__", {}))
        defaults = {}
        for f in fields:
            if f in ns:
                defaults[f] = ns[f]
            elif defaults:
                raise TypeError(
                    f"Non-default namedtuple field {f} cannot follow default field"
                    f"{'s' if len(defaults) > 1 else ''} {', '.join(defaults)}"
                )
        cls = _tuple_class(name, fields, defaults, ns)
        for key, value in ns.items():
            if key in _OWN:
                raise AttributeError(f"Cannot overwrite NamedTuple attribute {key}")
            if key not in _SKIP and key not in defaults and key not in fields:
                setattr(cls, key, value)
                set_name = getattr(type(value), "__set_name__", None)
                if set_name is not None:
                    set_name(value, cls, key)
        return cls


_Base = type.__new__(_Meta, "NamedTuple", (), {})


def _named_tuple(*args: Any, **kwargs: Any) -> Any:
    raise TypeError("only the class form of NamedTuple is supported here")


_named_tuple.__mro_entries__ = lambda bases: (_Base,)  # type: ignore[attr-defined]

if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    NamedTuple = _named_tuple


def _field(index: int) -> Any:
    """The descriptor of field ``index``: the C one collections.namedtuple uses, where
    there is one."""
    doc = f"Alias for field number {index}"
    getter = getattr(_collections, "_tuplegetter", None)
    return property(itemgetter(index), doc=doc) if getter is None else getter(index, doc)


def _tuple_class(name: str, fields: list[str], defaults: dict[str, Any], ns: dict[str, Any]) -> Any:
    qualname = ns.get("__qualname__", name)
    args = ", ".join(fields)
    values = f"({args},)" if len(fields) == 1 else f"({args})"
    text = f"def __new__(_cls, {args}):\n    return _new(_cls, {values})"
    env: dict[str, Any] = {"_new": tuple.__new__}
    exec(_compiled(text, f"<{qualname}.__new__>"), env)
    new = env["__new__"]
    new.__qualname__ = f"{qualname}.__new__"
    new.__doc__ = f"Create new instance of {name}({args})"
    if defaults:
        new.__defaults__ = tuple(defaults.values())
    field_tuple = tuple(fields)
    n = len(fields)

    def _make(cls: Any, iterable: Any) -> Any:
        made = tuple.__new__(cls, iterable)
        if len(made) != n:
            raise TypeError(f"Expected {n} arguments, got {len(made)}")
        return made

    def _replace(self: Any, /, **changes: Any) -> Any:
        made = self._make(map(changes.pop, field_tuple, self))
        if changes:
            raise ValueError(f"Got unexpected field names: {list(changes)!r}")
        return made

    shown = ", ".join(f"{f}=%r" for f in fields)

    def __repr__(self: Any) -> str:
        return f"{self.__class__.__name__}({shown % tuple(self)})"

    def _asdict(self: Any) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))

    def __getnewargs__(self: Any) -> tuple[Any, ...]:
        return tuple(self)

    body: dict[str, Any] = {
        "__doc__": ns.get("__doc__") or f"{name}({args})",
        "__slots__": (),
        "_fields": field_tuple,
        "_field_defaults": dict(defaults),
        "__new__": new,
        "_make": classmethod(_make),
        "_replace": _replace,
        "__repr__": __repr__,
        "_asdict": _asdict,
        "__getnewargs__": __getnewargs__,
        "__match_args__": field_tuple,
        "__module__": ns.get("__module__", __name__),
        "__qualname__": qualname,
        "__annotations__": dict(ns.get("__annotations__", {})),
    }
    for index, f in enumerate(fields):
        body[f] = _field(index)
    for method in (_make, _replace, __repr__, _asdict, __getnewargs__):
        method.__qualname__ = f"{qualname}.{method.__name__}"
    return type(name, (tuple,), body)
