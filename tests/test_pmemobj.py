"""check-log on libpmemobj programs, as a pmreorder user would run it.

libpmemobj maps a pool's 4 KiB header on its own before the whole pool (two registrations of
one file), wraps its API calls in markers (``pmemobj_open.BEGIN|libpmemobj.BEGIN|...``) that
users pick engines for with ``-x``, and opens each crash image for writing. The small logs
here are written by hand in those shapes; the end-to-end test builds tests/c/pmemobj (a
transactional program and its checker), records it under pmemcheck and checks it, and skips
where gcc, libpmemobj or pmemcheck is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pmemsim.cli import main
from pmemsim.pmlog.pmemcheck import pmemcheck_available

ROOT = Path(__file__).resolve().parent.parent
OBJ_DIR = ROOT / "tests" / "c" / "pmemobj"


def _pool_log(path: Path, body: str) -> str:
    """A log registering ``path`` as libpmemobj does: the header page at one address, then
    the whole 64 KiB pool at another, then the header again; ``body`` addresses the pool at
    0x10000000."""
    header = f"REGISTER_FILE;{path};0x4000000;0x1000;0x0"
    whole = f"REGISTER_FILE;{path};0x10000000;0x10000;0x0"
    return f"START|{header}|{whole}|{header}|{body}|STOP\n"


# --- pmemsim record --------------------------------------------------------------------------


def test_record_names_a_pools_size_not_its_last_registration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """libpmemobj registers the header page last; the summary gave the pool as 4096 bytes."""
    pool = tmp_path / "pool"
    log = _pool_log(pool, "STORE;0x10000040;0x1;0x8|FLUSH;0x10000040;0x40|FENCE")
    fake = tmp_path / "valgrind"
    # A stand-in valgrind: answers the pmemcheck probe, and "records" by writing the log.
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in --log-file=*) f="${a#--log-file=}";; esac; done\n'
        f'[ -n "$f" ] && printf "%s" "{log.strip()}" > "$f"\n'
        "exit 0\n"
    )
    fake.chmod(0o755)
    out = tmp_path / "x.log"
    assert main(["record", "--valgrind", str(fake), "-o", str(out), "--", "true"]) == 0
    said = capsys.readouterr().out
    assert f"over {pool} (65536 bytes)" in said, said


# --- engines per marker, as pmreorder users give them -----------------------------------------

#: Two lines stored, flushed and fenced inside ``pmemobj_alloc`` (nested in ``libpmemobj``, as
#: libpmemobj writes it): before the fence 4 images (either line persisted or not), after it 1.
TWO_LINES = (
    "pmemobj_alloc.BEGIN|libpmemobj.BEGIN|STORE;0x10000000;0x1;0x8|STORE;0x10000040;0x2;0x8|"
    "FLUSH;0x10000000;0x40|FLUSH;0x10000040;0x40|FENCE|libpmemobj.END|pmemobj_alloc.END"
)


@pytest.mark.parametrize(
    ("engine", "markers", "left_out"),
    [
        ("exhaustive", {}, 0),
        ("none", {}, 5),
        ("accumulative", {}, 1),  # {}, {a}, {a, b}: not {b}
        ("persisted", {}, 3),
        ("exhaustive", {"pmemobj_alloc": "none"}, 4),  # the end of the log is outside it
        ("NoReorderNoCheck", {"pmemobj_alloc": "ReorderAccumulative"}, 2),
    ],
)
def test_a_heuristic_check_counts_the_images_it_left_out(
    tmp_path: Path, engine: str, markers: dict[str, str], left_out: int
) -> None:
    """The summary said "heuristic: none, 0 image(s) not checked" for every engine but a
    falling-back exhaustive one, even when no image at all was checked."""
    from pmemsim.pmlog.check import check_log
    from pmemsim.pmlog.checkers import FunctionChecker
    from pmemsim.pmlog.grammar import parse_log
    from pmemsim.pmlog.replay import Replay

    log = parse_log(_pool_log(tmp_path / "pool", TWO_LINES))
    result = check_log(
        Replay.of(log), FunctionChecker(lambda image: True, "ok"), engine=engine, markers=markers
    )
    assert result.images_possible == 5
    assert result.images_skipped == left_out
    assert result.exact == (left_out == 0)
    if left_out:
        assert f"{left_out} image(s) not checked" in result.report()


def test_an_engine_for_a_marker_the_log_lacks_is_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pmreorder's -x takes a marker's name; one written as the log writes it
    (``pmemobj_alloc.BEGIN``), or misspelt, was silently never applied."""
    log = tmp_path / "obj.log"
    log.write_text(_pool_log(tmp_path / "pool", TWO_LINES))
    argv = ["check-log", str(log), "-x", "pmemobj_alloc.BEGIN=none", "-x", "pmemobj_aloc=none"]
    assert main([*argv, "-x", "libpmemobj=persisted", "--", "true"]) == 0
    err = capsys.readouterr().err
    assert "-x pmemobj_alloc.BEGIN: no marker 'pmemobj_alloc.BEGIN' in the log" in err
    assert "named without .BEGIN/.END: -x pmemobj_alloc=none" in err
    assert "-x pmemobj_aloc: no marker" in err
    assert "the log's markers: libpmemobj, pmemobj_alloc" in err
    assert "-x libpmemobj" not in err  # a marker the log has


