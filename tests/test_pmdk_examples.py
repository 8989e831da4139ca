"""What trying pmemsim on PMDK's own examples found (docs/c-programs.md, "PMDK's examples").

Each test holds pmemsim to one defect those runs showed, on a log written in the shape
pmemcheck recorded (no valgrind needed), or on a small library checker built with gcc.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pmemsim.pmlog.check import check_log
from pmemsim.pmlog.checkers import FunctionChecker
from pmemsim.pmlog.grammar import parse_log
from pmemsim.pmlog.replay import Replay

MEMCPY = "0x49F3B08: __memcpy_avx_unaligned_erms (memmove-vec-unaligned-erms.S:374)"


def _overwrites(tmp_path: Path, second: int) -> list[str]:
    """The overwrite findings of a 10-byte memcpy as glibc makes it: a word at 0 and a
    word at 2 (``second``), then one flush and a fence."""
    first = int.from_bytes(b"PMEM2_LO", "little")
    body = (
        f"STORE;0x5200000;{first:#x};0x8;{MEMCPY};0x1093E3: init (log.c:97)|"
        f"STORE;0x5200002;{second:#x};0x8;{MEMCPY};0x1093E3: init (log.c:97)|"
        "FLUSH;0x5200000;0x40|FENCE"
    )
    text = f"START|REGISTER_FILE;{tmp_path / 'pool'};0x5200000;0x1000;0x0|{body}|STOP\n"
    accept = FunctionChecker(lambda image: True, "ok")
    result = check_log(Replay.of(parse_log(text)), accept, engine="none")
    return [
        str(f)
        for f in result.findings
        if f.kind == "store overwrote a store that was not yet durable"
    ]


def test_memcpy_storing_bytes_again_with_their_value_is_no_overwrite(tmp_path: Path) -> None:
    """PMDK's libpmem2 log example memcpy's its 10-byte signature: glibc stores the tail as
    a word overlapping the first, writing 6 bytes again with the value they hold. Lint
    warned "store overwrote a store that was not yet durable" for every such memcpy."""
    same = int.from_bytes(b"EM2_LOG\0", "little")
    assert _overwrites(tmp_path, same) == []
    # a value that differs in the overlap is still an overwrite
    other = int.from_bytes(b"XX2_LOG\0", "little")
    found = _overwrites(tmp_path, other)
    assert len(found) == 1 and "+0x2, 6 byte(s)" in found[0]


#: A library checker that talks, as PMDK's map recovery does ("rebuild, previous attempt
#: crashed" on stdout at each open): one line on stdout per image, and why on stderr.
TALKING_CHECKER = r"""
#include <stdio.h>
int check(const char *path)
{
    FILE *f = fopen(path, "rb");
    int c = f ? fgetc(f) : -1;
    if (f) fclose(f);
    printf("opened %s\n", path);
    if (c != 0x2a) { fprintf(stderr, "no header (byte 0 is %d)\n", c); return 0; }
    return 1;
}
"""


def test_a_library_checkers_output_goes_with_its_verdict(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """PMDK's map example prints a line each time its recovery runs: a library checker
    calling it flooded the terminal with one line per image (1,327 for four operations),
    where a checker program's output is kept and shown with its verdict."""
    from pmemsim.cli import main

    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    src, lib = tmp_path / "talk.c", tmp_path / "libtalk.so"
    src.write_text(TALKING_CHECKER)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    pool = tmp_path / "pool"
    log = tmp_path / "t.log"
    body = "STORE;0x5200000;0x2a;0x1|FLUSH;0x5200000;0x40|FENCE|STORE;0x5200040;0x1;0x1"
    log.write_text(f"START|REGISTER_FILE;{pool};0x5200000;0x1000;0x0|{body}|STOP\n")
    argv = ["check-log", str(log), "--base-image", f"{pool}=", "--checker-lib", f"{lib}:check"]
    assert main([*argv, "--no-lint"]) == 1
    out, err = capfd.readouterr()
    # the minimal crash's checker said both lines (under its own, not at the margin); no
    # other image's output reached the terminal
    assert "checker: returned 0: opened " in out, out
    assert "/pool\n    no header (byte 0 is 0)\n" in out, out
    assert (out + err).count("opened ") == 1, out + err


