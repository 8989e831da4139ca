"""Issue 12: misuse that killed, hung or silently misled, held to one answer on both backends.

Each test states what must happen and runs on the simulator and on libpmem2 (skipped, with
the reason, where libpmem2 is missing); the item of issue 12 it pins is in its docstring.
What could hang or kill the interpreter runs in a child process, so that a regression is a
failed test, not a dead test run. Threads, processes and long runs: test_stress.py.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from differential import BACKENDS, PAGE, Rig, backend_or_skip, fails, rig_on

import pmemsim as pm
from pmemsim import ErrorCode as E
from pmemsim import Pmem2Code as P2

G = pm.Granularity
ENOMEM = -12


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> pm.Backend:
    return backend_or_skip(request.param)


@pytest.fixture
def rig(backend: pm.Backend, tmp_path: Path) -> Iterator[Rig]:
    yield from rig_on(backend, tmp_path)


def run_child(backend: pm.Backend, body: str, timeout: float = 60) -> str:
    """Run ``body`` in a fresh interpreter with ``backend`` (a ``make_backend`` name) bound to
    ``be``; return its stdout. It must exit 0 within ``timeout`` seconds."""
    prelude = "import pmemsim as pm\nfrom differential import make_backend\n"
    prelude += f"be = make_backend({backend.name!r})\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def all_part_maps_disjoint(*sets: pm.Set) -> bool:
    extents = sorted((d.address, d.end) for s in sets for d in s.part_maps())
    return all(a[1] <= b[0] for a, b in itertools.pairwise(extents))


# -- item 1: a closed reservation ------------------------------------------------------


class TestClosedReservation:
    def test_a_config_with_a_closed_reservation_is_refused(self, rig: Rig) -> None:
        res = pm.Reservation(2 * PAGE, backend=rig.backend)
        res.close()
        assert res.closed
        with fails(pm.InvalidArgumentError, E.EINVAL):
            rig.set(G.BYTE, reservation=res)

    def test_closed_under_a_set_nothing_is_mapped_into_the_freed_range(self, rig: Rig) -> None:
        """Issue 12 item 1: libpmem2 hung in pmem2_map_new on the freed reservation; the
        simulator mapped into the freed range and gave it to the next reservation too."""
        res = pm.Reservation(2 * PAGE, backend=rig.backend)
        s = rig.set(G.BYTE, reservation=res)
        res.close()
        src = rig.anon(PAGE)
        with fails(pm.InvalidArgumentError, E.EINVAL):
            s.map(pm.Part(src, 0, PAGE))
        assert list(s.part_maps()) == []
        # The range went back: the next reservation may take it, and owns it alone.
        again = rig.reservation(2 * PAGE, address=res.address)
        t = rig.set(G.BYTE, reservation=again)
        t.map(pm.Part(src, 0, PAGE))
        with fails(pm.InvalidArgumentError, E.EINVAL):
            s.map(pm.Part(src, 0, PAGE))
        assert all_part_maps_disjoint(s, t)

    def test_in_a_child_process_it_neither_hangs_nor_dies(self, backend: pm.Backend) -> None:
        """The reproduction of item 1 as the issue gave it, where a hang is a timeout."""
        out = run_child(
            backend,
            """
            r = pm.Reservation(2 << 20, backend=be)
            s = pm.Set(pm.Config(granularity=pm.Granularity.BYTE, backend=be, reservation=r))
            r.close()
            try:
                s.map(pm.Part(pm.Source.anonymous(4096), 0, 4096))
            except pm.PmemError as e:
                print(type(e).__name__, e.code_name)
            """,
        )
        assert out.split() == ["InvalidArgumentError", "EINVAL"]

    def test_closing_with_part_maps_in_it_is_refused_and_changes_nothing(self, rig: Rig) -> None:
        """libpmem2 refuses to delete a reservation holding maps (VM_RESERVATION_NOT_EMPTY);
        both backends refuse before it is asked, and the reservation stays usable."""
        res = pm.Reservation(2 * PAGE, backend=rig.backend)
        s = rig.set(G.BYTE, reservation=res)
        d = s.map(pm.Part(rig.anon(PAGE)))
        with fails(pm.StateError, E.PART_MAP_POSSIBLE_USE_AFTER_DROP, P2.VM_RESERVATION_NOT_EMPTY):
            res.close()
        assert not res.closed
        s.store(d.address, b"still mapped")
        e = s.map(pm.Part(rig.anon(PAGE)))
        assert e.address == res.address + PAGE
        with s.part_map_by_address(d.address) as pmap:
            s.remove_part_map(pmap)
        with fails(pm.StateError, E.PART_MAP_POSSIBLE_USE_AFTER_DROP):
            res.close()  # one part map left, of the same set
        s.close()
        res.close()
        res.close()  # again: nothing
        assert res.closed

    def test_a_part_map_of_another_set_also_keeps_it_open(self, rig: Rig) -> None:
        res = pm.Reservation(2 * PAGE, backend=rig.backend)
        a, b = rig.set(G.BYTE, reservation=res), rig.set(G.BYTE, reservation=res)
        b.map(pm.Part(rig.anon(PAGE)))
        a.close()
        with fails(pm.StateError, E.PART_MAP_POSSIBLE_USE_AFTER_DROP):
            res.close()
        b.close()
        with res:
            pass
        assert res.closed


# -- item 6: sizes, offsets, addresses beyond 64 bits ------------------------------------

HUGE = [1 << 47, (1 << 63) - PAGE, 1 << 63, 1 << 64, (1 << 64) + PAGE, 1 << 80]


class TestBeyondTheAddressSpace:
    """Issue 12 item 6: values at or beyond 2^63 raised OverflowError (cffi, ftruncate) and
    Reservation(address=2**64) worked on the simulator. Nothing that large fits in any
    address space: both backends answer as the kernel does for a range that does not fit."""

    @pytest.mark.parametrize("size", HUGE)
    def test_reservation_size(self, backend: pm.Backend, size: int) -> None:
        with fails(pm.MapError, E.CANNOT_FIT_PART_MAP, ENOMEM):
            pm.Reservation(size, backend=backend)

    @pytest.mark.parametrize("address", HUGE)
    def test_reservation_address(self, backend: pm.Backend, address: int) -> None:
        with fails(pm.MapError, E.CANNOT_FIT_PART_MAP, ENOMEM):
            pm.Reservation(PAGE, address=address, backend=backend)

    @pytest.mark.parametrize("address", [0, -PAGE, 1.0, True, "0x1000"])
    def test_reservation_address_that_is_not_one(self, backend: pm.Backend, address: Any) -> None:
        with fails(pm.InvalidArgumentError, E.EINVAL):
            pm.Reservation(PAGE, address=address, backend=backend)

    @pytest.mark.parametrize("size", [1 << 63, 1 << 64, 1 << 80])
    def test_anonymous_size(self, size: int) -> None:
        with fails(pm.InvalidArgumentError, E.EINVAL):
            pm.Source.anonymous(size)

    @pytest.mark.parametrize("length", [1 << 47, (1 << 63) - PAGE])
    def test_anonymous_part_larger_than_any_address_space(self, rig: Rig, length: int) -> None:
        s = rig.set(G.BYTE)
        with fails(pm.MapError, E.INVALID_PMEM2_MAP, ENOMEM):
            s.map(pm.Part(rig.anon(length)))
        with fails(pm.MapError, E.INVALID_PMEM2_MAP, ENOMEM):
            s.map(pm.Part(rig.anon(PAGE), 0, length))
        assert list(s.part_maps()) == []

    @pytest.mark.parametrize("length", [1 << 63, 1 << 64, 1 << 80])
    def test_coalescing_that_would_grow_past_64_bits(self, rig: Rig, length: int) -> None:
        s = rig.set(G.BYTE)
        d = s.map(pm.Part(rig.anon(PAGE)))
        s.coalescing = pm.Coalescing.FULL
        with fails(pm.MapError, E.CANNOT_COALESCE_PARTS):
            s.map(pm.Part(rig.anon(PAGE), 0, length))
        assert [(m.address, m.size) for m in s.part_maps()] == [(d.address, PAGE)]

    @pytest.mark.parametrize(
        "call",
        [
            lambda s, a: s.read(a, 1 << 64),
            lambda s, a: s.memset(a, 0, 1 << 63),
            lambda s, a: s.flush(a, 1 << 64),
            lambda s, a: s.read(a + (1 << 64), 4),
            lambda s, a: s.store((1 << 64) + 8, b"x"),
            lambda s, a: s.memcpy(a, 1 << 64, 8),
            lambda s, a: s.persist(a, (1 << 64) - a),
        ],
    )
    def test_data_ranges(self, rig: Rig, call: Any) -> None:
        s = rig.set(G.BYTE)
        d = s.map(pm.Part(rig.anon(PAGE)))
        with pytest.raises((pm.RangeError, pm.LookupFailure)):
            call(s, d.address)
        assert s.read(d.address, PAGE) == bytes(PAGE)


# -- item 11: a part the file cannot grow to -------------------------------------------


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, (1 << 64) - PAGE),
        (0, 1 << 63),
        ((1 << 63) - PAGE, PAGE),
        (1 << 62, 1 << 62),
        (0, 1 << 80),
    ],
)
def test_a_part_the_file_cannot_grow_to(rig: Rig, offset: int, length: int) -> None:
    """Issue 12 item 11: CANNOT_GROW_SOURCE_FILE, not OverflowError; the file is unchanged."""
    s = rig.set()
    src = rig.file(size=PAGE)
    with fails(pm.SourceError, E.CANNOT_GROW_SOURCE_FILE):
        s.map(pm.Part(src, offset, length))
    assert rig.path().stat().st_size == PAGE
    s.map(pm.Part(src, 0, PAGE))  # the source still maps


# -- item 12: the codes libpmemset gives ------------------------------------------------


@pytest.mark.parametrize("granularity", [3, -1, 1 << 64])
def test_unknown_granularity_value(rig: Rig, granularity: int) -> None:
    """Issue 12 item 12: pmemset_config_set_required_store_granularity's own code."""
    with fails(pm.MapError, E.GRANULARITY_NOT_SUPPORTED):
        rig.set(granularity)  # type: ignore[arg-type]


