"""Events: payloads, the exact order each call fires them in, callbacks, and tracking."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from pmemsim_backends.sim import SimBackend

import pmemsim as pm
from pmemsim.errors import ErrorCode

PAGE = 4096
E = pm.EventType
F = pm.MemFlag

MakeSet = Callable[..., pm.Set]


class Recorder:
    def __init__(self, ret: Any = None) -> None:
        self.events: list[Any] = []
        self.args: list[Any] = []
        self.ret = ret

    def __call__(self, s: pm.Set, event: Any, arg: Any) -> Any:
        self.events.append(event)
        self.args.append(arg)
        return self.ret

    def kinds(self) -> list[pm.EventType]:
        return [e.type for e in self.events]

    def clear(self) -> None:
        self.events.clear()
        self.args.clear()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def rset(make_set: MakeSet, rec: Recorder) -> tuple[pm.Set, pm.Descriptor]:
    """A set with a recording callback and one two-page anonymous part map; no events yet."""
    s = make_set(event_callback=rec, user_arg="ARG")
    d = s.map(pm.Part(pm.Source.anonymous(2 * PAGE)))
    rec.clear()
    return s, d


# -- payloads ------------------------------------------------------------------------------

SRC = pm.Source.anonymous(PAGE)
PAYLOADS: list[tuple[Any, pm.EventType | None]] = [
    (pm.CopyEvent(0x1000, 0x2000, 8, F.NONE), E.COPY),
    (pm.CopyEvent(b"abc", 0x2000, 3, F.NODRAIN), E.COPY),
    (pm.MoveEvent(0x1000, 0x2000, 8, F.NONE), E.MOVE),
    (pm.SetEvent(0x2000, 7, 8, F.NONE), E.SET),
    (pm.FlushEvent(0x2000, 64), E.FLUSH),
    (pm.DrainEvent(), E.DRAIN),
    (pm.PersistEvent(0x2000, 64), E.PERSIST),
    (pm.PartAddEvent(0x2000, PAGE, SRC), E.PART_ADD),
    (pm.PartRemoveEvent(0x2000, PAGE), E.PART_REMOVE),
    (pm.RemoveRangeEvent(0x2000, 1), E.REMOVE_RANGE),
    (pm.SdsUpdateEvent(pm.SdsRecord(b"dev", 3, 1), SRC), E.SDS_UPDATE),
    (pm.BadBlockEvent(pm.BadBlock(512, 512), SRC), E.BADBLOCK),
    (pm.BadBlocksClearedEvent(SRC), E.BADBLOCKS_CLEARED),
    (pm.SdsRecord(b"dev", 3, 1), None),
    (pm.BadBlock(0, 4096), None),
]


@pytest.mark.parametrize(("payload", "kind"), PAYLOADS, ids=lambda p: type(p).__name__)
def test_payload_is_frozen_dataclass(payload: Any, kind: pm.EventType | None) -> None:
    assert dataclasses.is_dataclass(payload)
    assert type(payload).__dataclass_params__.frozen  # type: ignore[attr-defined]
    names = [f.name for f in dataclasses.fields(payload)]
    for name in [*names, "type", "address", "len", "something_new"]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(payload, name, 1)
    for name in names:
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(payload, name)
    if kind is not None:
        assert payload.type is kind


def test_every_event_type_has_a_payload() -> None:
    kinds = {k for _, k in PAYLOADS if k is not None}
    assert kinds == set(E)
    assert E.all() == sum(E)
    assert len(list(E)) == 12


def test_payload_fields(rset: tuple[pm.Set, pm.Descriptor], rec: Recorder) -> None:
    s, d = rset
    s.memcpy(d.address, b"hello", flags=F.NODRAIN | F.WB)
    s.memcpy(d.address + 100, d.address, 5)
    s.memmove(d.address + 2, d.address, 5, F.NONTEMPORAL)
    s.memset(d.address + 64, 0xEE, 10, F.NOFLUSH)
    s.flush(d.address, 64)
    ev = rec.events
    assert ev[0] == pm.CopyEvent(b"hello", d.address, 5, F.NODRAIN | F.WB)
    assert isinstance(ev[0].flags, pm.MemFlag)
    assert ev[1] == pm.CopyEvent(d.address, d.address + 100, 5, F.NONE)
    assert ev[2] == pm.DrainEvent()
    assert ev[3] == pm.MoveEvent(d.address, d.address + 2, 5, F.NONTEMPORAL)
    assert ev[5] == pm.SetEvent(d.address + 64, 0xEE, 10, F.NOFLUSH)
    assert ev[7] == pm.FlushEvent(d.address, 64)
    assert len(ev) == 8
    assert set(rec.args) == {"ARG"}


def test_copy_payload_does_not_alias_the_buffer(
    rset: tuple[pm.Set, pm.Descriptor], rec: Recorder
) -> None:
    s, d = rset
    buf = bytearray(b"abcd")
    s.memcpy(d.address, buf)
    s.memmove(d.address + 8, memoryview(buf))
    buf[:] = b"XXXX"
    assert rec.events[0].src == b"abcd" and isinstance(rec.events[0].src, bytes)
    assert rec.events[2].src == b"abcd" and isinstance(rec.events[2].src, bytes)


# -- exact orders --------------------------------------------------------------------------


def test_map_fires_part_add_only(make_set: MakeSet, rec: Recorder) -> None:
    s = make_set(event_callback=rec)
    src = pm.Source.anonymous(PAGE)
    d = s.map(pm.Part(src))
    assert rec.events == [pm.PartAddEvent(d.address, PAGE, src)]
    assert rec.events[0].source is src


def test_persist_fires_flush_then_drain(rset: tuple[pm.Set, pm.Descriptor], rec: Recorder) -> None:
    s, d = rset
    s.store(d.address, b"x" * 100)
    s.persist(d.address + 1, 99)
    assert rec.events == [pm.FlushEvent(d.address + 1, 99), pm.DrainEvent()]


def test_persist_fn_fires_the_same(rset: tuple[pm.Set, pm.Descriptor], rec: Recorder) -> None:
    s, d = rset
    s.persist_fn(d.address, 64)
    s.flush_fn(d.address, 64)
    s.drain_fn()
    assert rec.events == [pm.FlushEvent(d.address, 64), pm.DrainEvent()] * 2


def test_flush_and_drain_alone(rset: tuple[pm.Set, pm.Descriptor], rec: Recorder) -> None:
    s, d = rset
    s.flush(d.address, 10)
    assert rec.kinds() == [E.FLUSH]
    s.drain()
    assert rec.kinds() == [E.FLUSH, E.DRAIN]


def test_store_read_deep_flush_fire_nothing(
    rset: tuple[pm.Set, pm.Descriptor], rec: Recorder
) -> None:
    s, d = rset
    s.store(d.address, b"abc")
    s.read(d.address, 3)
    s.deep_flush(d.address, 3)
    v = s.view(d)
    v.u64[3] = 5
    v[100:102] = b"zz"
    v.pack_into("<I", 200, 1)
    assert rec.events == []


MEM_CASES = [
    (F.NONE, True),
    (F.NODRAIN, False),
    (F.NOFLUSH, True),  # libpmemset's quirk: NOFLUSH still fires DRAIN
    (F.NOFLUSH | F.NODRAIN, False),
    (F.NONTEMPORAL, True),
    (F.TEMPORAL, True),
    (F.WC, True),
    (F.WB, True),
    (F.WB | F.NODRAIN, False),
]


@pytest.mark.parametrize(("flags", "drain"), MEM_CASES)
def test_memcpy_order(
    rset: tuple[pm.Set, pm.Descriptor], rec: Recorder, flags: pm.MemFlag, drain: bool
) -> None:
    s, d = rset
    s.memcpy(d.address, b"0123456789", flags=flags)
    tail = [pm.DrainEvent()] if drain else []
    assert rec.events == [pm.CopyEvent(b"0123456789", d.address, 10, flags), *tail]


@pytest.mark.parametrize(("flags", "drain"), MEM_CASES)
def test_memmove_order(
    rset: tuple[pm.Set, pm.Descriptor], rec: Recorder, flags: pm.MemFlag, drain: bool
) -> None:
    s, d = rset
    s.memmove(d.address + 4, d.address, 10, flags)
    tail = [pm.DrainEvent()] if drain else []
    assert rec.events == [pm.MoveEvent(d.address, d.address + 4, 10, flags), *tail]


@pytest.mark.parametrize(("flags", "drain"), MEM_CASES)
def test_memset_order(
    rset: tuple[pm.Set, pm.Descriptor], rec: Recorder, flags: pm.MemFlag, drain: bool
) -> None:
    s, d = rset
    s.memset(d.address, 0x5A, 300, flags)
    tail = [pm.DrainEvent()] if drain else []
    assert rec.events == [pm.SetEvent(d.address, 0x5A, 300, flags), *tail]


@pytest.mark.parametrize("length", [10, 1000])  # temporal (flush + fence) and non-temporal
def test_flush_and_drain_inside_mem_op_fire_nothing(
    sim: SimBackend, rset: tuple[pm.Set, pm.Descriptor], rec: Recorder, length: int
) -> None:
    s, d = rset
    before = sim.statistics()
    s.memcpy(d.address, b"q" * length)
    s.memset(d.address, 1, length)
    s.memmove(d.address + 1, d.address, length)
    after = sim.statistics()
    assert after.fences - before.fences == 3  # the operations did drain ...
    if length < 256:
        assert after.flushes - before.flushes == 3  # ... and flush
    assert rec.kinds() == [E.COPY, E.DRAIN, E.SET, E.DRAIN, E.MOVE, E.DRAIN]  # ... silently


def test_view_operations_fire_the_same(rset: tuple[pm.Set, pm.Descriptor], rec: Recorder) -> None:
    s, d = rset
    v = s.view(d).view(PAGE, PAGE)
    v.memcpy(8, b"abcd")
    v.memmove(0, 8, 4, F.NODRAIN)
    v.memset(16, 0, 4, F.NOFLUSH)
    v.persist(0, 64)
    v.flush()
    v.drain()
    a = d.address + PAGE
    assert rec.events == [
        pm.CopyEvent(b"abcd", a + 8, 4, F.NONE),
        pm.DrainEvent(),
        pm.MoveEvent(a + 8, a, 4, F.NODRAIN),
        pm.SetEvent(a + 16, 0, 4, F.NOFLUSH),
        pm.DrainEvent(),
        pm.FlushEvent(a, 64),
        pm.DrainEvent(),
        pm.FlushEvent(a, PAGE),
        pm.DrainEvent(),
    ]


def test_operations_spanning_two_part_maps(
    sim: SimBackend, make_set: MakeSet, rec: Recorder
) -> None:
    res = pm.Reservation(2 * PAGE, backend=sim)
    s = make_set(event_callback=rec, reservation=res)
    a = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    s.map(pm.Part(pm.Source.anonymous(PAGE)))
    rec.clear()
    mid = a.end - 5
    s.memcpy(mid, b"0123456789")
    s.memset(mid, 1, 10, F.NODRAIN)
    s.persist(mid, 10)
    assert rec.events == [
        pm.CopyEvent(b"0123456789", mid, 10, F.NONE),
        pm.DrainEvent(),
        pm.SetEvent(mid, 1, 10, F.NODRAIN),
        pm.FlushEvent(mid, 10),
        pm.DrainEvent(),
    ]


def test_remove_orders(sim: SimBackend, make_set: MakeSet, rec: Recorder) -> None:
    res = pm.Reservation(4 * PAGE, backend=sim)
    s = make_set(event_callback=rec, reservation=res)
    ds = [s.map(pm.Part(pm.Source.anonymous(PAGE))) for _ in range(4)]
    rec.clear()
    s.remove_range(ds[0].address + 1, PAGE)  # parts 0 and 1
    assert rec.events == [
        pm.RemoveRangeEvent(ds[0].address + 1, PAGE),
        pm.PartRemoveEvent(ds[0].address, PAGE),
        pm.PartRemoveEvent(ds[1].address, PAGE),
    ]
    rec.clear()
    s.remove_range(ds[0].address, PAGE)  # nothing left there
    assert rec.events == [pm.RemoveRangeEvent(ds[0].address, PAGE)]
    rec.clear()
    with s.part_map_by_address(ds[3].address) as pmap:
        s.remove_part_map(pmap)
    assert rec.events == [pm.PartRemoveEvent(ds[3].address, PAGE)]


def test_persist_is_never_fired(sim: SimBackend, make_set: MakeSet, rec: Recorder) -> None:
    s = make_set(event_callback=rec)
    persist_track: list[Any] = []
    s.track(E.PERSIST, lambda *a: persist_track.append(a))
    d = s.map(pm.Part(pm.Source.anonymous(2 * PAGE)))
    s.store(d.address, b"x")
    s.persist(d.address, 1)
    s.persist_fn(d.address, PAGE)
    s.view(d).persist()
    s.memcpy(d.address, b"y" * 500)
    s.memset(d.address, 0, 10)
    s.memmove(d.address + 1, d.address, 10)
    s.flush(d.address, 1)
    s.drain()
    s.deep_flush(d.address, 10)
    s.remove_range(d.address, 1)
    assert len(rec.events) > 10
    assert E.PERSIST not in rec.kinds()
    assert not any(isinstance(e, pm.PersistEvent) for e in rec.events)
    assert persist_track == []


# -- callbacks -----------------------------------------------------------------------------


@pytest.mark.parametrize("ret", [5, -1, "not an int", object(), True, 2.5])
def test_return_values_are_ignored(make_set: MakeSet, ret: Any) -> None:
    rec = Recorder(ret=ret)
    s = make_set(event_callback=rec)
    s.track(E.all(), lambda *a: ret)
    d = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    s.memcpy(d.address, b"copied")
    s.memmove(d.address + 10, d.address, 6)
    s.memset(d.address + 20, 0x33, 2)
    s.persist(d.address, 22)
    assert s.read(d.address, 22) == b"copied\0\0\0\0copied\0\0\0\0\x33\x33"
    s.remove_range(d.address, 1)
    assert list(s.part_maps()) == []
    assert rec.kinds() == [
        E.PART_ADD,
        E.COPY,
        E.DRAIN,
        E.MOVE,
        E.DRAIN,
        E.SET,
        E.DRAIN,
        E.FLUSH,
        E.DRAIN,
        E.REMOVE_RANGE,
        E.PART_REMOVE,
    ]


class Boom(Exception):
    pass


def raise_on(kind: pm.EventType) -> Callable[..., None]:
    def cb(s: pm.Set, event: Any, arg: Any) -> None:
        if event.type == kind:
            raise Boom(kind.name)

    return cb


@pytest.mark.parametrize(
    ("kind", "op"),
    [
        (E.COPY, lambda s, a: s.memcpy(a, b"new!")),
        (E.MOVE, lambda s, a: s.memmove(a, a + 100, 4)),
        (E.SET, lambda s, a: s.memset(a, ord("n"), 4)),
    ],
)
def test_exception_in_before_callback_stops_the_operation(
    sim: SimBackend, make_set: MakeSet, kind: pm.EventType, op: Callable[[pm.Set, int], None]
) -> None:
    s = make_set(event_callback=raise_on(kind))
    d = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    s.store(d.address, b"old!")
    s.store(d.address + 100, b"src!")
    s.persist(d.address, 104)
    before = sim.statistics()
    with pytest.raises(Boom):
        op(s, d.address)
    assert s.read(d.address, 4) == b"old!"
    assert sim.statistics().stores == before.stores
    assert sim.statistics().fences == before.fences


def test_exception_in_flush_callback(sim: SimBackend, make_set: MakeSet) -> None:
    s = make_set(event_callback=raise_on(E.FLUSH))
    d = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    s.store(d.address, b"dirty")
    with pytest.raises(Boom):
        s.persist(d.address, 5)
    assert [ls.status for ls in sim.lines()] == ["dirty"]  # neither flushed nor drained


@pytest.mark.parametrize("kind", [E.DRAIN, E.PART_ADD])
def test_exception_in_after_callback_propagates(make_set: MakeSet, kind: pm.EventType) -> None:
    s = make_set(event_callback=raise_on(kind))
    part = pm.Part(pm.Source.anonymous(PAGE))
    if kind == E.PART_ADD:
        with pytest.raises(Boom):
            s.map(part)
        return
    d = s.map(part)
    with pytest.raises(Boom):
        s.drain()
    with pytest.raises(Boom):
        s.memcpy(d.address, b"abc")
    assert s.read(d.address, 3) == b"abc"  # DRAIN comes after the copy


@pytest.mark.parametrize("kind", [E.REMOVE_RANGE, E.PART_REMOVE])
def test_exception_in_remove_callbacks(make_set: MakeSet, kind: pm.EventType) -> None:
    s = make_set(event_callback=raise_on(kind))
    d = s.map(pm.Part(pm.Source.anonymous(PAGE)))
    with pytest.raises(Boom):
        s.remove_range(d.address, 1)
    if kind == E.PART_REMOVE:
        with s.part_map_by_address(d.address) as pmap, pytest.raises(Boom):
            s.remove_part_map(pmap)
    # Both events come before unmapping: the part map is still there.
    assert [x.address for x in s.part_maps()] == [d.address]
    assert s.read(d.address, 1) == b"\0"


def test_exception_in_track_callback_propagates(make_set: MakeSet) -> None:
    s = make_set()
    d = s.map(pm.Part(pm.Source.anonymous(PAGE)))

    def notify(*args: Any) -> None:
        raise Boom("track")

    s.track(E.SET, notify)
    with pytest.raises(Boom, match="track"):
        s.memset(d.address, 1, 1)
    assert s.read(d.address, 1) == b"\0"


def test_config_callback_gets_set_and_user_arg(make_set: MakeSet) -> None:
    seen: list[tuple[Any, Any]] = []
    arg = object()
    s = make_set(event_callback=lambda st, ev, a: seen.append((st, a)), user_arg=arg)
    s.map(pm.Part(pm.Source.anonymous(PAGE)))
    assert seen == [(s, arg)]


# -- tracking ------------------------------------------------------------------------------


class Notes:
    """A track callback that records (handle, event, user_data)."""

    def __init__(self, log: list[Any] | None = None, tag: Any = None) -> None:
        self.log: list[Any] = [] if log is None else log
        self.tag = tag
        self.sets: list[pm.Set] = []

    def __call__(self, s: pm.Set, handle: pm.TrackHandle, event: Any, data: Any) -> None:
        self.sets.append(s)
        self.log.append((self.tag, handle, event, data))

    def events(self) -> list[Any]:
        return [e for _, _, e, _ in self.log]


@pytest.fixture
def tset(make_set: MakeSet) -> tuple[pm.Set, pm.Descriptor]:
    """A set without a config callback, with one four-page part map."""
    s = make_set()
    return s, s.map(pm.Part(pm.Source.anonymous(4 * PAGE)))


class TestTracking:
    def test_whole_set(self, tset: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = tset
        n = Notes()
        h = s.track(E.all(), n, user_data="UD")
        assert h.active and s.tracks == (h,)
        s.memcpy(d.address + 8, b"abc")
        s.persist(d.address + 3 * PAGE, 10)
        e = s.map(pm.Part(pm.Source.anonymous(PAGE)))
        assert [ev.type for ev in n.events()] == [E.COPY, E.DRAIN, E.FLUSH, E.DRAIN, E.PART_ADD]
        assert n.events()[4].addr == e.address
        assert all(handle is h and data == "UD" for _, handle, _, data in n.log)
        assert n.sets == [s] * 5

    def test_exact_address(self, tset: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = tset
        a = d.address + PAGE
        n = Notes()
        s.track(E.all(), n, address=a)
        s.flush(a, 64)  # yes
        s.flush(a + 64, 64)  # no: another address
        s.flush(a - 64, 128)  # no: overlaps, but the exact form wants the same address
        s.memcpy(a, b"dest")  # COPY at dest a: yes; DRAIN has no address: no
        s.memcpy(a + 100, a, 4)  # no: the address of a copy is its destination
        s.memset(a, 0, 1, F.NODRAIN)  # yes
        s.store(a, b"x")  # stores fire nothing
        s.remove_range(a, 0)  # yes
        assert n.events() == [
            pm.FlushEvent(a, 64),
            pm.CopyEvent(b"dest", a, 4, F.NONE),
            pm.SetEvent(a, 0, 1, F.NODRAIN),
            pm.RemoveRangeEvent(a, 0),
        ]

    def test_exact_address_part_add(self, sim: SimBackend, make_set: MakeSet) -> None:
        res = pm.Reservation(2 * PAGE, backend=sim)
        s = make_set(reservation=res)
        n = Notes()
        s.track(E.PART_ADD | E.PART_REMOVE, n, address=res.address + PAGE)
        a = s.map(pm.Part(pm.Source.anonymous(PAGE)))
        b = s.map(pm.Part(pm.Source.anonymous(PAGE)))
        s.remove_range(a.address, 2 * PAGE)
        assert [(ev.type, ev.addr) for ev in n.events()] == [
            (E.PART_ADD, b.address),
            (E.PART_REMOVE, b.address),
        ]

    def test_range(self, tset: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = tset
        a, length = d.address + PAGE, 256
        n = Notes()
        s.track(E.all(), n, address=a, length=length)
        hits = [
            (a, 1),
            (a + length - 1, 1),
            (a - 10, 11),
            (a - 64, 1000),
            (a + 100, 0),  # a zero-length flush inside the range
        ]
        misses = [(a + length, 10), (a - 10, 10), (a + length, 0), (d.address, 64)]
        for addr, n_bytes in hits + misses:
            s.flush(addr, n_bytes)
        s.drain()  # no address: never reaches an address track
        assert n.events() == [pm.FlushEvent(x, k) for x, k in hits]

    def test_range_sees_mem_ops_and_removal(self, tset: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = tset
        a = d.address + PAGE
        n = Notes()
        s.track(E.COPY | E.SET | E.REMOVE_RANGE | E.PART_REMOVE, n, address=a, length=PAGE)
        s.memset(a - 4, 1, 8)  # reaches into the range
        s.memcpy(d.address, b"zz")  # outside
        s.remove_range(a + PAGE - 1, 1)  # the range and the whole part map
        assert [ev.type for ev in n.events()] == [E.SET, E.REMOVE_RANGE, E.PART_REMOVE]

    def test_several_tracks_on_one_address(self, tset: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = tset
        log: list[Any] = []
        h1 = s.track(E.FLUSH, Notes(log, "one"), address=d.address, user_data=1)
        h2 = s.track(E.FLUSH, Notes(log, "two"), address=d.address, user_data=2)
        h3 = s.track(E.FLUSH | E.DRAIN, Notes(log, "three"), address=d.address, user_data=3)
        assert len({h1.id, h2.id, h3.id}) == 3
        s.persist(d.address, 8)
        assert [(tag, handle, data) for tag, handle, _, data in log] == [
            ("one", h1, 1),
            ("two", h2, 2),
            ("three", h3, 3),
        ]
        h2.delete()
        log.clear()
        s.flush(d.address, 8)
        assert [tag for tag, *_ in log] == ["one", "three"]

    def test_config_callback_before_tracks(self, make_set: MakeSet) -> None:
        order: list[str] = []
        s = make_set(event_callback=lambda *a: order.append("config"))
        d = s.map(pm.Part(pm.Source.anonymous(PAGE)))
        order.clear()
        s.track(E.FLUSH, lambda *a: order.append("track"))
        s.flush(d.address, 1)
        assert order == ["config", "track"]

    def test_kinds_filter(self, tset: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = tset
        flush_only, copy_set = Notes(), Notes()
        s.track(E.FLUSH, flush_only)
        s.track(E.COPY | E.SET, copy_set)
        s.persist(d.address, 8)
        s.memcpy(d.address, b"ab")
        s.memmove(d.address + 2, d.address, 2)
        s.memset(d.address, 0, 2)
        assert [e.type for e in flush_only.events()] == [E.FLUSH]
        assert [e.type for e in copy_set.events()] == [E.COPY, E.SET]

    def test_delete_stops_delivery(self, tset: tuple[pm.Set, pm.Descriptor]) -> None:
        s, d = tset
        n1, n2 = Notes(), Notes()
        h1 = s.track(E.FLUSH, n1)
        h2 = s.track(E.DRAIN, n2)
        s.persist(d.address, 1)
        h1.delete()
        assert not h1.active and h2.active
        assert s.tracks == (h2,)
        s.persist(d.address, 1)
        assert len(n1.log) == 1
        assert len(n2.log) == 2  # the remaining track still hears its kind
        s.untrack(h2)
        assert s.tracks == ()
        s.persist(d.address, 1)
        assert (len(n1.log), len(n2.log)) == (1, 2)
        n3 = Notes()
        s.track(E.COPY, n3)
        s.memcpy(d.address, b"x")
        assert [e.type for e in n3.events()] == [E.COPY]

    @pytest.mark.parametrize("how", ["delete", "untrack"])
    def test_deleting_twice_fails(self, tset: tuple[pm.Set, pm.Descriptor], how: str) -> None:
        s, _ = tset
        h = s.track(E.FLUSH, Notes())
        h.delete()
        with pytest.raises(pm.InvalidArgumentError) as ei:
            h.delete() if how == "delete" else s.untrack(h)
        assert ei.value.code == ErrorCode.EINVAL

    def test_untrack_foreign_or_bogus_handle(
        self, tset: tuple[pm.Set, pm.Descriptor], make_set: MakeSet
    ) -> None:
        s, _ = tset
        other = make_set()
        h = other.track(E.FLUSH, Notes())
        for bogus in (h, None, 1, "handle"):
            with pytest.raises(pm.InvalidArgumentError) as ei:
                s.untrack(bogus)  # type: ignore[arg-type]
            assert ei.value.code == ErrorCode.EINVAL
        assert h.active and other.tracks == (h,)

    def test_deleted_during_delivery_gets_nothing_more(
        self, tset: tuple[pm.Set, pm.Descriptor]
    ) -> None:
        s, d = tset
        victim_notes = Notes()
        victim: list[pm.TrackHandle] = []
        s.track(E.FLUSH, lambda *a: victim[0].delete())
        victim.append(s.track(E.FLUSH, victim_notes))
        s.flush(d.address, 1)
        assert victim_notes.log == []

    @pytest.mark.parametrize("callback", [None, 5, "notify"])
    def test_missing_callback(self, tset: tuple[pm.Set, pm.Descriptor], callback: Any) -> None:
        s, _ = tset
        with pytest.raises(pm.InvalidArgumentError) as ei:
            s.track(E.FLUSH, callback)
        assert ei.value.code == ErrorCode.EINVAL
        assert s.tracks == ()

    @pytest.mark.parametrize(
        "kinds",
        [0, -1, 1 << 12, E.all() | (1 << 12), 1 << 40, "FLUSH", 1.0, None, True, [E.FLUSH]],
    )
    def test_invalid_kinds(self, tset: tuple[pm.Set, pm.Descriptor], kinds: Any) -> None:
        s, _ = tset
        with pytest.raises(pm.InvalidArgumentError) as ei:
            s.track(kinds, Notes())
        assert ei.value.code == ErrorCode.EINVAL
        assert s.tracks == ()

    @pytest.mark.parametrize(
        ("address", "length"), [(-1, None), (1.0, None), (None, 10), (0, 0), (0, -1), (0, 2.0)]
    )
    def test_invalid_where(
        self, tset: tuple[pm.Set, pm.Descriptor], address: Any, length: Any
    ) -> None:
        s, _ = tset
        with pytest.raises(pm.InvalidArgumentError) as ei:
            s.track(E.FLUSH, Notes(), address=address, length=length)
        assert ei.value.code == ErrorCode.EINVAL

    @pytest.mark.parametrize("kind", list(E))
    def test_every_single_kind_is_valid(self, tset: tuple[pm.Set, pm.Descriptor], kind: E) -> None:
        s, _ = tset
        h = s.track(kind, Notes())
        assert h.kinds == kind
        h.delete()