def test_a_finding_over_places_far_apart_says_how_many_bytes(tmp_path: Path) -> None:
    """libpmemobj flushed 12 clean lines across PMDK's map pool: lint reported "flush of
    clean lines: FLUSH #89 (and 11 more), hm.pool +0x0, 4156096 byte(s)", the span from the
    first to the last, as if 4 MB had been flushed."""
    body = "FLUSH;0x5200000;0x40|FENCE|FLUSH;0x5300000;0x40|FENCE|FLUSH;0x5300040;0x40|FENCE"
    text = f"START|REGISTER_FILE;{tmp_path / 'pool'};0x5200000;0x200000;0x0|{body}|STOP\n"
    accept = FunctionChecker(lambda image: True, "ok")
    result = check_log(Replay.of(parse_log(text)), accept, engine="none")
    [f] = [f for f in result.findings if f.kind == "flush of clean lines"]
    assert str(f).endswith("pool +0x0 to +0x100080, 192 byte(s) in 2 range(s)"), str(f)
    assert f.as_dict()["covered"] == 192 and f.length == 0x100080


def test_stores_libpmem2_made_are_not_said_to_be_excused(tmp_path: Path) -> None:
    """PMDK's log example with its append copied under PMEM2_F_MEM_NOFLUSH: lint said the
    stores were "made inside libpmem2.so.1.0.0, which may have told pmemcheck they need no
    flush", which is libpmemobj's habit for its run-time state; libpmem2 has no such state
    in the mapping, and these stores were the program's data, never flushed."""
    lib = "0x484F93E: ??? (in /usr/lib/x86_64-linux-gnu/libpmem2.so.1.0.0)"
    body = f"STORE;0x5200040;0x61;0x1;{lib};0x109839: log_append (log.c:230)"
    text = f"START|REGISTER_FILE;{tmp_path / 'pool'};0x5200000;0x1000;0x0|{body}|STOP\n"
    accept = FunctionChecker(lambda image: True, "ok")
    result = check_log(Replay.of(parse_log(text)), accept, engine="none")
    [f] = [f for f in result.findings if f.kind == "store never flushed"]
    assert f.inside == "libpmem2.so.1.0.0"
    assert "at log.c:230 in log_append (made inside libpmem2.so.1.0.0), pool +0x40" in str(f)


#: How valgrind ends a log when the program dies of a signal (PMDK's mapcli on a ctree pool
#: left broken by an earlier crash): its report in the log, before the STOP.
SIGNAL_REPORT = """\
==10930== Process terminating with default action of signal 11 (SIGSEGV)
==10930==  Access not within mapped region at address 0x1AB0
==10930==    at 0x4869557: ??? (in /usr/lib/x86_64-linux-gnu/libpmemobj.so.1.0.0)
==10930==    by 0x11685D: ctree_map_insert_leaf (ctree_map.c:131)
==10930==  If you believe this happened as a result of a stack
==10930==  The main thread stack size used in this run was 8388608.
==10930== |STOP
==10930== Number of stores not made persistent: 5
"""


def test_a_log_whose_program_died_of_a_signal_is_read(tmp_path: Path) -> None:
    """A run that crashed is often the one to check, and ``pmemsim record`` keeps its log;
    but valgrind writes its report of the signal into the log before STOP, and reading the
    log failed ("malformed store log: ... 'Process terminating with default action of signal
    11 (SIGSEGV)'"), in record itself (exit 2) and in check-log."""
    from pmemsim.pmlog.grammar import LogFormatError, Store

    head = f"==10930== START|REGISTER_FILE;{tmp_path / 'pool'};0x5200000;0x1000;0x0|"
    stores = "STORE;0x5200000;0x1;0x8|FLUSH;0x5200000;0x40|FENCE|STORE;0x5200040;0x2;0x8\n"
    log = parse_log(head + stores + SIGNAL_REPORT)
    assert [op.address for op in log.iter_operations() if isinstance(op, Store)] == [
        0x5200000,
        0x5200040,
    ]
    # a line of the log that is not valgrind's report is still an error
    with pytest.raises(LogFormatError, match="WHAT"):
        parse_log(head + stores + "==10930== WHAT\n" + SIGNAL_REPORT)


