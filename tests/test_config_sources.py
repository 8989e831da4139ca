"""Config, sources and parts: the rules of pmemset.md's "Objects" and "Mapping a part" (size).

Every test runs on a fresh simulator (the ``sim`` fixture) so that nothing leaks between tests.
"""

from __future__ import annotations

import gc
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pmemsim_backends.sim import SimBackend

import pmemsim as pm
from pmemsim.errors import ErrorCode
from pmemsim.part import INT64_MAX

PAGE = 4096
CL = pm.Granularity.CACHE_LINE

MakeSet = Callable[..., pm.Set]


def make_file(path: Path, size: int, fill: bytes = b"\0") -> Path:
    path.write_bytes((fill * size)[:size])
    return path


def fds_into(directory: Path) -> list[str]:
    """Targets of this process's open descriptors that lie in ``directory``."""
    out = []
    prefix = str(directory) + os.sep
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the descriptor listdir itself used, now closed
            continue
        if target.startswith(prefix):
            out.append(target)
    return out


# -- Config --------------------------------------------------------------------------------


class TestConfig:
    def test_granularity_is_required(self, sim: SimBackend) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Set(pm.Config(backend=sim))
        assert ei.value.code == ErrorCode.GRANULARITY_NOT_SET
        assert ei.value.code_name == "PMEMSET_E_GRANULARITY_NOT_SET"

    @pytest.mark.parametrize("gran", list(pm.Granularity))
    def test_every_granularity_is_accepted(self, sim: SimBackend, gran: pm.Granularity) -> None:
        with pm.Set(pm.Config(granularity=gran, backend=sim)) as s:
            assert s.required_granularity is gran
            assert s.config.granularity is gran

    @pytest.mark.parametrize("gran", ["CACHE_LINE", 1.0, True])
    def test_granularity_of_another_type(self, sim: SimBackend, gran: Any) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Set(pm.Config(granularity=gran, backend=sim))
        assert ei.value.code == ErrorCode.EINVAL

    @pytest.mark.parametrize("gran", [3, -1, 1 << 70])
    def test_unknown_granularity_value(self, sim: SimBackend, gran: int) -> None:
        """libpmemset's pmemset_config_set_required_store_granularity: an unknown value is
        GRANULARITY_NOT_SUPPORTED (issue 12, item 12)."""
        with pytest.raises(pm.MapError) as ei:
            pm.Set(pm.Config(granularity=gran, backend=sim))
        assert ei.value.code == ErrorCode.GRANULARITY_NOT_SUPPORTED

    @pytest.mark.parametrize(
        "states", [0, -1, 1 << 5, (1 << 5) | pm.PartState.OK, True, False, "OK", 2.0, None]
    )
    def test_invalid_acceptable_states(self, sim: SimBackend, states: Any) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Set(pm.Config(granularity=CL, acceptable_states=states, backend=sim))
        assert ei.value.code == ErrorCode.INVALID_PART_STATES

    @pytest.mark.parametrize(
        "states",
        [
            pm.PartState.OK,
            pm.PartState.CORRUPTED,
            pm.PartState.OK | pm.PartState.OK_BUT_INTERRUPTED,
            pm.PartState.valid_mask(),
            1,
        ],
    )
    def test_valid_acceptable_states(self, sim: SimBackend, states: int) -> None:
        with pm.Set(pm.Config(granularity=CL, acceptable_states=states, backend=sim)) as s:
            assert s.config.acceptable_states == states
            assert isinstance(s.config.acceptable_states, pm.PartState)

    def test_default_acceptable_states(self) -> None:
        assert pm.Config().acceptable_states == (pm.PartState.OK | pm.PartState.OK_BUT_ALREADY_OPEN)

    @pytest.mark.parametrize("cb", [5, "callback", object()])
    def test_callback_must_be_callable(self, sim: SimBackend, cb: Any) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Set(pm.Config(granularity=CL, event_callback=cb, backend=sim))
        assert ei.value.code == ErrorCode.EINVAL

    def test_config_is_not_a_config(self) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Set({"granularity": CL})  # type: ignore[arg-type]
        assert ei.value.code == ErrorCode.EINVAL

    def test_set_copies_config_at_creation(self, sim: SimBackend) -> None:
        first: list[Any] = []
        later: list[Any] = []
        cfg = pm.Config(
            granularity=CL,
            event_callback=lambda s, e, a: first.append((e, a)),
            user_arg="arg1",
            backend=sim,
        )
        with pm.Set(cfg) as s:
            assert s.config is not cfg
            # Edit every field of the original after creation.
            cfg.granularity = pm.Granularity.BYTE
            cfg.event_callback = lambda s, e, a: later.append((e, a))
            cfg.user_arg = "arg2"
            cfg.acceptable_states = pm.PartState.CORRUPTED
            cfg.backend = SimBackend()
            cfg.reservation = pm.Reservation(PAGE, backend=sim)

            assert s.required_granularity == CL
            assert s.config.granularity == CL
            assert s.config.user_arg == "arg1"
            assert s.config.acceptable_states == (
                pm.PartState.OK | pm.PartState.OK_BUT_ALREADY_OPEN
            )
            assert s.config.reservation is None
            assert s.backend is sim
            d = s.map(pm.Part(pm.Source.anonymous(2 * PAGE)))
            # Not placed in the reservation added to the original afterwards.
            assert not (cfg.reservation.address <= d.address < cfg.reservation.address + PAGE)
            assert later == []
            assert len(first) == 1
            ev, arg = first[0]
            assert isinstance(ev, pm.PartAddEvent) and arg == "arg1"
            assert (ev.addr, ev.len) == (d.address, 2 * PAGE)

    def test_two_sets_from_one_config_are_independent(self, sim: SimBackend) -> None:
        cfg = pm.Config(granularity=CL, backend=sim)
        with pm.Set(cfg) as a, pm.Set(cfg) as b:
            a.map(pm.Part(pm.Source.anonymous(PAGE)))
            assert len(list(a.part_maps())) == 1
            assert list(b.part_maps()) == []

    def test_backend_by_name(self) -> None:
        with pm.Set(pm.Config(granularity=CL, backend="sim")) as s:
            assert isinstance(s.backend, SimBackend)

    @pytest.mark.parametrize("backend", ["no-such-backend", 42])
    def test_invalid_backend(self, backend: Any) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Set(pm.Config(granularity=CL, backend=backend))
        assert ei.value.code == ErrorCode.EINVAL

    def test_reservation_of_another_backend_is_rejected(self, sim: SimBackend) -> None:
        other = SimBackend()
        res = pm.Reservation(PAGE, backend=other)
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Set(pm.Config(granularity=CL, reservation=res, backend=sim))
        assert ei.value.code == ErrorCode.EINVAL

    def test_reservation_must_be_a_reservation(self, sim: SimBackend) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Set(pm.Config(granularity=CL, reservation=PAGE, backend=sim))  # type: ignore[arg-type]
        assert ei.value.code == ErrorCode.EINVAL