# --- a library checker written for pmreorder -------------------------------------------------


@pytest.fixture(scope="module")
def zero_is_consistent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``int ok0(path)``: 0 for every image; ``int bad0(path)``: 1 for every image (pmreorder's
    manual: 0 is consistent)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    folder = tmp_path_factory.mktemp("lib0")
    src = folder / "zero.c"
    src.write_text(
        "int ok0(const char *path) { (void)path; return 0; }\n"
        "int bad0(const char *path) { (void)path; return 1; }\n"
    )
    lib = folder / "libzero.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


def test_a_library_checker_may_take_0_as_consistent(
    tmp_path: Path, zero_is_consistent: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pmreorder's manual and its comparison take 0 as consistent; check-log took only 1, so
    such a checker failed every image, with no way to say otherwise."""
    log = tmp_path / "obj.log"
    log.write_text(_pool_log(tmp_path / "pool", TWO_LINES))
    lib = str(zero_is_consistent)
    assert main(["check-log", str(log), "--checker-lib", f"{lib}:ok0"]) == 1
    out = capsys.readouterr().out
    assert "checker: returned 0" in out
    assert "needs --lib-consistent 0" in out
    assert (
        main(["check-log", str(log), "--checker-lib", f"{lib}:ok0", "--lib-consistent", "0"]) == 0
    )
    assert "CONSISTENT (exact)" in capsys.readouterr().out
    argv = ["check-log", str(log), "--checker-lib", f"{lib}:bad0", "--lib-consistent", "0"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "checker: returned 1" in out and "needs --lib-consistent" not in out
    # the replay line keeps it
    assert f"--checker-lib {lib}:bad0 --lib-consistent 0" in out
    assert main(["check-log", str(log), "--lib-consistent", "0", "--", "true"]) == 2
    assert "--lib-consistent" in capsys.readouterr().err


# --- end to end: a transactional libpmemobj program, recorded and checked ---------------------


def test_record_makes_libpmem_flush_lines_as_libpmem2_does() -> None:
    """libpmemobj flushes through libpmem 1.x, which on a plain file persists with msync:
    page-wide flushes that hide missing ones. Recording forced libpmem2 to cache lines but
    left libpmem to the file."""
    from pmemsim.pmlog.pmemcheck import record_env

    assert record_env({})["PMEM_IS_PMEM_FORCE"] == "1"
    assert record_env({"PMEM_IS_PMEM_FORCE": "0"})["PMEM_IS_PMEM_FORCE"] == "0"  # the user's
    assert record_env({"PMEM2_FORCE_GRANULARITY": "PAGE"})["PMEM_IS_PMEM_FORCE"] == "0"
    mine = {"PMEM_IS_PMEM_FORCE": "0"}
    assert record_env(mine, "cache_line")["PMEM_IS_PMEM_FORCE"] == "1"
    assert record_env({}, "page")["PMEM_IS_PMEM_FORCE"] == "0"
    assert "PMEM_IS_PMEM_FORCE" not in record_env({}, "byte")
    assert "PMEM_IS_PMEM_FORCE" not in record_env(mine, "native")
    assert mine == {"PMEM_IS_PMEM_FORCE": "0"}  # the caller's mapping is not changed


def _libpmemobj_dev() -> bool:
    probe = subprocess.run(
        ["gcc", "-x", "c", "-", "-o", os.devnull, "-lpmemobj"],
        input="#include <libpmemobj.h>\nint main(void) { return pmemobj_errormsg() == 0; }\n",
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0


@pytest.fixture(scope="module")
def obj_bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tests/c/pmemobj built: obj_log, obj_log_forget (-DFORGET_COUNT) and
    libcheck_obj_log.so."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    if not _libpmemobj_dev():
        pytest.skip("libpmemobj's header or library is missing (apt-get install libpmemobj-dev)")
    out = tmp_path_factory.mktemp("objbin")
    cflags = ["-std=gnu11", "-O0", "-g", "-Wall", "-Wextra", "-Werror"]
    made = {
        "obj_log": (["obj_log.c"], []),
        "obj_log_forget": (["obj_log.c"], ["-DFORGET_COUNT"]),
        "libcheck_obj_log.so": (["check_obj_log.c"], ["-shared", "-fPIC"]),
    }
    for name, (srcs, extra) in made.items():
        argv = ["gcc", *cflags, *extra, "-o", str(out / name)]
        subprocess.run([*argv, *(str(OBJ_DIR / s) for s in srcs), "-lpmemobj"], check=True)
    return {name: out / name for name in made}


def test_a_libpmemobj_transaction_recorded_and_checked(
    obj_bins: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One append in a transaction, recorded by ``pmemsim record`` over a pool holding one
    item, checked exactly with a checker that opens each image with pmemobj_open: consistent;
    with the count stored outside the transaction, inconsistent at the crash inside
    pmemobj_tx_commit (the undo log rolls the slot back, not the count)."""
    from pmemsim.pmlog.grammar import Flush, read_log

    valgrind = pmemcheck_available()
    if valgrind is None:
        pytest.skip("pmemcheck is not installed (set PMEMSIM_VALGRIND to a valgrind with it)")
    pool, base = tmp_path / "pool", tmp_path / "pool.base"
    subprocess.run([str(obj_bins["obj_log"]), str(pool), "1"], check=True)
    shutil.copyfile(pool, base)
    lib = f"{obj_bins['libcheck_obj_log.so']}:check"
    for prog, status in (("obj_log", 0), ("obj_log_forget", 1)):
        shutil.copyfile(base, pool)
        log = tmp_path / f"{prog}.log"
        argv = ["record", "--valgrind", valgrind, "-o", str(log), "--", str(obj_bins[prog])]
        assert main([*argv, str(pool), "1"]) == 0
        said = capsys.readouterr().out
        assert f"over {pool} (8388608 bytes)" in said  # PMEMOBJ_MIN_POOL
        # libpmem flushed lines, as on persistent memory, not msync'd pages (ranges from a
        # page's start); libpmemobj still msyncs its pool header itself
        recorded = read_log(str(log))
        headers = {r.base for r in recorded.files}
        flushes = [op for op in recorded.iter_operations() if isinstance(op, Flush)]
        assert sum(f.size == 64 for f in flushes) > len(flushes) // 2
        pages = [f for f in flushes if f.size > 64 and f.address % 4096 == 0]
        assert {f.address for f in pages} <= headers, pages
        after_run = pool.read_bytes()
        argv = ["check-log", str(log), "--base-image", f"{pool}={base}", "--checker-lib", lib]
        assert main([*argv, "-x", "pmemobj_tx_commit=exhaustive", "--no-lint"]) == status
        said = capsys.readouterr()
        assert "warning" not in said.err  # the marker is libpmemobj's
        verdict = said.out.splitlines()[1]
        assert verdict.startswith("INCONSISTENT (exact)" if status else "CONSISTENT (exact)")
        if status:
            assert "(inside pmemobj_tx_commit > libpmemobj)" in said.out
            assert "checker: returned 0" in said.out
        # the checker opened every image for writing; the pool itself was never written
        assert pool.read_bytes() == after_run != base.read_bytes()
    # check-program: libpmemobj's run-time fields in the pool (pointers, set at every open in
    # memory it told pmemcheck not to track) differ from the starting image, unlogged; the
    # warning says that this is harmless for libpmemobj.
    shutil.copyfile(base, pool)
    argv = ["check-program", "--valgrind", valgrind, "--pool", str(pool), "-o", str(log)]
    argv += ["--checker-lib", lib, "--no-lint", "--", str(obj_bins["obj_log"]), str(pool), "1"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "does not explain" in err and "libpmemobj does, in its pool's run-time fields" in err


# --- lint of stores a library made ------------------------------------------------------------


def test_lint_says_which_stores_a_library_made(tmp_path: Path) -> None:
    """libpmemobj leaves some of its stores unflushed on purpose and tells pmemcheck so
    (pmemcheck's summary: 0 stores not made persistent), which the store log does not record:
    check-log's lint blamed them on the program's line as a plain error."""
    from pmemsim.pmlog.check import check_log
    from pmemsim.pmlog.checkers import FunctionChecker
    from pmemsim.pmlog.grammar import parse_log
    from pmemsim.pmlog.replay import Replay

    lib = "0x4861006: ??? (in /usr/lib/x86_64-linux-gnu/libpmemobj.so.1.0.0)"
    libc = "0x49E9192: ??? (in /usr/lib/x86_64-linux-gnu/libc.so.6)"
    body = (
        f"STORE;0x10000080;0x1;0x8;{lib};0x10963B: main (t.c:9)|"  # libpmemobj's, from t.c:9
        f"STORE;0x100000c0;0x2;0x8;{libc};0x10964B: main (t.c:10)|"  # a memcpy of the program
        "STORE;0x10000100;0x3;0x8;0x10965B: main (t.c:11)"  # the program's own
    )
    log = parse_log(_pool_log(tmp_path / "pool", body))
    result = check_log(Replay.of(log), FunctionChecker(lambda image: True, "ok"), engine="none")
    found = {f.source: f for f in result.findings if f.kind == "store never flushed"}
    assert set(found) == {"t.c:9 in main", "t.c:10 in main", "t.c:11 in main"}
    assert found["t.c:9 in main"].inside == "libpmemobj.so.1.0.0"
    assert found["t.c:10 in main"].inside is None and found["t.c:11 in main"].inside is None
    text = str(found["t.c:9 in main"])
    assert "at t.c:9 in main (made inside libpmemobj.so.1.0.0, which may have told" in text
    assert "made inside" not in str(found["t.c:10 in main"])
    assert found["t.c:9 in main"].as_dict()["inside"] == "libpmemobj.so.1.0.0"
