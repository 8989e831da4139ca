"""FileCrashCheck: crash exploration of programs that work on files of their own.

Every file of the workload's directory is in each crash image; recovery runs on a fresh
simulator over a fresh directory holding them (docs/explore.md, "Programs over files").
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import pmemsim as pm
from pmemsim.explore import (
    CrashCheck,
    FileCrashCheck,
    check,
    current_crash,
    replay,
)

CL = pm.Granularity.CACHE_LINE
UNSAFE = ("unsafe_shutdown",)


@contextmanager
def mapped(
    backend: Any,
    *paths: Path,
    callback: pm.EventCallback | None = None,
    detect: bool = False,
    size: int = 4096,
) -> Iterator[list[pm.View]]:
    """One set mapping ``size`` bytes of each file (created if needed)."""
    sources = [pm.Source.from_file(p, pm.SourceFlag.CREATE_IF_NEEDED) for p in paths]
    for src in sources:
        src.badblock_detection = detect
    s = pm.Set(pm.Config(granularity=CL, backend=backend, event_callback=callback))
    try:
        yield [s.view(s.map(pm.Part(src, 0, size))) for src in sources]
    finally:
        s.close()
        for src in sources:
            src.close()


def _unsafe() -> bool:
    crash = current_crash()
    return crash is not None and "unsafe_shutdown" in crash.faults


# -- two files, one image ------------------------------------------------------------------


def _flag_in_other_file(backend: Any, d: Path) -> None:
    """Bug: the data (file "data") and its flag (file "flag") flushed under one fence."""
    with mapped(backend, d / "data", d / "flag") as (data, flag):
        data.u64[8] = 0xDA7A
        flag.u64[0] = 1
        data.flush(64, 8)
        flag.flush(0, 8)
        data.drain()


def _flag_after_data(backend: Any, d: Path) -> None:
    with mapped(backend, d / "data", d / "flag") as (data, flag):
        data.u64[8] = 0xDA7A
        data.persist(64, 8)
        flag.u64[0] = 1
        flag.persist(0, 8)


def _flag_means_data(seen: list[tuple[int, int]] | None = None) -> Callable[[Any, Path], bool]:
    def recover(backend: Any, d: Path) -> bool:
        with mapped(backend, d / "data", d / "flag") as (data, flag):
            got = (data.u64[8], flag.u64[0])
        if seen is not None:
            seen.append(got)
        return got[1] == 0 or got[0] == 0xDA7A

    return recover


def test_an_image_spans_every_file_and_the_lines_of_both_vary_together() -> None:
    seen: list[tuple[int, int]] = []
    c = FileCrashCheck("two files", _flag_in_other_file, _flag_means_data(seen))
    r = check(c, progress=None)
    # Before the one fence: each file's line persisted or not, in all four combinations.
    assert {(0, 0), (0xDA7A, 0), (0, 1), (0xDA7A, 1)} <= set(seen)
    assert r.verdict == "inconsistent" and r.exact
    m = r.minimal
    assert m is not None
    assert m.sources == ("data", "flag")
    assert [(m.sources[s.medium], s.offset) for s in m.lost] == [("data", 0x40)]
    assert m.lost[0].provenance[0][0].co_name == "_flag_in_other_file"
    text = m.describe()
    assert "files: 0 data, 1 flag" in text
    assert "line +0x40 of data: 1 store(s) in flight, lost 1" in text
    assert "    data +0x40 (8 bytes) stored at" in text
    fixed = FileCrashCheck("two files fixed", _flag_after_data, _flag_means_data())
    assert check(fixed, progress=None).verdict == "consistent"


def test_images_are_deduplicated_by_the_content_of_all_files() -> None:
    """Every image recovery sees is distinct (the content of every file together), and
    crash points that leave the same files give no image twice."""
    contents: list[tuple[bytes, ...]] = []

    def workload(backend: Any, d: Path) -> None:
        with mapped(backend, d / "a", d / "b") as (a, b):
            for _ in range(3):  # the same value again: the same images again
                a.u64[0] = 7
                a.persist(0, 8)
            b.u64[0] = 7
            b.persist(0, 8)

    def recover(backend: Any, d: Path) -> bool:
        contents.append(tuple((d / n).read_bytes() for n in ("a", "b")))
        return True

    # Recovery reads the files with plain file I/O, which lazy exploration cannot follow:
    # exhaustive exploration runs it on every distinct image.
    r = check(FileCrashCheck("dedupe", workload, recover, strategy="exhaustive"), progress=None)
    assert len(contents) == r.images_checked == len(set(contents))
    assert r.images_checked < r.images_possible
    # Same content of "a" with two contents of "b" are two images, not one.
    assert len({c[1] for c in contents if c[0][:8] == struct.pack("<Q", 7)}) == 2


def test_a_recovery_reading_files_by_itself_is_explored_exhaustively() -> None:
    """Lazy exploration cannot see plain file I/O: a recovery that opens a file of the image
    itself gets every image, and the report says why."""

    def workload(backend: Any, d: Path) -> None:
        with mapped(backend, d / "a", d / "b") as (a, b):
            a.u64[8] = 7
            b.u64[0] = 1  # the flag, in another file, may persist first
            a.flush(64, 8)
            b.flush(0, 8)
            a.drain()

    def recover(backend: Any, d: Path) -> bool:
        flag = struct.unpack_from("<Q", (d / "b").read_bytes())[0]
        data = struct.unpack_from("<Q", (d / "a").read_bytes(), 64)[0]
        return flag == 0 or data == 7

    c = FileCrashCheck("plain", workload, recover, expect="inconsistent")
    r = check(c, progress=None)
    full = check(c, strategy="exhaustive", progress=None)
    assert r.as_expected and r.exact and r.images_checked == full.images_checked
    assert any("plain file I/O" in n for n in r.notes) and "note: recovery opened" in r.report()

    def mapped_recovery(backend: Any, d: Path) -> bool:
        with mapped(backend, d / "a", d / "b") as (a, b):
            return b.u64[0] == 0 or a.u64[8] == 7

    lazy = check(FileCrashCheck("sim", workload, mapped_recovery, expect="inconsistent"))
    assert lazy.as_expected and lazy.exact and not lazy.notes


# -- materialisation -----------------------------------------------------------------------


def test_every_file_is_materialised_at_its_path_held_closed_or_never_mapped() -> None:
    """Files the simulator holds come from their crash image; a file closed earlier and a
    file never mapped come from the disk as it was at the crash point; empty folders too."""
    seen: list[tuple[int, int]] = []

    def workload(backend: Any, d: Path) -> None:
        (d / "sub").mkdir()
        (d / "empty").mkdir()
        (d / "notes.txt").write_bytes(b"plain file")
        with mapped(backend, d / "a") as (a,):
            a.u64[0] = 1
            a.persist(0, 8)
        with mapped(backend, d / "sub" / "b", size=8192) as (b,):  # "a" is closed by now
            b.u64[0] = 2
            b.persist(0, 8)

    def recover(backend: Any, d: Path) -> bool:
        assert (d / "notes.txt").read_bytes() == b"plain file"
        assert (d / "empty").is_dir() and (d / "sub").is_dir()
        sizes = {p.name: p.stat().st_size for p in d.rglob("*") if p.is_file()}
        assert sizes.get("a", 4096) == 4096 and sizes.get("b", 8192) == 8192
        with mapped(backend, d / "a") as (a,):
            va = a.u64[0]
        with mapped(backend, d / "sub" / "b", size=8192) as (b,):
            vb = b.u64[0]
        seen.append((va, vb))
        return vb == 0 or va == 1  # "a" was durable and closed before "b" was written

    r = check(FileCrashCheck("layout", workload, recover), progress=None)
    assert r.verdict == "consistent", r.report()
    assert {(0, 0), (1, 0), (1, 2)} <= set(seen)


def test_recovery_sees_the_device_and_its_unsafe_shutdown_count() -> None:
    """The materialised file lives on the device the workload's file lived on (here not the
    default one), with the count the restarted machine reads: one more after an unsafe
    shutdown, unchanged after a power failure."""
    seen: set[tuple[bytes, int, bool]] = set()

    def workload(backend: Any, d: Path) -> None:
        pm.Source.from_file(d / "pool", pm.SourceFlag.CREATE_IF_NEEDED).close()
        backend.assign_device(d / "pool", b"nvdimm-7")
        backend.device(b"nvdimm-7").usc = 4
        with mapped(backend, d / "pool") as (v,):
            v.u64[0] = 1
            v.persist(0, 8)

    def recover(backend: Any, d: Path) -> bool:
        dev = backend.device_of(d / "pool")
        seen.add((dev.id, dev.usc, _unsafe()))
        return True

    check(FileCrashCheck("usc", workload, recover, faults=UNSAFE), progress=None)
    assert seen == {(b"nvdimm-7", 4, False), (b"nvdimm-7", 5, True)}


def _sds_workload(backend: Any, d: Path) -> None:
    """A pool mapped with SDS; each record is saved, deep-flushed, in a sidecar file."""
    with mapped(backend, d / "rec") as (rec,):

        def save(s: pm.Set, event: pm.Event, arg: object) -> None:
            if isinstance(event, pm.SdsUpdateEvent):
                r = event.sds
                rec.pack_into("<QQB16s", 0, r.usc, r.refcount, len(r.device_id), r.device_id)
                rec.deep_flush(0, 64)

        src = pm.Source.from_file(d / "pool", pm.SourceFlag.CREATE_IF_NEEDED)
        src.set_sds()
        with pm.Set(pm.Config(granularity=CL, backend=backend, event_callback=save)) as s:
            v = s.view(s.map(pm.Part(src, 0, 4096)))
            v.u64[0] = 1
            v.persist(0, 8)
        src.close()


def test_an_unsafe_shutdown_in_use_is_seen_by_shutdown_data_state() -> None:
    states: set[tuple[str, bool]] = set()

    def recover(backend: Any, d: Path) -> bool:
        with mapped(backend, d / "rec") as (rec,):
            usc, users, n, dev = rec.unpack_from("<QQB16s", 0)
        src = pm.Source.from_file(d / "pool")
        src.set_sds(pm.SdsRecord(dev[:n], usc, users) if n else None)
        accept = pm.PartState.OK_BUT_INTERRUPTED | pm.PartState.CORRUPTED
        with pm.Set(pm.Config(granularity=CL, backend=backend, acceptable_states=accept)) as s:
            s.map(pm.Part(src, 0, 4096))
        states.add((src.part_state.name, _unsafe()))
        src.close()
        return True

    check(FileCrashCheck("sds", _sds_workload, recover, faults=UNSAFE), progress=None)
    assert ("CORRUPTED", True) in states and ("OK_BUT_INTERRUPTED", False) in states
    assert {s for s, unsafe in states if not unsafe} <= {"OK", "OK_BUT_INTERRUPTED"}


def test_unsafe_shutdown_reports_the_reverted_line_of_its_file() -> None:
    def recover(backend: Any, d: Path) -> bool:
        with mapped(backend, d / "data", d / "flag") as (data, flag):
            return flag.u64[0] == 0 or data.u64[8] == 0xDA7A

    c = FileCrashCheck("adr", _flag_after_data, recover, faults=UNSAFE, expect="inconsistent")
    r = check(c, progress=None)
    m = r.minimal
    assert m is not None and m.crash.faults == UNSAFE
    assert [(m.sources[x.medium], x.offset, x.reverted) for x in m.lines] == [("data", 0x40, True)]
    assert "line +0x40 of data: back to its last deep-flushed content" in m.describe()


# -- replay --------------------------------------------------------------------------------


def test_replay_rebuilds_the_failing_directory() -> None:
    c = FileCrashCheck("two files", _flag_in_other_file, _flag_means_data())
    m = check(c, progress=None).minimal
    assert m is not None
    err = replay(c, m.token)
    assert type(err) is type(m.error)
    assert replay(c, str(m.crash)) is not None  # the crash part alone
    assert replay(c, f"{m.crash.point}:") is None  # everything persisted
    unsafe = FileCrashCheck("adr", _flag_after_data, _flag_means_data(), faults=UNSAFE)
    um = check(unsafe, progress=None).minimal
    assert um is not None and replay(unsafe, um.token) is not None


@pytest.mark.parametrize(
    "token",
    ["0/badblock.200:", "0/badblock.9.200:", "0/badblock.0.zz:", "0/fire:", "0:>1:"],
)
def test_replay_refuses_what_does_not_name_an_image_of_files(token: str) -> None:
    c = FileCrashCheck("two files", _flag_in_other_file, _flag_means_data())
    with pytest.raises(pm.InvalidArgumentError):
        replay(c, token)


# -- bad blocks ----------------------------------------------------------------------------


def _checksum(value: int) -> int:
    return zlib.crc32(struct.pack("<Q", value)) | 1 << 32


def _log_workload(backend: Any, d: Path) -> None:
    """A count in the first sector, the record it publishes in the third."""
    with mapped(backend, d / "meta", d / "log") as (meta, log):
        meta.u64[0] = 1
        meta.persist(0, 8)
        log.pack_into("<QQ", 1024, 42, _checksum(42))
        log.persist(1024, 16)
        log.u64[0] = 1
        log.persist(0, 8)


def _log_recovery(careful: bool) -> Callable[[Any, Path], bool]:
    def clear(s: pm.Set, event: pm.Event, arg: object) -> None:
        if isinstance(event, pm.BadBlockEvent):
            event.source.clear_badblock(event.badblock)

    def recover(backend: Any, d: Path) -> bool:
        with mapped(backend, d / "log", callback=clear, detect=careful) as (log,):
            if log.u64[0] == 0:
                return True
            value, check_word = log.unpack_from("<QQ", 1024)
            return value == 42 or (careful and check_word != _checksum(value))

    return recover


def test_bad_blocks_go_into_each_sector_recovery_reads_of_each_file() -> None:
    naive = FileCrashCheck(
        "naive", _log_workload, _log_recovery(False), faults=("badblock",), expect="inconsistent"
    )
    r = check(naive, progress=None)
    faults = {c.crash.faults for c in r.failing}
    # "log" is file 1 wherever it is held (file 0 is "meta", opened first); at the end both
    # are closed and numbered in path order: "log" 0, "meta" 1.
    assert {("badblock.1.0",), ("badblock.1.400",), ("badblock.0.400",)} <= faults
    assert not any("meta" in f.sources[int(f.crash.faults[0].split(".")[1])] for f in r.failures)
    assert all(isinstance(f.error, pm.PoisonError) for f in r.failures)
    m = r.minimal
    assert m is not None and replay(naive, m.token).__class__ is pm.PoisonError
    careful = dataclasses.replace(naive, recover=_log_recovery(True), expect="consistent")
    rc = check(careful, progress=None)
    assert rc.verdict == "consistent" and rc.images_checked == r.images_checked


# -- the rest of the contract --------------------------------------------------------------


def test_workers_give_the_same_result() -> None:
    c = FileCrashCheck("adr", _flag_after_data, _flag_means_data(), faults=UNSAFE)
    one, two = check(c, progress=None), check(c, progress=None, jobs=2)
    assert one.report() == two.report() and one.images_checked == two.images_checked


def test_read_guided_strategy_reads_through_the_files() -> None:
    c = FileCrashCheck("two files", _flag_in_other_file, _flag_means_data())
    r = check(c, strategy="read-guided", progress=None)
    assert r.verdict == "inconsistent"
    assert r.images_covered < r.images_possible or r.exact


@pytest.fixture
def second_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next Source made is the process's second (its ident 2), whatever ran before."""
    import itertools

    from pmemsim import source

    monkeypatch.setattr(source, "_idents", itertools.count(2))


