"""The log replay makes its crash points with :func:`pmemsim.pmlog.fastreplay._point_maker`
(slots set directly, not through a frozen dataclass's __init__): the same points, and the
class's own __init__ whenever its fields are not the ones it sets."""

from __future__ import annotations

import dataclasses

from pmemsim.explore.trace import CrashPoint
from pmemsim.pmlog.fastreplay import _point_maker


def test_a_made_point_is_the_dataclass_point() -> None:
    make = _point_maker(CrashPoint)
    assert make is not CrashPoint  # (the fast way is taken for CrashPoint as it is)
    state = object()
    args = (3, "fence", "before", 7, ("tx",), (), state)
    got, want = make(*args), CrashPoint(*args)
    assert type(got) is CrashPoint
    assert got == want
    for f in dataclasses.fields(CrashPoint):  # every field set, compared or not
        assert getattr(got, f.name) is getattr(want, f.name)
    assert hash(got) == hash(want) and repr(got) == repr(want)


def test_another_class_is_made_by_its_own_init() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Wider:
        index: int
        kind: str
        position: str
        operation: int
        markers: tuple[str, ...]
        provenance: tuple[object, ...]
        state: object
        unsafe_state: object = None
        more: int = 0

    @dataclasses.dataclass(frozen=True)
    class Unslotted:
        index: int
        kind: str
        position: str
        operation: int
        markers: tuple[str, ...]
        provenance: tuple[object, ...]
        state: object
        unsafe_state: object = None

    @dataclasses.dataclass(frozen=True, slots=True)
    class OtherDefault:
        index: int
        kind: str
        position: str
        operation: int
        markers: tuple[str, ...]
        provenance: tuple[object, ...]
        state: object
        unsafe_state: object = 0

    assert _point_maker(Wider) is Wider  # type: ignore[arg-type]
    assert _point_maker(OtherDefault) is OtherDefault  # type: ignore[arg-type]
    assert _point_maker(Unslotted) is Unslotted  # type: ignore[arg-type]