#: A libpmem2 program that persists one word and then dies of SIGSEGV (a fault: valgrind
#: reports it in the log; it does not for raise()).
DIES = r"""
#include <fcntl.h>
#include <libpmem2.h>
int main(int argc, char **argv)
{
    (void)argc;
    int fd = open(argv[1], O_RDWR);
    struct pmem2_config *cfg; struct pmem2_source *src; struct pmem2_map *map;
    if (fd < 0 || pmem2_config_new(&cfg) || pmem2_source_from_fd(&src, fd) ||
        pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE) ||
        pmem2_map_new(&map, cfg, src))
        return 1;
    unsigned long *word = pmem2_map_get_address(map);
    *word = 42;
    pmem2_get_persist_fn(map)(word, sizeof(*word));
    *(volatile int *)16 = 1;
    return 0;
}
"""


def test_record_keeps_a_readable_log_of_a_program_that_died(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pmemsim.cli import main
    from pmemsim.pmlog.pmemcheck import pmemcheck_available

    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    valgrind = pmemcheck_available()
    if valgrind is None:
        pytest.skip("pmemcheck is not installed (set PMEMSIM_VALGRIND to a valgrind with it)")
    src, prog = tmp_path / "dies.c", tmp_path / "dies"
    src.write_text(DIES)
    made = subprocess.run(["gcc", "-g", "-o", str(prog), str(src), "-lpmem2"], text=True)
    if made.returncode:
        pytest.skip("libpmem2's header or library is missing (apt-get install libpmem2-dev)")
    pool, log = tmp_path / "pool", tmp_path / "dies.log"
    pool.write_bytes(bytes(4096))
    assert (
        main(["record", "--valgrind", valgrind, "-o", str(log), "--", str(prog), str(pool)]) == 139
    )
    out = capsys.readouterr().out
    assert "dies.log: " in out and " records (1 stores," in out, out
    argv = ["check-log", str(log), "--base-image", f"{pool}=", "--engine", "none", "--no-lint"]
    assert main([*argv, "--", "true"]) == 0


def test_a_verdict_held_to_max_images_says_so(tmp_path: Path) -> None:
    """PMDK's hashmap_tx, one rebuild: "CONSISTENT (heuristic: exhaustive, 112215 image(s)
    not checked)", with nothing to say why an exact engine's verdict was heuristic, nor
    what would make it exact."""
    body = "STORE;0x5200000;0x1;0x8|STORE;0x5200040;0x2;0x8|FLUSH;0x5200000;0x80|FENCE"
    text = f"START|REGISTER_FILE;{tmp_path / 'pool'};0x5200000;0x1000;0x0|{body}|STOP\n"
    accept = FunctionChecker(lambda image: True, "ok")
    replay = Replay.of(parse_log(text))
    held = check_log(replay, accept, engine="exhaustive", max_images=2)
    assert not held.exact
    assert held.coverage.endswith("; 1 crash point(s) with more than 2 images (--max-images)")
    assert check_log(replay, accept, engine="exhaustive").coverage == "exact"


def test_record_names_a_copy_as_the_start_of_a_pool_that_held_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """mapcli opens the pool an earlier run filled: record's line to check the log started
    it from zeros (``--base-image POOL=``), which makes every image a broken pool. A file
    made with truncate (holes only, as for PMDK's log example) does start from zeros."""
    from pmemsim.cli import main

    pool, made = tmp_path / "pool", tmp_path / "made"
    pool.write_bytes(b"filled by an earlier run" + bytes(4072))
    with open(made, "wb") as f:
        f.truncate(4096)
        try:
            os.lseek(f.fileno(), 0, os.SEEK_DATA)
            pytest.skip(f"the file system of {tmp_path} does not tell holes from data")
        except OSError:
            pass
    regs = "|".join(
        f"REGISTER_FILE;{p};{base:#x};0x1000;0x0"
        for p, base in ((pool, 0x5200000), (made, 0x5400000))
    )
    fake = tmp_path / "valgrind"
    # A stand-in valgrind: answers the pmemcheck probe, and "records" by writing the log.
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in --log-file=*) f="${a#--log-file=}";; esac; done\n'
        f'[ -n "$f" ] && printf "%s" "START|{regs}|STOP" > "$f"\n'
        "exit 0\n"
    )
    fake.chmod(0o755)
    log = tmp_path / "x.log"
    argv = ["record", "--valgrind", str(fake), "-o", str(log), "--", "true", str(pool)]
    assert main([*argv, str(made)]) == 0
    out = capsys.readouterr().out
    assert f"--base-image {pool}=COPY --base-image {made}= --" in out, out
    assert f"({pool} held data before the run: unless" in out
    assert "(--base-image PATH= starts a file from zeros" in out


