"""``dataclass`` and ``field`` for the classes on pmemsim's start-up path, at a tenth of the
cost of the standard library's.

``dataclasses.dataclass`` compiles four to seven functions per class and imports ``inspect``:
29 classes on ``check-log``'s path cost 11 ms, and the import another 5 ms, of a run that
pmreorder finishes in 40 ms (bench/bench_scale.py). Here only ``__init__`` is compiled (it is
called once per record of a log, so it must be as fast as the standard one), and only once:
the code is kept in a cache beside this module's .pyc file for the next process
(:func:`_compiled`); ``__repr__``, ``__eq__``, ``__hash__`` and the orderings are shared
functions over the fields.

The classes behave as the standard library's with the same arguments (tests/test_dataclass.py
compares them), and the standard library's ``dataclasses.fields``, ``replace``, ``asdict`` and
``is_dataclass`` accept them: their ``__dataclass_fields__`` is built, by the standard
decorator on a twin of the class, the first time something asks for it.

Only what pmemsim uses is supported; anything else is refused when the class is defined.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from types import CodeType
from typing import Any, TypeVar, dataclass_transform, overload

__all__ = ["FrozenInstanceError", "dataclass", "field", "replace"]

T = TypeVar("T", bound=type)
R = TypeVar("R")


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen instance (as the standard library's)."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Field:
    """What ``field()`` says of one field."""

    __slots__ = ("compare", "default", "default_factory", "name", "repr", "type")

    def __init__(self, default: Any, default_factory: Any, repr: bool, compare: bool) -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.type: object = None
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.compare = compare


def field(
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    repr: bool = True,
    compare: bool = True,
) -> Any:
    return Field(default, default_factory, repr, compare)


def replace(obj: R, /, **changes: Any) -> R:
    """``dataclasses.replace`` for these classes, without importing ``dataclasses``."""
    for f in obj._pmemsim_fields:  # type: ignore[attr-defined]
        changes.setdefault(f.name, getattr(obj, f.name))
    return obj.__class__(**changes)


@overload
def dataclass(cls: T, /) -> T: ...


@overload
def dataclass(
    *,
    eq: bool = True,
    order: bool = False,
    frozen: bool = False,
    slots: bool = False,
) -> Callable[[T], T]: ...


@dataclass_transform(field_specifiers=(field,))
def dataclass(
    cls: Any = None,
    /,
    *,
    eq: bool = True,
    order: bool = False,
    frozen: bool = False,
    slots: bool = False,
) -> Any:
    def wrap(cls: type) -> type:
        return _process(cls, eq=eq, order=order, frozen=frozen, slots=slots)

    return wrap if cls is None else wrap(cls)


def _fields_of(cls: type) -> list[Field]:
    if any(hasattr(base, "_pmemsim_fields") for base in cls.__mro__[1:]):
        raise TypeError(f"{cls.__name__}: inheriting fields is not supported here")
    fields = []
    own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 (inspect is what we avoid)
    for name, kind in own.items():
        if isinstance(kind, str) and kind.split("[")[0] in ("ClassVar", "typing.ClassVar"):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(value, MISSING, True, True)
        if isinstance(f.default, (list, dict, set)):
            raise ValueError(f"mutable default {type(f.default)} for field {name} is not allowed")
        f.name, f.type = name, kind
        fields.append(f)
    return fields


def _init(cls: type, fields: list[Field], frozen: bool) -> Callable[..., None]:
    env: dict[str, Any] = {"MISSING": MISSING, "setattr": object.__setattr__}
    params, body = [], []
    defaulted = False
    for f in fields:
        n = f.name
        if f.default_factory is not MISSING:
            env[f"factory_{n}"] = f.default_factory
            params.append(f"{n}=MISSING")
            value = f"factory_{n}() if {n} is MISSING else {n}"
            defaulted = True
        elif f.default is not MISSING:
            env[f"default_{n}"] = f.default
            params.append(f"{n}=default_{n}")
            value = n
            defaulted = True
        elif defaulted:
            raise TypeError(f"non-default argument {n!r} follows default argument")
        else:
            params.append(n)
            value = n
        body.append(f"setattr(self, {n!r}, {value})" if frozen else f"self.{n} = {value}")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    text = f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(body or ["pass"])
    exec(_compiled(text, f"<{cls.__qualname__}.__init__>"), env)
    init: Callable[..., None] = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _compiled(text: str, name: str) -> CodeType:
    """``compile(text, name, "exec")``, from the code cache where it holds it: compiling
    took about half of this module's cost (29 classes: 0.6 ms, and the compiler's first use
    as much again)."""
    global _CODE
    if _CODE is None:
        _CODE = _load_code()
    key = (name, text)
    code = _CODE.get(key)
    if code is None:
        code = _CODE[key] = compile(text, name, "exec")
        if not _NEW:
            import atexit

            atexit.register(_save_code)
        _NEW.add(key)
    _USED.add(key)
    return code


#: The code cache: a marshal file of ``{(name, text): code}`` where Python keeps this
#: module's compiled code, written (as Python writes its .pyc files: unless told not to,
#: and where it may) at exit when this process compiled something it did not hold. A stale
#: entry is never used (the key is the source) and is dropped once the file has many.
_CODE: dict[tuple[str, str], CodeType] | None = None
_NEW: set[tuple[str, str]] = set()
_USED: set[tuple[str, str]] = set()
_CACHE_MAX = 256


def _cache_path() -> str | None:
    import importlib.util

    try:
        pyc = importlib.util.cache_from_source(__file__)
    except (NotImplementedError, ValueError):  # no cache tag, or no source
        return None
    return pyc.removesuffix(".pyc") + ".inits"


def _load_code() -> dict[tuple[str, str], CodeType]:
    import importlib.util
    import marshal

    path = _cache_path()
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            data = f.read()
        magic = importlib.util.MAGIC_NUMBER
        if data[: len(magic)] == magic:
            got = marshal.loads(data[len(magic) :])
            if isinstance(got, dict):
                return got
    except (OSError, EOFError, ValueError, TypeError):
        pass
    return {}


def _save_code() -> None:
    import contextlib
    import importlib.util
    import marshal
    import os
    import sys

    path = _cache_path()
    if path is None or sys.dont_write_bytecode or _CODE is None:
        return
    keep = _CODE if len(_CODE) <= _CACHE_MAX else {k: _CODE[k] for k in _USED}
    temp = f"{path}.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temp, "wb") as f:
            f.write(importlib.util.MAGIC_NUMBER + marshal.dumps(keep))
        os.replace(temp, path)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _values(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda self: (one(self),)
    return attrgetter(*names) if names else (lambda self: ())


def _compare(values: Callable[[Any], tuple[Any, ...]], op: str) -> Callable[[Any, Any], Any]:
    test = getattr(tuple, f"__{op}__")

    def compare(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return test(values(self), values(other))
        return NotImplemented

    compare.__name__ = f"__{op}__"
    return compare


def _frozen(cls: type, names: frozenset[str]) -> dict[str, Callable[..., None]]:
    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        object.__delattr__(self, name)

    return {"__setattr__": __setattr__, "__delattr__": __delattr__}


class _StandardFields:
    """``__dataclass_fields__``, made by the standard decorator when first asked for."""

    def __init__(self, options: dict[str, bool]) -> None:
        self.options = options

    def __get__(self, obj: object, owner: type) -> Any:
        import dataclasses

        namespace: dict[str, Any] = {"__annotations__": {}}
        for f in owner._pmemsim_fields:  # type: ignore[attr-defined]
            namespace["__annotations__"][f.name] = f.type
            given = {"default": f.default, "default_factory": f.default_factory}
            namespace[f.name] = dataclasses.field(
                **{k: v for k, v in given.items() if v is not MISSING},
                repr=f.repr,
                compare=f.compare,
            )
        twin: Any = dataclasses.dataclass(**self.options)(type(owner.__name__, (), namespace))
        fields: dict[str, Any] = twin.__dataclass_fields__
        type.__setattr__(owner, "__dataclass_fields__", fields)
        return fields


def _process(cls: type, *, eq: bool, order: bool, frozen: bool, slots: bool) -> type:
    fields = _fields_of(cls)
    names = [f.name for f in fields]
    own = cls.__dict__
    methods: dict[str, Any] = {
        "_pmemsim_fields": tuple(fields),
        "__match_args__": tuple(names),
        "__init__": _init(cls, fields, frozen),
        "__dataclass_fields__": _StandardFields(
            {"eq": eq, "order": order, "frozen": frozen, "slots": slots}
        ),
    }
    if "__repr__" not in own:
        shown = [f.name for f in fields if f.repr]

        def __repr__(self: Any) -> str:
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
            return f"{self.__class__.__qualname__}({inner})"

        methods["__repr__"] = __repr__
    compared = _values([f.name for f in fields if f.compare])
    if eq and "__eq__" not in own:
        methods["__eq__"] = _compare(compared, "eq")
    if order:
        for op in ("lt", "le", "gt", "ge"):
            methods[f"__{op}__"] = _compare(compared, op)
    # A class that defines __eq__ and not __hash__ has __hash__ = None in its body (Python's doing).
    explicit_hash = own.get("__hash__", MISSING) is not MISSING and not (
        own["__hash__"] is None and "__eq__" in own
    )
    if eq and not explicit_hash:
        methods["__hash__"] = (lambda self: hash(compared(self))) if frozen else None
    if frozen and slots:  # pickle restores a slotted instance through setattr, refused here
        methods["__getstate__"] = lambda self: [getattr(self, n) for n in names]
        methods["__setstate__"] = _setstate(names)
    for f in fields:  # the defaults live in __init__ (and in slots, a class value would clash)
        if f.name in own and (slots or isinstance(own[f.name], Field)):
            delattr(cls, f.name)
    if slots:
        body = {k: v for k, v in own.items() if k not in ("__dict__", "__weakref__")}
        body["__slots__"] = tuple(names)
        cls = type(cls)(cls.__name__, cls.__bases__, body)
    if frozen:
        methods.update(_frozen(cls, frozenset(names)))
    for name, value in methods.items():
        setattr(cls, name, value)
    return cls


def _setstate(names: list[str]) -> Callable[[Any, list[Any]], None]:
    def __setstate__(self: Any, state: list[Any]) -> None:
        for n, v in zip(names, state, strict=True):
            object.__setattr__(self, n, v)

    return __setstate__