def test_temporary_source_in_a_folder_that_does_not_exist(rig: Rig) -> None:
    """Issue 12 item 12: libpmemset's pmemset_source test expects INVALID_SOURCE_PATH."""
    with fails(pm.SourceError, E.INVALID_SOURCE_PATH):
        pm.Source.temporary(rig.path("no-such-folder"))


# -- item 4: event callbacks that close the set or remove the part map -----------------


def _set_with_callback(rig: Rig, kind: pm.EventType, action: str) -> tuple[pm.Set, pm.Descriptor]:
    """A PAGE set on a file whose callback, at the first event of ``kind``, closes the set
    or removes the part map."""
    fired = []

    def callback(s: pm.Set, event: Any, arg: Any) -> None:
        if event.type == kind and not fired:
            fired.append(event)
            if action == "close":
                s.close()
            else:
                pmap = s.first_part_map()
                assert pmap is not None
                s.remove_part_map(pmap)

    s = pm.Set(pm.Config(granularity=G.PAGE, backend=rig.backend, event_callback=callback))
    rig._sets.append(s)
    return s, s.map(pm.Part(rig.file(flags=pm.SourceFlag.CREATE_ALWAYS), 0, PAGE))


DATA_OPS = {
    "memcpy": (pm.EventType.COPY, lambda s, a: s.memcpy(a, b"\x11" * 64)),
    "memcpy_nodrain": (pm.EventType.COPY, lambda s, a: s.memcpy(a, b"\x11" * 64, None, 1)),
    "memmove": (pm.EventType.MOVE, lambda s, a: s.memmove(a, b"\x11" * 64)),
    "memset": (pm.EventType.SET, lambda s, a: s.memset(a, 0x11, 64)),
    "flush": (pm.EventType.FLUSH, lambda s, a: s.flush(a, 64)),
    "persist": (pm.EventType.FLUSH, lambda s, a: s.persist(a, 64)),
}