SPLIT_PTR = Path(__file__).resolve().parent / "c" / "split_ptr"


def test_a_pointer_across_two_lines_as_pmdks_hashmap_atomic_swaps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """PMDK's hashmap_atomic persists its bucket pointer (a 16-byte PMEMoid across two lines
    in its pool) with one persist, and its recovery tests the offset alone: a crash that
    keeps the offset and loses the pool id leaves a pointer it follows to NULL. tests/c/
    split_ptr is that pattern; the exact check finds the crash, losing the store marked
    LOST:, and the accumulative engine (pmreorder's ReorderAccumulative, which missed it in
    PMDK's example) cannot: the image keeps a later store of the epoch and loses an earlier
    one. With the tag persisted first (-DFIXED) every image is consistent."""
    from pmemsim.cli import main
    from pmemsim.pmlog.pmemcheck import pmemcheck_available

    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    valgrind = pmemcheck_available()
    if valgrind is None:
        pytest.skip("pmemcheck is not installed (set PMEMSIM_VALGRIND to a valgrind with it)")
    flags = ["gcc", "-std=gnu11", "-g", "-Wall", "-Wextra", "-Werror"]
    lib = tmp_path / "libcheck_split_ptr.so"
    chk = [*flags, "-O2", "-shared", "-fPIC", "-DCHECKER_LIB", "-o", str(lib)]
    subprocess.run([*chk, str(SPLIT_PTR / "check_split_ptr.c")], check=True)
    source = SPLIT_PTR / "split_ptr.c"
    lost = next(i for i, t in enumerate(source.read_text().splitlines(), 1) if "LOST:" in t)
    pool = tmp_path / "pool"
    for name, extra, want in (("bug", [], 1), ("fixed", ["-DFIXED"], 0)):
        prog, log = tmp_path / name, tmp_path / f"{name}.log"
        made = subprocess.run([*flags, "-O0", *extra, "-o", str(prog), str(source), "-lpmem2"])
        if made.returncode:
            pytest.skip("libpmem2's header or library is missing (apt-get install libpmem2-dev)")
        with open(pool, "wb") as f:
            f.truncate(4096)
        argv = ["record", "--valgrind", valgrind, "-o", str(log), "--", str(prog), str(pool)]
        assert main(argv) == 0
        check = ["check-log", str(log), "--base-image", f"{pool}=", "--no-lint"]
        check += ["--checker-lib", f"{lib}:check"]
        capsys.readouterr()
        assert main(check) == want
        out = capsys.readouterr().out
        if want:
            assert f"stored at split_ptr.c:{lost} in main" in out, out
            assert "not this pool's" in out
            assert main([*check, "--engine", "accumulative"]) == 0


