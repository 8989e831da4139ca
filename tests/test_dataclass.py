"""pmemsim._dataclass against the standard library's: the same class body, decorated by each,
must behave the same in everything pmemsim relies on."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest

from pmemsim import _dataclass

OPTIONS = [
    {},
    {"frozen": True},
    {"slots": True},
    {"frozen": True, "slots": True},
    {"eq": False},
    {"frozen": True, "slots": True, "order": True},
]

# Module level, so that pickle finds them: one class per (decorator, options).
_made: dict[tuple[str, int], Any] = {}


def _make(which: str, i: int) -> Any:
    if (which, i) in _made:
        return _made[which, i]
    mod = dataclasses if which == "std" else _dataclass

    class Point:
        """A point."""

        x: int
        y: int = 2
        tags: list[str] = mod.field(default_factory=list)
        note: str = mod.field(default="", repr=False, compare=False)

    Point.__qualname__ = Point.__name__ = f"Point_{which}_{i}"
    cls = mod.dataclass(**OPTIONS[i])(Point)
    globals()[cls.__name__] = cls
    _made[which, i] = cls
    return cls


def _outcome(call: Any) -> Any:
    try:
        return ("ok", call())
    except Exception as exc:
        return ("raised", type(exc).__name__ if not isinstance(exc, AttributeError) else "attr")


def _own_module(cls: Any) -> Any:
    return _dataclass if "_ours_" in cls.__name__ else dataclasses


def _observe(cls: Any) -> dict[str, Any]:
    a, b = cls(1), cls(1, 2, ["t"], "n")
    c = cls(x=1, y=2, tags=["t"], note="other")
    seen: dict[str, Any] = {
        "fields": (a.x, a.y, a.tags, a.note, b.tags, b.note),
        "fresh factory": cls(1).tags is not cls(1).tags,
        "repr": repr(b).split("(", 1)[1],
        "eq": (a == cls(1), b == c, a == b, a == (1, 2), a != cls(1)),
        "hash": _outcome(lambda: hash(cls(1, 2, (), "a")) == hash(cls(1, 2, (), "b"))),
        "lt": _outcome(lambda: (a < b, b <= c, b > a, a >= a)),
        "assign": _outcome(lambda: setattr(cls(1), "x", 5)),
        "delete": _outcome(lambda: delattr(cls(1), "x")),
        # (The standard library's frozen slotted class raises TypeError here: a 3.11 bug.)
        "new attribute refused": _outcome(lambda: setattr(cls(1), "other", 1))[0],
        "slots": hasattr(cls, "__slots__") and not hasattr(a, "__dict__"),
        "match args": cls.__match_args__,
        "replace": _outcome(lambda: repr(dataclasses.replace(b, y=7)).split("(", 1)[1]),
        "our replace": repr(
            (_dataclass if cls.__name__.startswith("Point_ours") else dataclasses).replace(b, x=3)
        ).split("(", 1)[1],
        "fields()": [(f.name, f.repr, f.compare) for f in dataclasses.fields(cls)],
        "asdict": dataclasses.asdict(b),
        "is_dataclass": dataclasses.is_dataclass(a),
        "copy": (copy.copy(b) == b, copy.deepcopy(b) == b, copy.deepcopy(b).tags is not b.tags),
    }
    match b:
        case cls(1, 2):
            seen["match"] = True
        case _:
            seen["match"] = False
    return seen


@pytest.mark.parametrize("i", range(len(OPTIONS)), ids=[repr(o) for o in OPTIONS])
def test_same_behaviour_as_the_standard_library(i: int) -> None:
    assert _observe(_make("ours", i)) == _observe(_make("std", i))


@pytest.mark.parametrize("i", range(len(OPTIONS)), ids=[repr(o) for o in OPTIONS])
def test_pickles_round_trip(i: int) -> None:
    for which in ("std", "ours"):
        cls = _make(which, i)
        b = cls(1, 2, ["t"], "n")
        back = pickle.loads(pickle.dumps(b))
        assert (back.x, back.y, back.tags, back.note) == (1, 2, ["t"], "n")


def test_post_init_runs_after_the_fields() -> None:
    @_dataclass.dataclass(frozen=True)
    class Checked:
        n: int

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError("negative")

    assert Checked(1).n == 1
    with pytest.raises(ValueError, match="negative"):
        Checked(-1)


def test_the_same_mistakes_are_refused() -> None:
    for mod in (dataclasses, _dataclass):
        with pytest.raises(TypeError, match="non-default argument 'b' follows default"):

            @mod.dataclass
            class Late:
                a: int = 0
                b: int  # type: ignore[misc]

        with pytest.raises(ValueError, match="mutable default"):

            @mod.dataclass
            class Shared:
                items: list[int] = []  # noqa: RUF012


def test_a_subclass_of_a_frozen_class_may_add_attributes() -> None:
    """As markers.CrashInfo's subclass in explore/lazy.py does."""

    @_dataclass.dataclass(frozen=True, slots=True)
    class Info:
        point: int

    class Observed(Info):
        __slots__ = ("extra",)

        def __init__(self, point: int) -> None:
            super().__init__(point)
            self.extra = 1

    o = Observed(3)
    assert (o.point, o.extra) == (3, 1)
    assert [f.name for f in dataclasses.fields(o)] == ["point"]
    with pytest.raises(_dataclass.FrozenInstanceError):
        o.point = 4
    assert isinstance(_dataclass.FrozenInstanceError("x"), AttributeError)