@pytest.mark.parametrize("action", ["close", "remove"])
@pytest.mark.parametrize("op", sorted(DATA_OPS))
def test_callback_unmapping_during_a_data_operation(rig: Rig, op: str, action: str) -> None:
    """Issue 12 item 4: on libpmem2 the operation meets an unmapped map, raises MapError and
    writes nothing; the simulator let it finish and its data reached the file."""
    kind, call = DATA_OPS[op]
    s, d = _set_with_callback(rig, kind, action)
    flushing = op in ("flush", "persist")
    if flushing:
        s.store(d.address, b"\x11" * 64)  # in the cache, until a flush
    with fails(pm.MapError, E.INVALID_PMEM2_MAP):
        call(s, d.address)
    s.close()
    rig.close()
    if not flushing or (rig.name == "sim" and action == "close"):
        # Nothing was copied; nor, on the simulator, made durable by the refused flush (on
        # libpmem2 a store is in the file's page cache at once; removing deep-flushes).
        assert rig.path().read_bytes()[:64] == bytes(64)


@pytest.mark.parametrize("how", ["remove_part_map", "remove_range"])
def test_part_remove_callback_closing_the_set(rig: Rig, how: str) -> None:
    """Issue 12 item 4: a PART_REMOVE callback that closes the set gave an internal
    ``ValueError: list.remove(x)``. The part map is gone either way: the call succeeds."""
    s, d = _set_with_callback(rig, pm.EventType.PART_REMOVE, "close")
    if how == "remove_part_map":
        with s.first_part_map() as pmap:  # type: ignore[union-attr]
            s.remove_part_map(pmap)
    else:
        s.remove_range(d.address, d.size)
    assert s.closed
    with fails(pm.LookupFailure, E.NO_PART_MAPPED):
        s.read(d.address, 1)