#: A checker that opens its image read-write, as libpmemobj's open does (copy-on-write or
#: not), notes what it saw (FNV-1a of the image; the link count of the file it opened first
#: and kept open; whether the path still names that file), then spoils the image as $SPOIL
#: says: write (0xff over all of it), truncate, replace (a new file at the path), chmod.
SPOILS = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
static int kept = -1;
int spoils(const char *path)
{
    static unsigned char buf[3 * 4096];
    int fd = open(path, O_RDWR);
    if (fd < 0)
        return 0;
    if (kept < 0)
        kept = open(path, O_RDONLY);
    struct stat k, now;
    fstat(kept, &k);
    stat(path, &now);
    ssize_t n = pread(fd, buf, sizeof(buf), 0);
    unsigned long long h = 14695981039346656037ULL;
    for (ssize_t i = 0; i < n; i++)
        h = (h ^ buf[i]) * 1099511628211ULL;
    FILE *seen = fopen(getenv("SEEN"), "a");
    fprintf(seen, "%016llx %ld %d %ld\n", h, (long)k.st_nlink, k.st_ino == now.st_ino,
            (long)now.st_ino);
    fclose(seen);
    const char *how = getenv("SPOIL");
    memset(buf, 0xff, sizeof(buf));
    if (!strcmp(how, "write") || !strcmp(how, "chmod"))
        (void)!pwrite(fd, buf, sizeof(buf), 0);
    if (!strcmp(how, "chmod"))
        fchmod(fd, 0400);
    if (!strcmp(how, "truncate"))
        (void)!ftruncate(fd, 100);
    if (!strcmp(how, "replace")) {
        unlink(path);
        int other = open(path, O_RDWR | O_CREAT, 0600);
        (void)!write(other, buf, sizeof(buf));
        close(other);
    }
    close(fd);
    return 1;
}
#ifndef LIB
int main(int argc, char **argv) { return spoils(argv[argc - 1]) ? 0 : 1; }
#endif
"""


def _fnv(data: bytes) -> str:
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) & (1 << 64) - 1
    return f"{h:016x}"


@pytest.fixture(scope="module")
def spoils(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The SPOILS checker as a library and as a program."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    where = tmp_path_factory.mktemp("spoils")
    src, lib, prog = where / "spoils.c", where / "libspoils.so", where / "spoils"
    src.write_text(SPOILS)
    subprocess.run(["gcc", "-shared", "-fPIC", "-DLIB", "-o", str(lib), str(src)], check=True)
    subprocess.run(["gcc", "-o", str(prog), str(src)], check=True)
    return str(lib), str(prog)


def _three_pages(tmp_path: Path) -> tuple[Replay, list[str]]:
    """A 3-page pool whose base image holds data in its first and last page and a hole in
    the middle one, where the log stores (6 lines, each flushed, one fence): its replay,
    and the hash of every image, as a checker in this process sees them."""
    pool, base = tmp_path / "pool", tmp_path / "base"
    with open(base, "wb") as f:
        f.write(b"\x42" * 4096)
        f.seek(2 * 4096)
        f.write(b"\x43" * 4096)
    body = "|".join(
        f"STORE;{0x5201000 + 64 * i:#x};{i + 1:#x};0x8|FLUSH;{0x5201000 + 64 * i:#x};0x40"
        for i in range(6)
    )
    text = f"START|REGISTER_FILE;{pool};0x5200000;0x3000;0x0|{body}|FENCE|STOP\n"
    replay = Replay.of(parse_log(text), base_images={str(pool): str(base)})
    seen: list[str] = []

    def keep(image: memoryview) -> bool:
        seen.append(_fnv(bytes(image)))
        return True

    check_log(replay, FunctionChecker(keep, "keep"), engine="exhaustive", lint=False)
    return replay, sorted(seen)


def test_an_image_a_checker_opened_read_write_is_put_back_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spoils: tuple[str, str]
) -> None:
    """PMDK's hashmap_tx, checked with libpmemobj's open of each 8 MiB image: 6,522 images,
    and each one's file made anew (libpmemobj opens its pool read-write even to map it
    copy-on-write, which inotify reports), 6 ms of the 12 each image cost. The file is now
    put back in place: the checker that keeps the first file open sees it still linked,
    still at its path, image after image, and every image as it is."""
    from pmemsim.pmlog.checkers import LibChecker

    replay, want = _three_pages(tmp_path)
    seen = tmp_path / "seen.txt"
    monkeypatch.setenv("SEEN", str(seen))
    monkeypatch.setenv("SPOIL", "none")
    check_log(replay, LibChecker.parse(f"{spoils[0]}:spoils"), lint=False)
    lines = [line.split() for line in seen.read_text().splitlines()]
    assert sorted(h for h, *_ in lines) == want
    assert {(nlink, same) for _, nlink, same, _ in lines} == {("1", "1")}, lines


@pytest.mark.parametrize("how", ["write", "truncate", "replace", "chmod"])
def test_an_image_a_checker_spoiled_is_right_again_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spoils: tuple[str, str], how: str
) -> None:
    """Put back in place or made anew (a checker that replaced, resized or locked out its
    file), for a library and a program: each image is the one the log allows, with the
    base image's data and its hole (zeros) where the checker wrote 0xff."""
    from pmemsim.pmlog.checkers import LibChecker, ProgramChecker

    replay, want = _three_pages(tmp_path)
    seen = tmp_path / "seen.txt"
    monkeypatch.setenv("SEEN", str(seen))
    monkeypatch.setenv("SPOIL", how)
    monkeypatch.setattr("pmemsim.pmlog.slots._WATCH_AFTER", 0.0)  # watched from the start
    lib, prog = LibChecker.parse(f"{spoils[0]}:spoils"), ProgramChecker((spoils[1],))
    for checker in (lib, prog):
        result = check_log(replay, checker, lint=False)
        assert result.inconsistent == 0, (checker, result.minimal)
        got = sorted(line.split()[0] for line in seen.read_text().splitlines())
        assert got == want, checker
        seen.unlink()
    # a program's image files are kept from image to image unless the checker replaced them
    monkeypatch.setenv("SPOIL", "none")
    check_log(replay, prog, lint=False)
    assert len({line.split()[3] for line in seen.read_text().splitlines()}) == 1