@pytest.mark.usefixtures("second_source")
def test_each_files_image_is_its_own_whatever_sources_were_made_before() -> None:
    """A medium's own ident counts the simulator's media, a source_ident every Source made:
    with the data file's Source the process's second, the flag's medium (ident 2) once
    matched the data's (source_ident 2), and the flag file got the data file's image (the
    read-guided test failed whenever it was the first test of a pytest -n worker)."""
    from pmemsim.explore.judges import _recorded

    c = FileCrashCheck("two files", _flag_in_other_file, _flag_means_data())
    with _recorded(c, False) as (trace, _):
        state = trace.points[0].state
        data, flag = state.media
        assert (data.source_ident, flag.ident) == (2, 2)  # (the collision this is about)
        image = state.image(())
        assert image.snapshot(data).read(64, 8) == struct.pack("<Q", 0xDA7A)
        assert image.snapshot(flag).read(0, 8) == struct.pack("<Q", 1)


@pytest.mark.usefixtures("second_source")
def test_read_guided_strategy_reads_through_the_files_whatever_sources_were_made_before() -> None:
    c = FileCrashCheck("two files", _flag_in_other_file, _flag_means_data())
    assert check(c, strategy="read-guided", progress=None).verdict == "inconsistent"


@pytest.mark.parametrize(
    "change",
    [
        {"expect": "maybe"},
        {"faults": ("fire",)},
        {"faults": "badblock"},
        {"max_images": 1},
        {"crash_points": "sometimes"},
    ],
)
def test_bad_fields_are_refused(change: dict[str, Any]) -> None:
    c = FileCrashCheck("x", _flag_after_data, _flag_means_data())
    with pytest.raises(pm.InvalidArgumentError, match="check 'x'"):
        dataclasses.replace(c, **change)


