"""Typed layouts (pmemsim.layout): C's offsets, one store per field with the assigning line as
its provenance, typed errors for what does not fit; plain_memcpy versus memcpy."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import lineno

import pmemsim as pm
from pmemsim import layout
from pmemsim.explore import CrashCheck, check
from pmemsim.provenance import locations


@layout.struct
class Header:
    magic: layout.u64
    count: layout.u32
    flags: layout.u16
    kind: layout.u8


@layout.struct
class Entry:
    key: layout.u64
    name: layout.array(ctypes.c_char, 13)
    weight: ctypes.c_double
    small: layout.i16


@layout.struct
class Pool:
    header: Header
    entries: layout.array(Entry, 3) = layout.offset(64)
    tail: layout.u64


class CEntry(ctypes.Structure):  # the same, declared the ctypes way
    _fields_ = [
        ("key", ctypes.c_uint64),
        ("name", ctypes.c_char * 13),
        ("weight", ctypes.c_double),
        ("small", ctypes.c_int16),
    ]


C_SOURCE = r"""
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
struct header { uint64_t magic; uint32_t count; uint16_t flags; uint8_t kind; };
struct entry { uint64_t key; char name[13]; double weight; int16_t small; };
struct pool { struct header header; char pad[64 - sizeof(struct header)];
              struct entry entries[3]; uint64_t tail; };
int main(void) {
    printf("%zu %zu %zu %zu %zu %zu %zu\n", sizeof(struct entry), offsetof(struct entry, name),
           offsetof(struct entry, weight), offsetof(struct entry, small), sizeof(struct pool),
           offsetof(struct pool, entries[2].weight), offsetof(struct pool, tail));
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_offsets_and_sizes_are_what_the_c_compiler_gives(tmp_path: Path) -> None:
    (tmp_path / "s.c").write_text(C_SOURCE)
    subprocess.run(["gcc", "-o", str(tmp_path / "s"), str(tmp_path / "s.c")], check=True)
    c = [
        int(x)
        for x in subprocess.run(
            [str(tmp_path / "s")], capture_output=True, text=True, check=True
        ).stdout.split()
    ]
    ours = [
        layout.sizeof(Entry),
        layout.offsetof(Entry, "name"),
        layout.offsetof(Entry, "weight"),
        layout.offsetof(Entry, "small"),
        layout.sizeof(Pool),
        layout.offsetof(Pool, "entries[2].weight"),
        layout.offsetof(Pool, "tail"),
    ]
    assert ours == c
    assert layout.sizeof(CEntry) == c[0] and layout.offsetof(CEntry, "small") == c[3]


@pytest.fixture
def view() -> pm.View:
    from pmemsim_backends.sim import SimBackend

    s = pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=SimBackend()))
    return s.view(s.map(pm.Part(pm.Source.anonymous(4096))))