def test_remove_range_callback_removing_the_next_part_map(rig: Rig) -> None:
    """One remove_range over two part maps whose first PART_REMOVE callback removes the
    second: each part map goes once, the set stays consistent."""
    removed: list[int] = []

    def callback(s: pm.Set, event: Any, arg: Any) -> None:
        if event.type == pm.EventType.PART_REMOVE:
            removed.append(event.addr)
            if len(removed) == 1:
                s.remove_part_map(s.part_map_by_address(second.address))

    s = pm.Set(pm.Config(granularity=G.BYTE, backend=rig.backend, event_callback=callback))
    rig._sets.append(s)
    res = rig.reservation(2 * PAGE)
    s.close()
    s = pm.Set(
        pm.Config(granularity=G.BYTE, backend=rig.backend, event_callback=callback, reservation=res)
    )
    rig._sets.append(s)
    first = s.map(pm.Part(rig.anon(PAGE)))
    second = s.map(pm.Part(rig.anon(PAGE)))
    s.remove_range(first.address, 2 * PAGE)
    assert sorted(removed) == [first.address, second.address]
    assert list(s.part_maps()) == []


def test_badblock_callback_closing_the_set_leaves_nothing_mapped(sim_files: Any) -> None:
    """A BADBLOCK callback (fired before anything is placed) that clears the block and
    closes the set: the map must fail as on a closed set, not place a part map into it."""
    sim, path = sim_files
    src = pm.Source.from_file(path)
    src.badblock_detection = True
    sim.inject_badblock(src, 0, 512)

    def callback(s: pm.Set, event: Any, arg: Any) -> None:
        if event.type == pm.EventType.BADBLOCK:
            src.clear_badblock(event.badblock)
            s.close()

    s = pm.Set(pm.Config(granularity=G.CACHE_LINE, backend=sim, event_callback=callback))
    part = pm.Part(src, 0, PAGE)
    with fails(pm.LookupFailure, E.NO_PART_MAPPED):
        s.map(part)
    assert not part.consumed
    assert list(sim.iter_maps()) == []
    src.close()


