"""pmemsim._records.NamedTuple behaves as typing.NamedTuple: each class is made with both,
and everything a program may do with it is compared."""

from __future__ import annotations

import copy
import pickle
import typing
from typing import Any

import pytest

from pmemsim import _records

FAST: Any = _records.NamedTuple
STANDARD: Any = typing.NamedTuple


def _classes(base: Any) -> dict[str, Any]:
    class Point(base):
        x: int
        y: int

    class Defaults(base):
        """A docstring of its own."""

        name: str
        size: int = 8
        tags: tuple[str, ...] = ()

    class WithMethods(base):
        a: int
        b: str

        def __str__(self) -> str:
            return f"{self.b}:{self.a}"

        @property
        def double(self) -> int:
            return 2 * self.a

        @classmethod
        def one(cls) -> Any:
            return cls(1, "one")

        LIMIT = 10  # a class attribute, not a field (no annotation)

    class Single(base):
        only: bytes

    class Empty(base):
        pass

    return {c.__name__: c for c in (Point, Defaults, WithMethods, Single, Empty)}


FAST_CLASSES = _classes(FAST)
STANDARD_CLASSES = _classes(STANDARD)
# Module-level names, for pickle (it finds a class by its module and qualified name).
for _name, _cls in FAST_CLASSES.items():
    _cls.__qualname__ = f"Fast{_name}"
    globals()[f"Fast{_name}"] = _cls

ARGS = {
    "Point": [(1, 2), (-5, 10**30)],
    "Defaults": [("a",), ("b", 3), ("c", 4, ("x", "y"))],
    "WithMethods": [(7, "seven")],
    "Single": [(b"\x00\x01",)],
    "Empty": [()],
}


def _same(fast: Any, standard: Any) -> None:
    assert type(fast).__name__ == type(standard).__name__
    assert tuple(fast) == tuple(standard)
    assert fast == standard and hash(fast) == hash(standard)  # (tuple's)
    assert repr(fast) == repr(standard)
    assert str(fast) == str(standard)
    assert fast._asdict() == standard._asdict()
    assert fast._fields == standard._fields
    assert fast._field_defaults == standard._field_defaults
    assert type(fast).__match_args__ == type(standard).__match_args__
    for index, name in enumerate(fast._fields):
        assert getattr(fast, name) == getattr(standard, name) == fast[index]
    assert isinstance(fast, tuple) and len(fast) == len(standard)


@pytest.mark.parametrize("name", sorted(ARGS))
def test_the_same_instances_as_typing(name: str) -> None:
    fast_cls, standard_cls = FAST_CLASSES[name], STANDARD_CLASSES[name]
    assert fast_cls._fields == standard_cls._fields
    for args in ARGS[name]:
        fast, standard = fast_cls(*args), standard_cls(*args)
        _same(fast, standard)
        by_name = dict(zip(fast._fields, args, strict=False))
        _same(fast_cls(**by_name), standard_cls(**by_name))
        _same(fast_cls._make(tuple(fast)), standard_cls._make(tuple(standard)))
        _same(copy.copy(fast), copy.deepcopy(standard))
        again = pickle.loads(pickle.dumps(fast))
        assert type(again) is fast_cls
        _same(again, standard)
        if fast._fields:
            first = fast._fields[0]
            _same(fast._replace(**{first: args[0]}), standard._replace(**{first: args[0]}))


def test_methods_properties_and_class_attributes_are_kept() -> None:
    fast = FAST_CLASSES["WithMethods"].one()
    assert (str(fast), fast.double, type(fast).LIMIT) == ("one:1", 2, 10)
    assert FAST_CLASSES["Defaults"].__doc__ == "A docstring of its own."


def test_matching_by_position_and_name() -> None:
    match FAST_CLASSES["Point"](3, 4):
        case FastPoint(x, y=4):  # type: ignore[name-defined]  # noqa: F821
            assert x == 3
        case _:
            pytest.fail("no match")


@pytest.mark.parametrize("base", [FAST, STANDARD], ids=["fast", "typing"])
def test_the_same_mistakes_are_refused(base: Any) -> None:
    cls = _classes(base)["Point"]
    with pytest.raises(TypeError):
        cls(1)
    with pytest.raises(TypeError):
        cls(1, 2, 3)
    with pytest.raises(TypeError):
        cls._make((1,))
    with pytest.raises(ValueError):
        cls(1, 2)._replace(z=3)
    with pytest.raises(AttributeError):
        cls(1, 2).x = 5
    with pytest.raises(AttributeError):
        cls(1, 2).other = 5
    with pytest.raises(TypeError, match="cannot follow default"):

        class Bad(base):
            a: int = 1
            b: int

    with pytest.raises(AttributeError, match="overwrite"):

        class Worse(base):
            a: int

            def _replace(self) -> None: ...


def test_a_subclass_of_a_named_tuple_is_an_ordinary_class() -> None:
    class Labelled(FAST_CLASSES["Point"]):  # type: ignore[misc]
        def label(self) -> str:
            return f"({self.x}, {self.y})"

    assert Labelled(1, 2).label() == "(1, 2)" and Labelled(1, 2) == (1, 2)


def test_no_code_is_compiled_for_a_class_seen_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """What pmemsim's start-up saves: no compilation (typing compiles each annotation)."""
    from pmemsim import _dataclass

    compiled: list[str] = []

    def counting(*args: Any) -> Any:
        compiled.append(args[1])
        return compile(*args)

    monkeypatch.setattr(_dataclass, "compile", counting, raising=False)
    _classes(FAST)
    assert compiled == []  # (each __new__ was compiled once, when this module was imported)