# -- Sources -------------------------------------------------------------------------------


class TestFileSources:
    def test_existing_file_opens_without_flags(self, tmp_path: Path, make_set: MakeSet) -> None:
        f = make_file(tmp_path / "f", PAGE, b"\x5a")
        with pm.Source.from_file(f) as src:
            assert src.kind == "file"
            assert src.size == PAGE
            s = make_set()
            d = s.map(pm.Part(src))
            assert s.read(d.address, 4) == b"\x5a" * 4

    def test_missing_file_without_create(self, tmp_path: Path) -> None:
        with pytest.raises(pm.SourceError) as ei:
            pm.Source.from_file(tmp_path / "missing")
        assert ei.value.code == ErrorCode.INVALID_SOURCE_PATH
        assert not (tmp_path / "missing").exists()

    def test_missing_file_with_do_not_grow_only(self, tmp_path: Path) -> None:
        with pytest.raises(pm.SourceError) as ei:
            pm.Source.from_file(tmp_path / "missing", pm.SourceFlag.DO_NOT_GROW)
        assert ei.value.code == ErrorCode.INVALID_SOURCE_PATH

    def test_missing_parent_directory(self, tmp_path: Path) -> None:
        with pytest.raises(pm.SourceError) as ei:
            pm.Source.from_file(tmp_path / "nodir" / "f", pm.SourceFlag.CREATE_IF_NEEDED)
        assert ei.value.code == ErrorCode.INVALID_SOURCE_PATH

    def test_empty_path(self) -> None:
        with pytest.raises(pm.SourceError) as ei:
            pm.Source.from_file("")
        assert ei.value.code == ErrorCode.INVALID_SOURCE_PATH

    @pytest.mark.parametrize(
        "flags", [pm.SourceFlag.NONE, pm.SourceFlag.CREATE_IF_NEEDED, pm.SourceFlag.CREATE_ALWAYS]
    )
    def test_directory_is_invalid_source_type(self, tmp_path: Path, flags: pm.SourceFlag) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Source.from_file(tmp_path, flags)
        assert ei.value.code == ErrorCode.INVALID_SOURCE_TYPE

    def test_create_if_needed_creates(self, tmp_path: Path) -> None:
        p = tmp_path / "new"
        with pm.Source.from_file(p, pm.SourceFlag.CREATE_IF_NEEDED) as src:
            assert p.is_file()
            assert src.size == 0

    def test_create_if_needed_keeps_existing_content(self, tmp_path: Path) -> None:
        p = make_file(tmp_path / "f", PAGE, b"\x11")
        with pm.Source.from_file(p, pm.SourceFlag.CREATE_IF_NEEDED) as src:
            assert src.size == PAGE
        assert p.read_bytes() == b"\x11" * PAGE

    def test_create_always_truncates(self, tmp_path: Path) -> None:
        p = make_file(tmp_path / "f", PAGE, b"\x11")
        with pm.Source.from_file(p, pm.SourceFlag.CREATE_ALWAYS) as src:
            assert src.size == 0
        assert p.read_bytes() == b""

    def test_create_always_creates(self, tmp_path: Path) -> None:
        p = tmp_path / "new"
        with pm.Source.from_file(p, pm.SourceFlag.CREATE_ALWAYS) as src:
            assert src.size == 0
        assert p.is_file()

    @pytest.mark.parametrize("mode", [0o600, 0o640, 0o400])
    def test_create_mode(self, tmp_path: Path, mode: int) -> None:
        p = tmp_path / "new"
        old = os.umask(0o022)
        try:
            with pm.Source.from_file(p, pm.SourceFlag.CREATE_IF_NEEDED, mode=mode):
                pass
        finally:
            os.umask(old)
        assert stat.S_IMODE(p.stat().st_mode) == mode & ~0o022

    def test_default_mode_is_0600(self, tmp_path: Path) -> None:
        p = tmp_path / "new"
        old = os.umask(0)
        try:
            with pm.Source.from_file(p, pm.SourceFlag.CREATE_ALWAYS):
                pass
        finally:
            os.umask(old)
        assert stat.S_IMODE(p.stat().st_mode) == 0o600

    def test_mode_does_not_touch_existing_file(self, tmp_path: Path) -> None:
        p = make_file(tmp_path / "f", PAGE)
        p.chmod(0o644)
        with pm.Source.from_file(p, pm.SourceFlag.CREATE_IF_NEEDED, mode=0o600):
            pass
        assert stat.S_IMODE(p.stat().st_mode) == 0o644

    @pytest.mark.parametrize(
        "flags",
        [
            1 << 3,
            1 << 10,
            -1,
            pm.SourceFlag.CREATE_ALWAYS | pm.SourceFlag.CREATE_IF_NEEDED,
            pm.SourceFlag.CREATE_ALWAYS
            | pm.SourceFlag.CREATE_IF_NEEDED
            | pm.SourceFlag.DO_NOT_GROW,
            True,
            "CREATE_ALWAYS",
            1.0,
            None,
        ],
    )
    def test_invalid_flags(self, tmp_path: Path, flags: Any) -> None:
        p = tmp_path / "f"
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Source.from_file(p, flags)
        assert ei.value.code == ErrorCode.INVALID_SOURCE_FILE_CREATE_FLAGS
        assert not p.exists()

    @pytest.mark.parametrize("mode", [0o1000, 0o4600, -1, "0600", 1.5])
    def test_invalid_mode(self, tmp_path: Path, mode: Any) -> None:
        p = tmp_path / "f"
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Source.from_file(p, pm.SourceFlag.CREATE_IF_NEEDED, mode=mode)
        assert ei.value.code == ErrorCode.INVALID_SOURCE_FILE_CREATE_FLAGS
        assert not p.exists()

    def test_every_valid_flag_combination(self, tmp_path: Path) -> None:
        for value in range(pm.SourceFlag.valid_mask() + 1):
            flags = pm.SourceFlag(value)
            p = tmp_path / f"f{value}"
            both = pm.SourceFlag.CREATE_ALWAYS | pm.SourceFlag.CREATE_IF_NEEDED
            if flags & both == both:
                continue
            if not flags & both:
                make_file(p, PAGE)
            with pm.Source.from_file(p, flags) as src:
                assert src.flags == flags

    def test_pathlike_and_str(self, tmp_path: Path) -> None:
        p = make_file(tmp_path / "f", PAGE)
        with pm.Source.from_file(str(p)) as a, pm.Source.from_file(p) as b:
            assert a.path == b.path == str(p)

    def test_closed_source_cannot_be_mapped(self, tmp_path: Path, make_set: MakeSet) -> None:
        src = pm.Source.from_file(make_file(tmp_path / "f", PAGE))
        part = pm.Part(src)
        src.close()
        assert src.closed
        with pytest.raises(pm.SourceError) as ei:
            make_set().map(part)
        assert ei.value.code == ErrorCode.INVALID_PMEM2_SOURCE
        assert not part.consumed