@pytest.fixture
def sim_files(tmp_path: Path) -> tuple[Any, Path]:
    from pmemsim_backends.sim import SimBackend

    path = tmp_path / "pool"
    path.write_bytes(bytes(PAGE))
    return SimBackend(), path


# -- item 9: the previous part map moves to a neighbour --------------------------------

COALESCING = [pm.Coalescing.FULL, pm.Coalescing.OPPORTUNISTIC]


@pytest.mark.parametrize("mode", COALESCING)
def test_previous_removed_the_one_below_takes_over(rig: Rig, mode: pm.Coalescing) -> None:
    """Issue 12 item 9 (libpmemset's pmemset_update_previous_part_map): when the previous
    part map goes, the one below it becomes the previous; a new part coalesces with it."""
    res = rig.reservation(4 * PAGE)
    s = rig.set(G.BYTE, reservation=res)
    a = s.map(pm.Part(rig.anon(PAGE)))
    b = s.map(pm.Part(rig.anon(PAGE)))
    with s.part_map_by_address(b.address) as pmap:
        s.remove_part_map(pmap)
    s.coalescing = mode
    d = s.map(pm.Part(rig.anon(PAGE)))
    assert (d.address, d.size) == (a.address, 2 * PAGE)
    assert [(m.address, m.size) for m in s.part_maps()] == [(a.address, 2 * PAGE)]


def test_previous_removed_full_fails_where_the_one_below_cannot_grow(rig: Rig) -> None:
    """With FULL the new part must join the part map below, or fail: CANNOT_COALESCE_PARTS,
    not a silent part map of its own."""
    res = rig.reservation(8 * PAGE)
    s, other = rig.set(G.BYTE, reservation=res), rig.set(G.BYTE, reservation=res)
    a = s.map(pm.Part(rig.anon(PAGE)))
    b = s.map(pm.Part(rig.anon(PAGE)))
    other.map(pm.Part(rig.anon(PAGE)))  # right after b
    with s.part_map_by_address(b.address) as pmap:
        s.remove_part_map(pmap)
    s.coalescing = pm.Coalescing.FULL
    with fails(pm.MapError, E.CANNOT_COALESCE_PARTS):
        s.map(pm.Part(rig.anon(2 * PAGE)))
    assert [(m.address, m.size) for m in s.part_maps()] == [(a.address, PAGE)]
    s.coalescing = pm.Coalescing.OPPORTUNISTIC
    d = s.map(pm.Part(rig.anon(2 * PAGE)))
    assert d.address == res.address + 3 * PAGE  # first fit, as NONE


@pytest.mark.parametrize("mode", COALESCING)
def test_previous_removed_none_below_the_one_above_takes_over(
    rig: Rig, mode: pm.Coalescing
) -> None:
    res = rig.reservation(4 * PAGE)
    s = rig.set(G.BYTE, reservation=res)
    a = s.map(pm.Part(rig.anon(PAGE)))
    b = s.map(pm.Part(rig.anon(PAGE)))
    with s.part_map_by_address(a.address) as pmap:
        s.remove_part_map(pmap)
    c = s.map(pm.Part(rig.anon(PAGE)))  # first fit: the lowest, and the previous
    assert c.address == a.address
    with s.part_map_by_address(c.address) as pmap:
        s.remove_part_map(pmap)
    s.coalescing = mode
    d = s.map(pm.Part(rig.anon(PAGE)))
    assert (d.address, d.size) == (b.address, 2 * PAGE)


