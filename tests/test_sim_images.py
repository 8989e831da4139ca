"""Crash states and crash images: enumeration order, the two extremes, chosen images,
materialising an image for recovery, several sources, and what an image lost (with where in
this file the lost stores were issued)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import lineno, u64
from pmemsim_backends.sim import CrashImage, CrashState, SimBackend

import pmemsim as pm
from pmemsim.provenance import describe, line_of, locations

PAGE = 4096
CL = pm.Granularity.CACHE_LINE
NT_NODRAIN = pm.MemFlag.NONTEMPORAL | pm.MemFlag.NODRAIN
THIS_FILE = os.path.abspath(__file__)

MakeSet = Callable[..., pm.Set]


def workload(v: pm.View) -> None:
    """Three lines with 2, 1 and 1 pending stores: 3 * 2 * 2 = 12 images."""
    v.u64[0] = 1
    v.u64[1] = 2
    v.u64[8] = 3
    v.memcpy(128, u64(4), NT_NODRAIN)


def fresh_view(size: int = 4 * PAGE) -> tuple[SimBackend, pm.View]:
    sim = SimBackend()
    s = pm.Set(pm.Config(granularity=CL, backend=sim))
    return sim, s.view(s.map(pm.Part(pm.Source.anonymous(size))))


class TestEnumeration:
    def test_all_persisted_image_comes_first(self, sim: SimBackend, v: pm.View) -> None:
        workload(v)
        st = sim.crash_state()
        imgs = list(st.images())
        assert len(imgs) == st.image_count() == 12
        assert imgs[0].deviations == ()
        assert imgs[0].read(0, 136) == v.read(0, 136)

    def test_images_are_distinct(self, sim: SimBackend, v: pm.View) -> None:
        workload(v)
        contents = [img.read(0, 136) for img in sim.crash_state().images()]
        assert len(set(contents)) == len(contents) == 12

    def test_same_order_on_a_second_identical_run(self) -> None:
        runs = []
        for _ in range(2):
            sim, v = fresh_view()
            workload(v)
            st = sim.crash_state()
            runs.append([(img.deviations, img.read(0, 136)) for img in st.images()])
        assert runs[0] == runs[1]

    def test_enumeration_can_be_repeated_on_one_state(self, sim: SimBackend, v: pm.View) -> None:
        workload(v)
        st = sim.crash_state()
        first = [img.read(0, 136) for img in st.images()]
        assert [img.read(0, 136) for img in st.images()] == first

    def test_units_are_in_address_order(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[16] = 1
        v.u64[0] = 1
        v.u64[8] = 1
        assert [u.offset for u in sim.crash_state().units] == [0, 64, 128]

    def test_no_pending_stores_means_one_image(self, sim: SimBackend, v: pm.View) -> None:
        st = sim.crash_state()
        assert st.image_count() == 1
        [img] = st.images()
        assert img.read(0, 64) == bytes(64)


class TestExtremes:
    def test_persisted_image_is_what_loads_see(self, sim: SimBackend, v: pm.View) -> None:
        workload(v)
        v.write(1000, b"xyz")
        img = sim.crash_state().persisted_image()
        assert img.deviations == ()
        assert img.read(0, 4 * PAGE) == v.read(0, 4 * PAGE)
        assert img.lost() == []

    def test_guaranteed_image_holds_only_what_is_guaranteed(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.u64[0] = 1
        v.persist(0, 8)
        v.u64[1] = 2  # same line, unflushed
        v.u64[8] = 3  # flushed, not fenced
        v.flush(64, 8)
        v.memcpy(128, u64(4), NT_NODRAIN)
        img = sim.crash_state().guaranteed_image()
        assert img.read(0, 136) == u64(1) + bytes(128)
        assert sorted(a.data for _, a in img.lost()) == [u64(2), u64(3), u64(4)]

    def test_guaranteed_image_when_a_value_is_stored_back(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        # x = 1; x = 0: deduplication merges "both lost" with "both kept"; the guaranteed
        # image must still be the durable 0, not the 1 in between.
        v.u64[0] = 1
        v.u64[0] = 0
        st = sim.crash_state()
        assert st.guaranteed_image().read(0, 8) == u64(0)
        assert st.persisted_image().read(0, 8) == u64(0)
        assert {img.read(0, 8) for img in st.images()} == {u64(0), u64(1)}

    def test_guaranteed_image_after_a_durable_value(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 7
        v.persist(0, 8)
        v.u64[0] = 8
        v.u64[0] = 7
        st = sim.crash_state()
        assert st.guaranteed_image().read(0, 8) == u64(7)
        assert st.image_count() == 2

    def test_guaranteed_image_with_nontemporal_stores_back(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        v.memcpy(0, u64(1), NT_NODRAIN)
        v.memcpy(0, u64(0), NT_NODRAIN)
        st = sim.crash_state()
        assert st.guaranteed_image().read(0, 8) == u64(0)

    def test_guaranteed_image_at_page_granularity(self) -> None:
        sim = SimBackend(granularity=pm.Granularity.PAGE)
        s = pm.Set(pm.Config(granularity=pm.Granularity.PAGE, backend=sim))
        v = s.view(s.map(pm.Part(pm.Source.anonymous(2 * PAGE))))
        v.u64[0] = 1
        v.u64[100] = 2
        v.u64[0] = 0
        v.u64[100] = 0
        st = sim.crash_state()
        assert st.guaranteed_image().read(0, PAGE) == bytes(PAGE)
        assert st.image_count() == 4  # (0,0), (1,0), (1,2), (0,2)

    def test_guaranteed_equals_persisted_when_all_is_durable(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        workload(v)
        v.persist(0, 256)
        st = sim.crash_state()
        assert st.guaranteed_image().read(0, 256) == st.persisted_image().read(0, 256)
        assert st.guaranteed_image().deviations == ()


class TestChosenImages:
    def test_deviations_pick_options_per_unit(self, sim: SimBackend, v: pm.View) -> None:
        workload(v)
        st = sim.crash_state()
        assert [(ln.offset, ln.images) for ln in st.lines()] == [(0, 3), (64, 2), (128, 2)]
        img = st.image([(0, 1)])  # line 0 loses its last store
        assert img.read(0, 16) == u64(1) + bytes(8)
        assert img.read(64, 8) == u64(3)
        img = st.image([(0, 2), (2, 1)])
        assert img.read(0, 136) == bytes(64) + u64(3) + bytes(64)

    def test_option_indexes_are_clamped(self, sim: SimBackend, v: pm.View) -> None:
        workload(v)
        st = sim.crash_state()
        high = st.image([(0, 99), (1, 1000)])
        assert high.deviations == ((0, 2), (1, 1))
        assert high.read(0, 72) == bytes(72)
        low = st.image([(0, -5)])
        assert low.deviations == ()
        assert low.read(0, 16) == u64(1) + u64(2)

    def test_every_enumerated_image_can_be_rebuilt(self, sim: SimBackend, v: pm.View) -> None:
        workload(v)
        st = sim.crash_state()
        for img in st.images():
            assert st.image(list(img.deviations)).read(0, 136) == img.read(0, 136)

    def test_unknown_unit_is_an_error(self, sim: SimBackend, v: pm.View) -> None:
        workload(v)
        st = sim.crash_state()
        with pytest.raises(pm.InvalidArgumentError):
            st.image([(3, 0)])
        with pytest.raises(pm.InvalidArgumentError):
            st.image([(-1, 0)])

    def test_options_go_from_all_persisted_to_nothing_persisted(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        workload(v)
        st = sim.crash_state()
        assert [st.option(0, i).kept for i in range(3)] == [2, 1, 0]
        assert [st.option(0, i).lost for i in range(3)] == [0, 1, 2]


class TestMaterialising:
    def test_image_maps_in_a_fresh_set_on_a_new_simulator(
        self, sim: SimBackend, v: pm.View
    ) -> None:
        workload(v)
        st = sim.crash_state()
        img = st.image([(0, 1), (2, 1)])
        snap = img.snapshot()
        assert isinstance(snap, pm.Snapshot)
        assert snap.size == 4 * PAGE
        assert snap.read(0, 16) == u64(1) + bytes(8)

        recovery = SimBackend()
        with pm.Set(pm.Config(granularity=CL, backend=recovery)) as r:
            rv = r.view(r.map(pm.Part(pm.Source.from_image(snap))))
            assert rv.read(0, 136) == u64(1) + bytes(56) + u64(3) + bytes(56) + u64(0)
            assert recovery.image_count() == 1  # the image is durable content there
            # Recovery writes: a new crash state on the new simulator, nothing else.
            rv.u64[0] = 0xBAD
            rv.persist(0, 8)
            rv.u64[8] = 0xBAD
            assert rv.u64[0] == 0xBAD
            assert recovery.image_count() == 2
        assert snap.read(0, 16) == u64(1) + bytes(8)
        assert snap.read(64, 8) == u64(3)
        # The original simulator and its crash state are untouched.
        assert v.read(0, 16) == u64(1) + u64(2)
        assert sim.image_count() == 12
        assert st.image([(0, 1), (2, 1)]).read(0, 72) == u64(1) + bytes(56) + u64(3)

    def test_a_snapshot_maps_twice_with_the_same_content(self, sim: SimBackend, v: pm.View) -> None:
        workload(v)
        snap = sim.crash_state().persisted_image().snapshot()
        for _ in range(2):
            recovery = SimBackend()
            with pm.Set(pm.Config(granularity=CL, backend=recovery)) as r:
                rv = r.view(r.map(pm.Part(pm.Source.from_image(snap))))
                assert rv.read(0, 16) == u64(1) + u64(2)
                rv.write(0, b"\xff" * 64)
                rv.persist(0, 64)

    def test_recovery_on_the_same_simulator_leaves_the_original(
        self, sim: SimBackend, v: pm.View, make_set: MakeSet
    ) -> None:
        workload(v)
        snap = sim.crash_state().guaranteed_image().snapshot()
        r = make_set()
        rv = r.view(r.map(pm.Part(pm.Source.from_image(snap))))
        assert rv.read(0, 136) == bytes(136)
        rv.u64[0] = 9
        rv.persist(0, 8)
        assert v.u64[0] == 1
        assert snap.read(0, 8) == u64(0)

    def test_later_stores_do_not_change_a_snapshot(self, sim: SimBackend, v: pm.View) -> None:
        v.write(0, b"a" * 64)
        v.persist(0, 64)
        snap = sim.crash_state().persisted_image().snapshot()
        v.write(0, b"b" * 64)
        v.persist(0, 64)
        v.write(PAGE, b"c" * 8)  # a page the snapshot never had
        v.persist(PAGE, 8)
        assert snap.read(0, 64) == b"a" * 64
        assert snap.read(PAGE, 8) == bytes(8)
        assert snap.to_bytes() == b"a" * 64 + bytes(4 * PAGE - 64)


def make_file(path: Path, size: int, fill: int) -> Path:
    path.write_bytes(bytes([fill]) * size)
    return path


class TestSeveralSources:
    def test_two_files_one_crash_state(self, tmp_path: Path, make_set: MakeSet) -> None:
        sim_set = make_set()
        a = pm.Source.from_file(make_file(tmp_path / "a", 2 * PAGE, 0xAA))
        b = pm.Source.from_file(make_file(tmp_path / "b", PAGE, 0xBB))
        va = sim_set.view(sim_set.map(pm.Part(a)))
        vb = sim_set.view(sim_set.map(pm.Part(b)))
        va.u64[0] = 1
        vb.u64[0] = 2
        vb.u64[1] = 3
        st = sim_set.backend.crash_state()  # type: ignore[attr-defined]
        assert isinstance(st, CrashState)
        assert st.image_count() == 2 * 3
        sources = sorted({ln.source for ln in st.lines()})
        assert sources == [str(tmp_path / "a"), str(tmp_path / "b")]
        seen = set()
        for img in st.images():
            seen.add((img.read(0, 8, a), img.read(0, 16, b)))
            with pytest.raises(pm.InvalidArgumentError):
                img.read(0, 8)  # two sources: say which
        assert seen == {
            (x, y)
            for x in (u64(1), b"\xaa" * 8)
            for y in (u64(2) + u64(3), u64(2) + b"\xbb" * 8, b"\xbb" * 16)
        }

    def test_choose_the_source_by_object_or_label(
        self, tmp_path: Path, make_set: MakeSet, sim: SimBackend
    ) -> None:
        s = make_set()
        a = pm.Source.from_file(make_file(tmp_path / "a", PAGE, 0xAA))
        b = pm.Source.from_file(make_file(tmp_path / "b", PAGE, 0xBB))
        s.view(s.map(pm.Part(a))).u64[0] = 1
        s.view(s.map(pm.Part(b))).u64[0] = 2
        img = sim.crash_state().persisted_image()
        assert img.snapshot(a).read(0, 9) == u64(1) + b"\xaa"
        assert img.snapshot(b).read(0, 9) == u64(2) + b"\xbb"
        assert img.read(0, 8, str(tmp_path / "b")) == u64(2)
        assert img.snapshot(a).label == str(tmp_path / "a")
        other = pm.Source.anonymous(PAGE)
        with pytest.raises(pm.InvalidArgumentError):
            img.snapshot(other)

    def test_an_image_of_one_source_recovers_alone(
        self, tmp_path: Path, make_set: MakeSet, sim: SimBackend
    ) -> None:
        s = make_set()
        a = pm.Source.from_file(make_file(tmp_path / "a", PAGE, 0xAA))
        b = pm.Source.from_file(make_file(tmp_path / "b", PAGE, 0xBB))
        va = s.view(s.map(pm.Part(a)))
        vb = s.view(s.map(pm.Part(b)))
        va.u64[0] = 1
        vb.u64[0] = 2
        vb.persist(0, 8)
        st = sim.crash_state()
        img = st.guaranteed_image()
        with pm.Set(pm.Config(granularity=CL, backend=SimBackend())) as r:
            ra = r.view(r.map(pm.Part(pm.Source.from_image(img.snapshot(a)))))
            rb = r.view(r.map(pm.Part(pm.Source.from_image(img.snapshot(b)))))
            assert ra.read(0, 9) == b"\xaa" * 9
            assert rb.read(0, 9) == u64(2) + b"\xbb"
        # The files themselves still hold their original content (nothing closed yet).
        assert (tmp_path / "a").read_bytes()[:8] == b"\xaa" * 8

    def test_an_image_taken_before_a_close_keeps_untouched_pages(
        self, tmp_path: Path, make_set: MakeSet, sim: SimBackend
    ) -> None:
        # Pages an image never copied are read from the file lazily; writing the file at
        # close (and reusing its descriptor number) must not change what the image shows.
        path = make_file(tmp_path / "f", 2 * PAGE, 0xAB)
        s = make_set()
        src = pm.Source.from_file(path)
        v = s.view(s.map(pm.Part(src)))
        v.u64[0] = 1
        snap = sim.crash_state().persisted_image().snapshot()
        v.u64[PAGE // 8 + 10] = 2  # page 1, untouched when the image was taken
        v.persist(PAGE + 80, 8)
        s.close()
        src.close()
        assert path.read_bytes()[PAGE + 80 : PAGE + 88] == u64(2)
        reopened = [os.open(path, os.O_RDONLY) for _ in range(3)]
        try:
            assert snap.read(PAGE + 80, 8) == b"\xab" * 8
            assert snap.read(0, 9) == u64(1) + b"\xab"
        finally:
            for fd in reopened:
                os.close(fd)


class TestLost:
    def test_lost_names_atoms_and_where_they_were_stored(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        line_x = lineno() - 1
        v.write(8, b"Y" * 16)  # two atoms: 8..16 and 16..24
        line_y = lineno() - 1
        v.memcpy(64, u64(5), NT_NODRAIN)
        line_nt = lineno() - 1
        st = sim.crash_state()
        img = st.guaranteed_image()
        lost = img.lost()
        assert [(unit, a.offset, a.data, a.nontemporal) for unit, a in lost] == [
            (0, 0, u64(1), False),
            (0, 8, b"Y" * 8, False),
            (0, 16, b"Y" * 8, False),
            (1, 64, u64(5), True),
        ]
        lines = [line_of(*a.frame) for _, a in lost]
        assert lines == [line_x, line_y, line_y, line_nt]
        for _, a in lost:
            [loc] = locations((a.frame,))
            assert loc.filename == THIS_FILE
            assert loc.function.endswith("test_lost_names_atoms_and_where_they_were_stored")
        assert describe((lost[0][1].frame,)) == (
            f"{THIS_FILE}:{line_x} in TestLost.test_lost_names_atoms_and_where_they_were_stored"
        )

    def test_lost_is_only_the_suffix(self, sim: SimBackend, v: pm.View) -> None:
        v.u64[0] = 1
        v.u64[1] = 2
        line_2 = lineno() - 1
        v.u64[2] = 3
        line_3 = lineno() - 1
        img = sim.crash_state().image([(0, 2)])  # keeps the first store only
        assert img.read(0, 24) == u64(1) + bytes(16)
        assert [(a.data, line_of(*a.frame)) for _, a in img.lost()] == [
            (u64(2), line_2),
            (u64(3), line_3),
        ]

    def test_lost_store_issued_in_a_helper(self, sim: SimBackend, v: pm.View) -> None:
        def helper() -> int:
            v.u64[3] = 4
            return lineno() - 1

        line = helper()
        [(_, atom)] = sim.crash_state().guaranteed_image().lost()
        assert describe((atom.frame,)).startswith(f"{THIS_FILE}:{line} in ")

    def test_persisted_image_loses_nothing(self, sim: SimBackend, v: pm.View) -> None:
        workload(v)
        assert sim.crash_state().persisted_image().lost() == []

    def test_every_image_reports_exactly_what_differs(self, sim: SimBackend, v: pm.View) -> None:
        workload(v)
        st = sim.crash_state()
        full = st.persisted_image().read(0, 136)
        img: CrashImage
        for img in st.images():
            content = img.read(0, 136)
            lost_offsets = {a.offset for _, a in img.lost()}
            differing = {i - i % 8 for i in range(136) if content[i] != full[i]}
            assert differing == lost_offsets