def test_a_class_defining_eq_keeps_it_and_is_unhashable_as_standard() -> None:
    for mod in (dataclasses, _dataclass):

        @mod.dataclass
        class Own:
            a: int

            def __eq__(self, other: object) -> bool:
                return True

        assert Own(1) == Own(2)
        assert Own.__hash__ is None


# -- the code cache -------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A code cache of this test's own (in tmp_path), empty, and a count of compilations."""
    path = tmp_path / "pycache" / "_dataclass.inits"
    monkeypatch.setattr(_dataclass, "_cache_path", lambda: str(path))
    monkeypatch.setattr("sys.dont_write_bytecode", False)
    monkeypatch.setattr(_dataclass, "_CODE", None)
    monkeypatch.setattr(_dataclass, "_NEW", set())
    monkeypatch.setattr(_dataclass, "_USED", set())
    compiled: list[str] = []

    def counting(text: str, name: str, mode: str) -> Any:
        compiled.append(name)
        return compile(text, name, mode)

    monkeypatch.setattr(_dataclass, "compile", counting, raising=False)
    return path, compiled


def _point_class() -> type:
    @_dataclass.dataclass(frozen=True)
    class Point:
        x: int
        y: int = 2

    return Point


def _new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a new process starts with: no code loaded, nothing compiled yet."""
    monkeypatch.setattr(_dataclass, "_CODE", None)
    monkeypatch.setattr(_dataclass, "_NEW", set())
    monkeypatch.setattr(_dataclass, "_USED", set())


def test_a_class_defined_again_in_a_new_process_is_not_compiled_again(
    cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, compiled = cache
    assert _point_class()(1).y == 2
    assert len(compiled) == 1 and not path.exists()
    _dataclass._save_code()  # (at exit)
    assert path.exists()
    _new_process(monkeypatch)
    Point = _point_class()
    assert len(compiled) == 1  # from the cache
    assert Point(5) == Point(5, 2) and Point(1).x == 1
    with pytest.raises(_dataclass.FrozenInstanceError):
        Point(1).x = 3  # type: ignore[misc]


def test_a_changed_class_is_compiled_and_a_bad_cache_is_ignored(
    cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, compiled = cache
    _point_class()
    _dataclass._save_code()
    _new_process(monkeypatch)

    @_dataclass.dataclass(frozen=True)
    class Point:  # the same name, another field: its own code
        x: int
        z: int = 3

    assert len(compiled) == 2 and Point(1).z == 3
    for junk in (b"", b"garbage", path.read_bytes()[:-7]):
        path.write_bytes(junk)
        _new_process(monkeypatch)
        assert _point_class()(4).y == 2
    assert len(compiled) == 5


def test_nothing_is_written_where_python_writes_no_bytecode(
    cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = cache
    _point_class()
    monkeypatch.setattr("sys.dont_write_bytecode", True)
    _dataclass._save_code()
    assert not path.exists()


def test_the_cache_sits_beside_the_modules_compiled_code() -> None:
    import importlib.util

    where = _dataclass._cache_path()
    assert (
        where
        == importlib.util.cache_from_source(_dataclass.__file__).removesuffix(".pyc") + ".inits"
    )