@pytest.mark.parametrize("mode", COALESCING)
def test_previous_removed_with_its_own_reservation(rig: Rig, mode: pm.Coalescing) -> None:
    """Without a user reservation: the part map below grows its own reservation."""
    s = rig.set(G.BYTE)
    a = s.map(pm.Part(rig.anon(PAGE)))
    b = s.map(pm.Part(rig.anon(PAGE)))
    with s.part_map_by_address(b.address) as pmap:
        s.remove_part_map(pmap)
    s.coalescing = mode
    d = s.map(pm.Part(rig.anon(PAGE)))
    assert (d.address, d.size) == (a.address, 2 * PAGE)


# -- item 10: remove_range under a live handle -----------------------------------------


def test_remove_range_refuses_a_part_map_with_a_live_handle(rig: Rig) -> None:
    """Issue 12 item 10: libpmemset refuses with PART_MAP_POSSIBLE_USE_AFTER_DROP; pmemsim
    removed it. Refused before anything is removed (libpmemset stopped half-way)."""
    s = rig.set(G.BYTE)
    a = s.map(pm.Part(rig.anon(PAGE)))
    b = s.map(pm.Part(rig.anon(PAGE)))
    lo, hi = min(a.address, b.address), max(a.end, b.end)
    handle = s.part_map_by_address(b.address)
    rig.take_events()
    with fails(pm.StateError, E.PART_MAP_POSSIBLE_USE_AFTER_DROP):
        s.remove_range(lo, hi - lo)
    assert rig.kinds() == ["REMOVE_RANGE"]  # fired first, always
    assert sorted(m.address for m in s.part_maps()) == sorted([a.address, b.address])
    assert handle.valid and handle.address == b.address
    handle.drop()
    s.remove_range(lo, hi - lo)
    assert list(s.part_maps()) == []


# -- item 5: one file, two simulators ----------------------------------------------------


def _sim_set(sim: Any) -> pm.Set:
    return pm.Set(pm.Config(granularity=G.CACHE_LINE, backend=sim))


def test_a_file_held_by_one_simulator_is_refused_to_another(tmp_path: Path) -> None:
    """Issue 12 item 5: two SimBackends mapping one file did not see each other's stores,
    and the last write-back won silently (a persisted 111 became 0). A file is now one
    simulator's until it lets go; the other gets a SourceError at map time."""
    from pmemsim_backends.sim import SimBackend

    path = tmp_path / "pool"
    first, second = SimBackend(), SimBackend()
    s = _sim_set(first)
    src = pm.Source.from_file(path, pm.SourceFlag.CREATE_ALWAYS)
    d = s.map(pm.Part(src, 0, PAGE))
    s.memcpy(d.address, (111).to_bytes(8, "little"))  # flushed and drained: durable
    t = _sim_set(second)
    other = pm.Source.from_file(path)
    with fails(pm.SourceError, E.INVALID_PMEM2_SOURCE):
        t.map(pm.Part(other, 0, PAGE))
    s.close()
    src.close()  # the first simulator lets go, writing back what was durable
    e = t.map(pm.Part(other, 0, PAGE))
    assert int.from_bytes(t.read(e.address, 8), "little") == 111
    t.close()
    other.close()
    assert int.from_bytes(path.read_bytes()[:8], "little") == 111


def test_a_file_held_by_a_simulator_is_refused_to_another_process(tmp_path: Path) -> None:
    from pmemsim_backends.sim import SimBackend

    path = tmp_path / "pool"
    s = _sim_set(SimBackend())
    src = pm.Source.from_file(path, pm.SourceFlag.CREATE_ALWAYS)
    d = s.map(pm.Part(src, 0, PAGE))
    s.memcpy(d.address, (111).to_bytes(8, "little"))
    body = f"""
    s = pm.Set(pm.Config(granularity=pm.Granularity.PAGE, backend=be))
    try:
        d = s.map(pm.Part(pm.Source.from_file({str(path)!r}), 0, 4096))
        print("mapped", int.from_bytes(s.read(d.address, 8), "little"))
    except pm.PmemError as e:
        print(type(e).__name__, e.code_name)
    """
    sim = SimBackend()
    assert run_child(sim, body).split() == ["SourceError", "PMEMSET_E_INVALID_PMEM2_SOURCE"]
    s.close()
    src.close()
    assert run_child(sim, body).split() == ["mapped", "111"]