class TestTemporarySources:
    def test_vanishes(self, tmp_path: Path, make_set: MakeSet) -> None:
        d = tmp_path / "tmpdir"
        d.mkdir()
        src = pm.Source.temporary(d)
        assert src.kind == "temporary"
        assert src.path is None
        assert os.listdir(d) == []  # unnamed from the start
        s = make_set()
        desc = s.map(pm.Part(src, 0, 16 * PAGE))  # the temporary file grows to fit
        assert src.size == 16 * PAGE
        s.memset(desc.address, 0xAB, 16 * PAGE)  # flushed and drained: written back at close
        assert s.read(desc.address + 5 * PAGE, 3) == b"\xab" * 3
        assert os.listdir(d) == []
        assert fds_into(d), "the open temporary file should show in /proc/self/fd"
        s.close()
        src.close()
        assert src.closed
        assert os.listdir(d) == []
        # No descriptor (ours or the backend's) keeps the unnamed file, so its space is freed.
        assert fds_into(d) == []

    def test_vanishes_when_garbage_collected(self, tmp_path: Path) -> None:
        d = tmp_path / "tmpdir"
        d.mkdir()
        sim = SimBackend()
        src = pm.Source.temporary(d)
        with pm.Set(pm.Config(granularity=CL, backend=sim)) as s:
            s.map(pm.Part(src, 0, PAGE))
        assert fds_into(d)
        del src
        gc.collect()
        assert fds_into(d) == []
        assert os.listdir(d) == []

    def test_two_temporaries_are_distinct(self, tmp_path: Path, make_set: MakeSet) -> None:
        a, b = pm.Source.temporary(tmp_path), pm.Source.temporary(tmp_path)
        try:
            s = make_set()
            da = s.map(pm.Part(a, 0, PAGE))
            db = s.map(pm.Part(b, 0, PAGE))
            s.store(da.address, b"A")
            s.store(db.address, b"B")
            assert s.read(da.address, 1) == b"A"
            assert s.read(db.address, 1) == b"B"
        finally:
            a.close()
            b.close()

    @pytest.mark.parametrize("where", ["missing", "missing/deeper", "f/below-a-file", ""])
    def test_missing_directory(self, tmp_path: Path, where: str) -> None:
        """libpmemset's pmemset_source test: a folder that does not exist is
        INVALID_SOURCE_PATH (issue 12, item 12)."""
        make_file(tmp_path / "f", 10)
        with pytest.raises(pm.SourceError) as ei:
            pm.Source.temporary(tmp_path / where if where else "")
        assert ei.value.code == ErrorCode.INVALID_SOURCE_PATH

    def test_directory_is_a_file(self, tmp_path: Path) -> None:
        f = make_file(tmp_path / "f", 10)
        with pytest.raises(pm.SourceError) as ei:
            pm.Source.temporary(f)
        assert ei.value.code == ErrorCode.CANNOT_CREATE_TEMP_FILE