def test_fields_read_back_what_was_assigned(view: pm.View) -> None:
    p = layout.typed(view, Pool, 128)
    p.header.magic = 0xFEED
    p.header = {"count": 3, "kind": 255}
    p.entries[1].name = b"thirteen char"
    p.entries[1].weight = 2.5
    p.entries[-1].small = -2
    p.tail = 2**64 - 1
    assert (p.header.magic, p.header.count, p.header.flags, p.header.kind) == (0xFEED, 3, 0, 255)
    assert p.entries[1].name == b"thirteen char" and p.entries[1].weight == 2.5
    assert p.entries[2].small == -2 and p.tail == 2**64 - 1
    assert len(p.entries) == 3 and [e.key for e in p.entries] == [0, 0, 0]
    # The bytes are where C would put them.
    assert view.u64[(128 + layout.offsetof(Pool, "tail")) // 8] == 2**64 - 1
    assert layout.span(p, "entries[1].weight") == (128 + 64 + 40 + 24, 8)
    assert layout.addressof(p, "tail") == view.address + layout.offsetof(p, "tail")
    whole = layout.typed(view, CEntry, 0)
    whole.name = b"abc"
    assert whole.name == b"abc" + bytes(10)


@layout.struct
class Split:
    key: layout.u64
    name: layout.array(ctypes.c_char, 13) = layout.offset(64)  # the next line


def test_each_field_is_its_own_store_from_the_assigning_line() -> None:
    lines: list[int] = []

    def work(v: pm.View) -> None:
        e = layout.typed(v, Split)
        lines.append(lineno())
        e.key = 7
        lines.append(lineno())
        e.name = b"x"
        v.persist(0, layout.sizeof(Split))

    def recover(v: pm.View) -> None:
        e = layout.typed(v, Split)
        assert (e.key == 0) == (e.name == bytes(13)), "a torn entry"

    r = check(CrashCheck("entry", work, recover, expect="inconsistent"))
    lost = [s for f in r.failing for s in f.lost]
    where = {(s.offset // 64, locations(s.provenance)[0].lineno) for s in lost}
    # Either field can be lost without the other (two lines, two stores), and each lost
    # store is blamed on the line that assigned it, never on pmemsim.layout.
    assert where == {(0, lines[0] + 1), (1, lines[1] + 1)}
    assert {locations(s.provenance)[0].filename for s in lost} == {__file__}


@pytest.mark.parametrize(
    "assign, message",
    [
        (lambda p: setattr(p.header, "kind", 256), "does not fit Header.kind"),
        (lambda p: setattr(p.header, "count", -1), "does not fit Header.count"),
        (lambda p: setattr(p.entries[0], "small", 2**15), "does not fit Entry.small"),
        (lambda p: setattr(p.entries[0], "name", b"fourteen chars"), "at most 13 bytes"),
        (lambda p: setattr(p.header, "magic", 1.0), "does not fit"),
        (lambda p: p.entries.__setitem__(3, {}), "outside an array of 3"),
        (lambda p: setattr(p, "header", {"nope": 1}), r"no field\(s\) nope"),
        (lambda p: setattr(p.entries[0], "weight", "heavy"), "is a number"),
    ],
)
def test_what_does_not_fit_is_a_typed_error_and_stores_nothing(
    view: pm.View, assign: object, message: str
) -> None:
    p = layout.typed(view, Pool)
    before = view.read(0, layout.sizeof(Pool))
    with pytest.raises(pm.InvalidArgumentError, match=message):
        assign(p)  # type: ignore[operator]
    assert view.read(0, layout.sizeof(Pool)) == before


def test_declarations_and_placements_that_cannot_work_are_refused(view: pm.View) -> None:
    with pytest.raises(pm.InvalidArgumentError, match="before the end of the previous field"):

        @layout.struct
        class Backwards:
            a: layout.u64
            b: layout.u64 = layout.offset(4)

    with pytest.raises(pm.InvalidArgumentError, match="not a layout type"):

        @layout.struct
        class Pointer:
            p: ctypes.c_void_p

    with pytest.raises(pm.InvalidArgumentError, match="does not fit a view"):
        layout.typed(view, Pool, 4096 - 64)
    with pytest.raises(AttributeError, match="has no field 'nope'"):
        layout.typed(view, Pool).nope  # noqa: B018

    class Bits(ctypes.Structure):
        _fields_ = [("x", ctypes.c_uint32, 3)]

    with pytest.raises(pm.InvalidArgumentError, match="bit field"):
        layout.typed(view, Bits).x = 1
    with pytest.raises(pm.InvalidArgumentError, match="no field 'nope'"):
        layout.offsetof(Pool, "entries[0].nope")


def test_crossings_and_lines_name_what_two_lines_or_atoms_hold() -> None:
    assert layout.crossings(Pool) == []
    # name (13 bytes at +8) crosses an 8-byte atom in every entry: not failure-atomic.
    assert ("entries[0].name", 64 + 8, 13) in layout.crossings(Pool, unit=8)

    @layout.struct(pack=1)
    class Packed:
        pad: layout.array(layout.u8, 60)
        value: layout.u64

    assert layout.crossings(Packed) == [("value", 60, 8)]
    assert layout.lines(Packed, "value") == [0, 64]
    assert layout.lines(Pool, "entries[1]") == [64, 128]  # 104..144


def test_plain_memcpy_is_not_persisted_and_memcpy_is() -> None:
    def recover(v: pm.View) -> None:
        assert v.u64[0] == 0 or v.read(64, 8) == b"payload!", "published before its data"

    def publish(copy: str) -> CrashCheck:
        def work(v: pm.View) -> None:
            getattr(v, copy)(64, b"payload!")
            v.u64[0] = 1
            v.persist(0, 8)

        return CrashCheck(copy, work, recover)

    assert check(publish("plain_memcpy")).verdict == "inconsistent"
    assert check(publish("memcpy")).verdict == "consistent"