#: A checker that allocates 16 MiB in 4 KiB pieces, touches them and frees them, as
#: libpmemobj's open and close do with megabytes (its lanes, its heap's run-time state): it
#: fails a call (after the first) that took a page fault per piece.
CHURNS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
static long faults(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
}
int churns(const char *path)
{
    enum { N = 4096, SIZE = 4000 };
    static char *piece[N];
    static int calls;
    (void)path;
    long before = faults();
    for (int i = 0; i < N; i++) {
        piece[i] = malloc(SIZE);
        for (int k = 0; k < SIZE; k += 512)
            piece[i][k] = 1;
    }
    long taken = faults() - before;
    for (int i = N; i-- > 0;)
        free(piece[i]);
    if (calls++ && taken > N / 4) {
        printf("%ld page faults for memory the last call freed\n", taken);
        return 0;
    }
    return 1;
}
"""


def test_a_library_checker_gets_back_the_memory_it_freed(tmp_path: Path) -> None:
    """PMDK's map checker on hashmap_tx's images: 7.6 ms of CPU per call in check-log's
    worker, 2 ms in a process of its own; glibc gave the megabytes libpmemobj's close freed
    back to the system, and its next open took them again with a page fault per page."""
    from pmemsim.pmlog.checkers import LibChecker

    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    src, lib = tmp_path / "churns.c", tmp_path / "libchurns.so"
    src.write_text(CHURNS)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    body = "|".join(f"STORE;{0x5200000 + 64 * i:#x};0x1;0x8" for i in range(3))
    text = f"START|REGISTER_FILE;{tmp_path / 'pool'};0x5200000;0x1000;0x0|{body}|FENCE|STOP\n"
    result = check_log(Replay.of(parse_log(text)), LibChecker.parse(f"{lib}:churns"), lint=False)
    assert result.images_checked >= 8
    assert result.inconsistent == 0, result.minimal and result.minimal.verdict