def test_check_refuses_what_is_not_a_check() -> None:
    with pytest.raises(pm.InvalidArgumentError):
        check("not a check", progress=None)  # type: ignore[arg-type]
    pool = CrashCheck("pool", lambda v: None, lambda v: True)
    assert check(pool, progress=None).verdict == "consistent"


def test_the_example_in_the_docs_prints_what_the_docs_show() -> None:
    import contextlib
    import io
    import re

    docs = (Path(__file__).resolve().parent.parent / "docs" / "explore.md").read_text()
    section = docs[docs.index("## Programs over files") :]
    found = re.search(r"```python\n(.*?)```\n\n```\n(.*?)```", section, re.S)
    assert found is not None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(found.group(1), "example.py", "exec"), {})
    assert out.getvalue() == found.group(2)


def test_a_lint_finding_names_a_file_as_the_workload_does_so_two_runs_agree() -> None:
    """The workload's folder is a new temporary one each run: a finding that named a file by
    its path there made two runs' reports (and JSON) differ."""

    def workload(backend: Any, d: Path) -> None:
        with mapped(backend, d / "pool") as (v,):
            v.u64[0] = 1
            v.persist(0, 8)
            v.flush(0, 8)  # nothing stored since: a clean flush
            v.drain()

    c = FileCrashCheck("clean flush", workload, lambda backend, d: True)
    first, second = (check(c, progress=None) for _ in range(2))
    shown = [str(f) for f in first.findings]
    assert any("(pool +0x0" in s for s in shown), shown
    assert shown == [str(f) for f in second.findings]
