"""The log replay makes its crash points with :func:`pmemsim.pmlog.fastreplay._point_maker`,
the inline judge its crash infos with :func:`pmemsim.pmlog.judging._info_maker` (slots set
directly, not through a frozen dataclass's __init__): the same objects, and the class's own
__init__ whenever its fields are not the ones set."""

from __future__ import annotations

import dataclasses

from pmemsim._dataclass import dataclass
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
    @dataclass(frozen=True, slots=True)
    class Wider:
        index: int
        kind: str
        position: str
        operation: int
        markers: tuple[str, ...]
        provenance: tuple[object, ...]
        state: object
        unsafe_state: object = None
        unsafe: object = None  # (last, defaulting to None as unsafe_state does)

    @dataclass(frozen=True)
    class Unslotted:
        index: int
        kind: str
        position: str
        operation: int
        markers: tuple[str, ...]
        provenance: tuple[object, ...]
        state: object
        unsafe_state: object = None

    @dataclass(frozen=True, slots=True)
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


def test_a_made_crash_info_is_the_dataclass_info() -> None:
    from pmemsim.markers import CrashInfo
    from pmemsim.pmlog.judging import _crash_info, _info_maker

    assert _crash_info is not CrashInfo  # (the fast way is taken for CrashInfo as it is)
    got, want = _crash_info(4, "fence", ("tx", "add")), CrashInfo(4, "fence", ("tx", "add"))
    assert type(got) is CrashInfo and got == want
    for f in dataclasses.fields(CrashInfo):
        assert getattr(got, f.name) == getattr(want, f.name)
    assert hash(got) == hash(want) and repr(got) == repr(want)

    @dataclass(frozen=True, slots=True)
    class Faulted:
        point: int
        kind: str
        markers: tuple[str, ...]
        faults: tuple[str, ...] = ("unsafe_shutdown",)

    @dataclass(frozen=True)
    class Unslotted:
        point: int
        kind: str
        markers: tuple[str, ...]
        faults: tuple[str, ...] = ()

    assert _info_maker(Faulted) is Faulted  # type: ignore[arg-type]
    assert _info_maker(Unslotted) is Unslotted  # type: ignore[arg-type]


def test_a_standard_library_dataclass_is_made_by_its_own_init() -> None:
    # (Its fields are not read: that would import dataclasses at start-up for pmemsim's.)
    @dataclasses.dataclass(frozen=True, slots=True)
    class Standard:
        point: int
        kind: str
        markers: tuple[str, ...]
        faults: tuple[str, ...] = ()

    from pmemsim.pmlog.judging import _info_maker

    assert _info_maker(Standard) is Standard  # type: ignore[arg-type]