def test_a_second_process_on_libpmem2_sees_the_first_ones_stores(tmp_path: Path) -> None:
    """What libpmem2 gives (docs/concurrency.md): one file mapped by two processes is one
    page cache; a store is visible to the other process at once, persisted or not."""
    be = backend_or_skip("real")
    path = tmp_path / "pool"
    s = pm.Set(pm.Config(granularity=G.PAGE, backend=be))
    src = pm.Source.from_file(path, pm.SourceFlag.CREATE_ALWAYS)
    d = s.map(pm.Part(src, 0, PAGE))
    s.store(d.address, (111).to_bytes(8, "little"))  # not even flushed
    body = f"""
    s = pm.Set(pm.Config(granularity=pm.Granularity.PAGE, backend=be))
    d = s.map(pm.Part(pm.Source.from_file({str(path)!r}), 0, 4096))
    print(int.from_bytes(s.read(d.address, 8), "little"))
    """
    assert run_child(be, body).split() == ["111"]
    s.close()
    src.close()


# -- item 13: libpmem2's instructions per granularity and flag -----------------------------

F = pm.MemFlag


@pytest.mark.parametrize(
    ("granularity", "flags", "durable_before_the_fence"),
    [
        # eADR (BYTE): non-temporal only for NONTEMPORAL; temporal stores are durable at once.
        (G.BYTE, F.NODRAIN, True),
        (G.BYTE, F.NODRAIN | F.WC, True),
        (G.BYTE, F.NODRAIN | F.TEMPORAL, True),
        (G.BYTE, F.NODRAIN | F.NONTEMPORAL, False),
        (G.BYTE, F.NODRAIN | F.NONTEMPORAL | F.TEMPORAL, False),
        # ADR (CACHE_LINE): WC and NONTEMPORAL are non-temporal, and so is a copy of 256 bytes
        # or more without a flag; the rest is flushed but waits for the fence.
        (G.CACHE_LINE, F.NODRAIN, False),
        (G.CACHE_LINE, F.NODRAIN | F.WC, False),
        (G.CACHE_LINE, F.NODRAIN | F.TEMPORAL, False),
        (G.CACHE_LINE, F.NODRAIN | F.NONTEMPORAL, False),
    ],
)
@pytest.mark.parametrize("op", ["memcpy", "memset"])
def test_what_a_1kib_nodrain_copy_leaves_durable(
    granularity: pm.Granularity, flags: pm.MemFlag, durable_before_the_fence: bool, op: str
) -> None:
    """Issue 12 item 13: at BYTE the simulator used non-temporal stores for WC and for
    unflagged copies of 256 bytes or more, so a 1 KiB NODRAIN copy was reported not durable
    until a fence, while on eADR hardware (libpmem2's memmove_nodrain_eadr) it already is."""
    from pmemsim_backends.sim import SimBackend

    sim = SimBackend(granularity)
    with pm.Set(pm.Config(granularity=granularity, backend=sim)) as s:
        d = s.map(pm.Part(pm.Source.anonymous(2 * PAGE)))
        flushes = sim.statistics().flushes
        if op == "memcpy":
            s.memcpy(d.address + 64, b"\x5a" * 1024, None, flags)
        else:
            s.memset(d.address + 64, 0x5A, 1024, flags)
        state = sim.crash_state()
        guaranteed = state.guaranteed_image().read(64, 1024)
        assert (guaranteed == b"\x5a" * 1024) is durable_before_the_fence
        assert state.persisted_image().read(64, 1024) == b"\x5a" * 1024
        if granularity == G.BYTE:  # eADR copies flush nothing
            assert sim.statistics().flushes == flushes
        s.drain()
        assert sim.crash_state().guaranteed_image().read(64, 1024) == b"\x5a" * 1024