class TestAnonymousSources:
    def test_zeroed_on_every_map(self, make_set: MakeSet) -> None:
        src = pm.Source.anonymous(2 * PAGE)
        s = make_set()
        for _ in range(3):
            d = s.map(pm.Part(src))
            assert s.read(d.address, 2 * PAGE) == bytes(2 * PAGE)
            s.memset(d.address, 0xFF, 2 * PAGE)
            s.persist(d.address, 2 * PAGE)
            assert s.read(d.address, 8) == b"\xff" * 8
            pmap = s.part_map_by_address(d.address)
            s.remove_part_map(pmap)

    def test_two_maps_at_once_are_independent(self, make_set: MakeSet) -> None:
        src = pm.Source.anonymous(PAGE)
        s = make_set()
        a = s.map(pm.Part(src))
        b = s.map(pm.Part(src))
        s.store(a.address, b"xyz")
        assert s.read(b.address, 3) == bytes(3)

    @pytest.mark.parametrize("size", [0, -PAGE, True, 4096.0, "4096"])
    def test_invalid_size(self, size: Any) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Source.anonymous(size)
        assert ei.value.code == ErrorCode.EINVAL

    def test_part_beyond_anonymous_source_is_a_pmem2_failure(self, make_set: MakeSet) -> None:
        s = make_set()
        part = pm.Part(pm.Source.anonymous(PAGE), 0, 2 * PAGE)
        with pytest.raises(pm.MapError) as ei:
            s.map(part)
        assert ei.value.code == ErrorCode.INVALID_PMEM2_MAP
        assert ei.value.pmem2_code is not None
        assert not part.consumed
        assert list(s.part_maps()) == []


# -- Parts ---------------------------------------------------------------------------------


class TestParts:
    def test_length_zero_is_the_whole_file(self, tmp_path: Path, make_set: MakeSet) -> None:
        with pm.Source.from_file(make_file(tmp_path / "f", 3 * PAGE)) as src:
            s = make_set()
            d = s.map(pm.Part(src))
            assert d.size == 3 * PAGE
            assert list(s.part_maps()) == [d]

    def test_length_zero_with_offset_is_the_rest(self, tmp_path: Path, make_set: MakeSet) -> None:
        with pm.Source.from_file(make_file(tmp_path / "f", 3 * PAGE)) as src:
            d = make_set().map(pm.Part(src, PAGE))
            assert d.size == 2 * PAGE
            assert src.size == 3 * PAGE

    def test_length_zero_offset_at_end(self, tmp_path: Path, make_set: MakeSet) -> None:
        with pm.Source.from_file(make_file(tmp_path / "f", PAGE)) as src:
            part = pm.Part(src, PAGE)
            with pytest.raises(pm.RangeError) as ei:
                make_set().map(part)
            assert ei.value.code == ErrorCode.OFFSET_OUT_OF_RANGE
            assert not part.consumed

    def test_length_zero_of_anonymous_is_whole(self, make_set: MakeSet) -> None:
        d = make_set().map(pm.Part(pm.Source.anonymous(5 * PAGE)))
        assert d.size == 5 * PAGE

    @pytest.mark.parametrize(
        "flags", [pm.SourceFlag.CREATE_IF_NEEDED, pm.SourceFlag.CREATE_ALWAYS, pm.SourceFlag.NONE]
    )
    def test_empty_file_length_zero(
        self, tmp_path: Path, make_set: MakeSet, flags: pm.SourceFlag
    ) -> None:
        p = tmp_path / "f"
        p.touch()
        with pm.Source.from_file(p, flags) as src:
            part = pm.Part(src, 0, 0)
            s = make_set()
            with pytest.raises(pm.SourceError) as ei:
                s.map(part)
            assert ei.value.code == ErrorCode.MAP_LENGTH_UNSET
            assert not part.consumed
            assert src.size == 0
            assert list(s.part_maps()) == []

    def test_empty_temporary_length_zero(self, tmp_path: Path, make_set: MakeSet) -> None:
        with pm.Source.temporary(tmp_path) as src:
            with pytest.raises(pm.SourceError) as ei:
                make_set().map(pm.Part(src))
            assert ei.value.code == ErrorCode.MAP_LENGTH_UNSET

    @pytest.mark.parametrize("length", [1, 100, PAGE - 1, PAGE + 64, 3 * PAGE // 2])
    def test_unaligned_length(self, tmp_path: Path, make_set: MakeSet, length: int) -> None:
        with pm.Source.from_file(make_file(tmp_path / "f", PAGE)) as src:
            part = pm.Part(src, 0, length)
            with pytest.raises(pm.InvalidArgumentError) as ei:
                make_set().map(part)
            assert ei.value.code == ErrorCode.LENGTH_UNALIGNED
            assert not part.consumed
            assert src.size == PAGE  # not grown

    def test_unaligned_whole_file(self, tmp_path: Path, make_set: MakeSet) -> None:
        with pm.Source.from_file(make_file(tmp_path / "f", PAGE + 10)) as src:
            with pytest.raises(pm.InvalidArgumentError) as ei:
                make_set().map(pm.Part(src))
            assert ei.value.code == ErrorCode.LENGTH_UNALIGNED

    @pytest.mark.parametrize("offset", [INT64_MAX + 1, 1 << 64, -1, -PAGE])
    def test_invalid_offset_value(self, offset: int) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Part(pm.Source.anonymous(PAGE), offset, PAGE)
        assert ei.value.code == ErrorCode.INVALID_OFFSET_VALUE

    def test_offset_int64_max_is_a_valid_value(self) -> None:
        part = pm.Part(pm.Source.anonymous(PAGE), INT64_MAX, PAGE)
        assert part.offset == INT64_MAX

    @pytest.mark.parametrize(
        ("offset", "length"), [(1.0, PAGE), ("0", PAGE), (True, PAGE), (0, -PAGE), (0, 1.5)]
    )
    def test_invalid_part_arguments(self, offset: Any, length: Any) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Part(pm.Source.anonymous(PAGE), offset, length)
        assert ei.value.code == ErrorCode.EINVAL

    def test_part_needs_a_source(self) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            pm.Part("file.bin", 0, PAGE)  # type: ignore[arg-type]
        assert ei.value.code == ErrorCode.EINVAL

    def test_map_needs_a_part(self, make_set: MakeSet) -> None:
        with pytest.raises(pm.InvalidArgumentError) as ei:
            make_set().map(pm.Source.anonymous(PAGE))  # type: ignore[arg-type]
        assert ei.value.code == ErrorCode.EINVAL

    @pytest.mark.parametrize(
        ("offset", "length", "grown"),
        [(0, 2 * PAGE, 2 * PAGE), (PAGE, PAGE, 2 * PAGE), (4 * PAGE, PAGE, 5 * PAGE)],
    )
    def test_file_grows_to_fit(
        self, tmp_path: Path, make_set: MakeSet, offset: int, length: int, grown: int
    ) -> None:
        p = make_file(tmp_path / "f", PAGE, b"\x77")
        with pm.Source.from_file(p) as src:
            s = make_set()
            d = s.map(pm.Part(src, offset, length))
            assert d.size == length
            assert src.size == grown
            assert p.stat().st_size == grown
            # The grown range reads as zeros; the old content is still there.
            assert s.read(d.address + d.size - 8, 8) == bytes(8)
            if offset == 0:
                assert s.read(d.address, 8) == b"\x77" * 8

    def test_file_does_not_shrink(self, tmp_path: Path, make_set: MakeSet) -> None:
        p = make_file(tmp_path / "f", 4 * PAGE)
        with pm.Source.from_file(p) as src:
            make_set().map(pm.Part(src, 0, PAGE))
            assert src.size == 4 * PAGE

    @pytest.mark.parametrize(("offset", "length"), [(0, 2 * PAGE), (PAGE, PAGE), (0, 100 * PAGE)])
    def test_do_not_grow(self, tmp_path: Path, make_set: MakeSet, offset: int, length: int) -> None:
        p = make_file(tmp_path / "f", PAGE)
        with pm.Source.from_file(p, pm.SourceFlag.DO_NOT_GROW) as src:
            part = pm.Part(src, offset, length)
            s = make_set()
            with pytest.raises(pm.SourceError) as ei:
                s.map(part)
            assert ei.value.code == ErrorCode.SOURCE_FILE_IS_TOO_SMALL
            assert src.size == PAGE
            assert not part.consumed
            assert list(s.part_maps()) == []
            # A part that fits still maps.
            d = s.map(pm.Part(src, 0, PAGE))
            assert d.size == PAGE

    def test_do_not_grow_temporary_never_set(self, tmp_path: Path, make_set: MakeSet) -> None:
        with pm.Source.temporary(tmp_path) as src:
            make_set().map(pm.Part(src, 0, 2 * PAGE))
            assert src.size == 2 * PAGE

    def test_mapping_consumes_the_part(self, tmp_path: Path, make_set: MakeSet) -> None:
        with pm.Source.from_file(make_file(tmp_path / "f", 2 * PAGE)) as src:
            part = pm.Part(src, 0, PAGE)
            s = make_set()
            assert not part.consumed
            d = s.map(part)
            assert part.consumed
            with pytest.raises(pm.LookupFailure) as ei:
                s.map(part)
            assert ei.value.code == ErrorCode.PART_NOT_FOUND
            assert list(s.part_maps()) == [d]
            # ... and in another set too.
            with pytest.raises(pm.LookupFailure) as ei:
                make_set().map(part)
            assert ei.value.code == ErrorCode.PART_NOT_FOUND
            # A new part of the same source is fine.
            s.map(pm.Part(src, PAGE, PAGE))
            assert len(list(s.part_maps())) == 2

    def test_consumed_even_after_removal(self, make_set: MakeSet) -> None:
        s = make_set()
        part = pm.Part(pm.Source.anonymous(PAGE))
        d = s.map(part)
        s.remove_range(d.address, d.size)
        with pytest.raises(pm.LookupFailure) as ei:
            s.map(part)
        assert ei.value.code == ErrorCode.PART_NOT_FOUND


class TestFailedMapChangesNothing:
    """On failure nothing is left mapped, the part is not consumed, the file keeps its size."""

    def check_unchanged(
        self, s: pm.Set, sim: SimBackend, part: pm.Part, path: Path, size: int, maps: int
    ) -> None:
        assert not part.consumed
        assert path.stat().st_size == size
        assert part.source.size == size
        assert len(list(s.part_maps())) == maps
        assert len(list(sim.iter_maps())) == maps

    def test_unaligned_offset_after_growing(
        self, tmp_path: Path, sim: SimBackend, make_set: MakeSet
    ) -> None:
        p = make_file(tmp_path / "f", PAGE)
        with pm.Source.from_file(p) as src:
            s = make_set()
            part = pm.Part(src, 100, PAGE)  # needs growing, then libpmem2 refuses the offset
            with pytest.raises(pm.MapError) as ei:
                s.map(part)
            assert ei.value.code == ErrorCode.INVALID_PMEM2_MAP
            assert ei.value.pmem2_code == pm.Pmem2Code.OFFSET_UNALIGNED
            self.check_unchanged(s, sim, part, p, PAGE, 0)
            with pytest.raises(pm.LookupFailure):
                _ = s.granularity  # a failed map fixes nothing

    def test_granularity_not_supported_after_growing(self, tmp_path: Path) -> None:
        sim = SimBackend(pm.Granularity.PAGE)
        p = make_file(tmp_path / "f", PAGE)
        with pm.Source.from_file(p) as src, pm.Set(pm.Config(granularity=CL, backend=sim)) as s:
            part = pm.Part(src, 0, 4 * PAGE)
            with pytest.raises(pm.MapError) as ei:
                s.map(part)
            assert ei.value.code == ErrorCode.GRANULARITY_NOT_SUPPORTED
            self.check_unchanged(s, sim, part, p, PAGE, 0)

    def test_cannot_fit_after_growing(self, tmp_path: Path, sim: SimBackend) -> None:
        res = pm.Reservation(2 * PAGE, backend=sim)
        p = make_file(tmp_path / "f", PAGE)
        with (
            pm.Source.from_file(p) as src,
            pm.Set(pm.Config(granularity=CL, backend=sim, reservation=res)) as s,
        ):
            part = pm.Part(src, 0, 3 * PAGE)
            with pytest.raises(pm.MapError) as ei:
                s.map(part)
            assert ei.value.code == ErrorCode.CANNOT_FIT_PART_MAP
            self.check_unchanged(s, sim, part, p, PAGE, 0)

    def test_cannot_coalesce_after_growing(
        self, tmp_path: Path, sim: SimBackend, make_set: MakeSet
    ) -> None:
        s = make_set()
        first = s.map(pm.Part(pm.Source.anonymous(PAGE)))
        blocker = pm.Reservation(PAGE, address=first.end, backend=sim)
        s.coalescing = pm.Coalescing.FULL
        p = make_file(tmp_path / "f", 0)
        with pm.Source.from_file(p) as src:
            part = pm.Part(src, 0, PAGE)
            with pytest.raises(pm.MapError) as ei:
                s.map(part)
            assert ei.value.code == ErrorCode.CANNOT_COALESCE_PARTS
            self.check_unchanged(s, sim, part, p, 0, 1)
        blocker.close()

    def test_granularity_mismatch_after_growing(self, tmp_path: Path) -> None:
        sim = SimBackend(CL, anonymous_granularity=pm.Granularity.BYTE)
        p = make_file(tmp_path / "f", PAGE)
        with pm.Source.from_file(p) as src, pm.Set(pm.Config(granularity=CL, backend=sim)) as s:
            s.map(pm.Part(pm.Source.anonymous(PAGE)))
            part = pm.Part(src, 0, 2 * PAGE)
            with pytest.raises(pm.MapError) as ei:
                s.map(part)
            assert ei.value.code == ErrorCode.GRANULARITY_MISMATCH
            self.check_unchanged(s, sim, part, p, PAGE, 1)

    def test_failed_part_maps_later(self, tmp_path: Path, make_set: MakeSet) -> None:
        p = make_file(tmp_path / "f", PAGE)
        with pm.Source.from_file(p, pm.SourceFlag.DO_NOT_GROW) as src:
            part = pm.Part(src, 0, 2 * PAGE)
            s = make_set()
            with pytest.raises(pm.SourceError):
                s.map(part)
            make_file(p, 2 * PAGE)  # somebody grows the file: the same part now maps
            d = s.map(part)
            assert d.size == 2 * PAGE
            assert part.consumed


class TestSourceLifeCycle:
    def test_close_is_idempotent(self, tmp_path: Path) -> None:
        src = pm.Source.from_file(make_file(tmp_path / "f", PAGE))
        src.close()
        src.close()
        assert src.closed
        with pytest.raises(pm.SourceError) as ei:
            _ = src.size
        assert ei.value.code == ErrorCode.INVALID_PMEM2_SOURCE

    def test_garbage_collected_file_source_writes_back(self, tmp_path: Path) -> None:
        p = make_file(tmp_path / "f", PAGE)
        sim = SimBackend()
        src = pm.Source.from_file(p)
        with pm.Set(pm.Config(granularity=CL, backend=sim)) as s:
            d = s.map(pm.Part(src))
            s.memcpy(d.address, b"durable!")  # flushed and drained
        assert p.read_bytes()[:8] == bytes(8)  # nothing before the source is let go
        del src
        gc.collect()
        assert p.read_bytes()[:8] == b"durable!"
        assert fds_into(tmp_path) == []
