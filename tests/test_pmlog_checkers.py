"""check-log's checkers: C libraries in worker processes, programs on patched image files,
Python functions in and out of process, several registered files, PMREORDER_MARKERS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from pmemsim.explore import current_crash
from pmemsim.pmlog import (
    FunctionChecker,
    LibChecker,
    ProgramChecker,
    Replay,
    check_log,
    parse_log,
    read_log,
    replay_crash,
)

DATA = Path(__file__).resolve().parent / "data" / "pmlog"
BASE = 0x10000000
NOFILE = "/nonexistent-pmemsim-test/pool.bin"


def log_text(*ops: str, path: str = NOFILE) -> str:
    return "|".join(["START", f"REGISTER_FILE;{path};0x{BASE:x};0x1000;0x0", *ops, "STOP"])


def store(off: int, value: int, size: int = 8) -> str:
    return f"STORE;0x{BASE + off:x};0x{value:x};0x{size:x}"


def flush(off: int, n: int = 64) -> str:
    return f"FLUSH;0x{BASE + off:x};0x{n:x}"


def u64(img: Any, off: int) -> int:
    return int.from_bytes(img[off : off + 8], "little")


def append_ok(img: Any) -> bool:
    return u64(img, 8) == 0 or u64(img, 0x40) == 42


def fnv(data: bytes) -> str:
    h = 14695981039346656037
    for b in data[:4096]:
        h = ((h ^ b) * 1099511628211) & (1 << 64) - 1
    return f"{h:016x}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """tests/data/pmlog/checkers.c as a shared library and as a program."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C checkers cannot be built")
    out = tmp_path_factory.mktemp("checkers")
    lib, prog = out / "libcheckers.so", out / "checker"
    src = str(DATA / "checkers.c")
    subprocess.run([gcc, "-O1", "-shared", "-fPIC", "-o", str(lib), src], check=True)
    subprocess.run([gcc, "-O1", "-o", str(prog), src], check=True)
    return {"lib": str(lib), "prog": str(prog)}


# A log with many distinct images: 6 epochs of 4 stores, the invariant broken in some.
MANY = log_text(
    *[
        rec
        for e in range(6)
        for rec in (
            store(0x40, 42 if e % 2 else 7),
            store(8, e + 1),
            store(0x80 + 8 * e, e),
            store(0xC0, e),
            flush(0x40),
            flush(8),
            flush(0x80),
            "FENCE",
        )
    ]
)


# The same, 3 epochs (fewer images, for slow checkers).
FEW = log_text(*MANY.split("|")[2:-1][: 3 * 8])


def images_in_process(text: str) -> list[bytes]:
    seen: list[bytes] = []

    def keep(img: memoryview) -> bool:
        seen.append(bytes(img))
        return True

    check_log(Replay.of(parse_log(text)), FunctionChecker(keep, "keep"), engine="exhaustive")
    return seen


# -- C library checkers ------------------------------------------------------------------


def test_a_library_checker_finds_what_a_python_checker_finds(built: dict[str, str]) -> None:
    lib = LibChecker.parse(f"{built['lib']}:check")
    for name in ("append-bug-q", "append-bug-stderr", "append-fixed-logfile"):
        replay = Replay.of(read_log(str(DATA / f"{name}.log")))
        c = check_log(replay, lib).as_dict()
        py = check_log(replay, FunctionChecker(append_ok, "py"), engine="exhaustive").as_dict()
        for d in (c, py):
            d.pop("seconds"), d.pop("checker"), d.pop("timeout")
            if d["minimal"]:
                d["minimal"].pop("checker")
        assert c == py, name
    many_c = check_log(Replay.of(parse_log(MANY)), lib)
    many_py = check_log(
        Replay.of(parse_log(MANY)), FunctionChecker(append_ok, "py"), engine="exhaustive"
    )
    assert many_c.images_checked == many_py.images_checked > 50
    assert many_c.inconsistent == many_py.inconsistent > 0
    assert many_c.minimal is not None and many_c.minimal.verdict == "returned 0"


def test_a_replayed_crash_gets_the_library_verdict_the_run_gave(built: dict[str, str]) -> None:
    # The count (line 0) is durable before the record (line 0x40) is ever stored: every
    # image from crash point 0 on is inconsistent through lines written before the crash
    # point, not through the lines the crash loses. A replay must judge those lines too.
    text = log_text(store(8, 1), flush(8), "FENCE", store(0xC0, 5), flush(0xC0), "FENCE")
    lib = LibChecker.parse(f"{built['lib']}:check")
    py = FunctionChecker(append_ok, "py")
    run = check_log(Replay.of(parse_log(text)), lib)
    assert run.minimal is not None and run.inconsistent == 2
    for token in (run.minimal.token, "1:", "1:0.c0=1", "2:", "0:0.0=1"):
        by_lib, _ = replay_crash(Replay.of(parse_log(text)), lib, token)
        by_py, _ = replay_crash(Replay.of(parse_log(text)), py, token)
        assert (by_lib is None) == (by_py is None), token
    assert replay_crash(Replay.of(parse_log(text)), lib, "0:0.0=1")[0] is None


def test_a_library_that_crashes_or_hangs_costs_a_restart_not_the_run(
    built: dict[str, str],
) -> None:
    # (Each crash costs a fork and a dlopen: a log with few inconsistent images.)
    replay = Replay.of(read_log(str(DATA / "append-bug-stderr.log")))
    want = check_log(replay, FunctionChecker(append_ok, "py"), engine="exhaustive")
    crashy = check_log(replay, LibChecker.parse(f"{built['lib']}:crashy"))
    assert (crashy.images_checked, crashy.inconsistent) == (want.images_checked, want.inconsistent)
    assert crashy.minimal is not None and want.minimal is not None
    assert crashy.minimal.token == want.minimal.token
    assert "the checker crashed: killed by signal 11 (SIGSEGV)" in crashy.minimal.verdict
    hangs = check_log(
        Replay.of(read_log(str(DATA / "append-bug-q.log"))),
        LibChecker.parse(f"{built['lib']}:hangs", timeout=0.5),
    )
    assert hangs.inconsistent == 1 and hangs.minimal is not None
    assert hangs.minimal.verdict == "timed out after 0.5 s (the time limit per checker run)"
    assert (hangs.timed_out, hangs.crashed, crashy.crashed) == (1, 0, crashy.inconsistent)


def test_library_mistakes_are_named(built: dict[str, str]) -> None:
    from pmemsim.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="has no function 'nope'"):
        LibChecker.parse(f"{built['lib']}:nope").loaded()
    with pytest.raises(InvalidArgumentError, match="cannot open shared object file"):
        LibChecker.parse("/nonexistent-pmemsim-test/lib.so:check").loaded()
    with pytest.raises(InvalidArgumentError, match=r"expected LIBRARY\.so:FUNCTION"):
        LibChecker.parse(built["lib"])
    # Not waited for, it is refused by the check.
    nope = LibChecker.parse(f"{built['lib']}:nope")
    with pytest.raises(InvalidArgumentError, match="has no function 'nope'"):
        check_log(Replay.of(parse_log(log_text(store(0, 1), flush(0), "FENCE"))), nope)


# -- image files: patched, and rebuilt after a checker wrote to one ---------------------------


@pytest.mark.parametrize("jobs", [1, 3])
def test_checkers_that_write_to_their_image_see_the_right_next_image(
    built: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    want = sorted(fnv(i) for i in images_in_process(FEW))
    seen = tmp_path / "seen.txt"
    monkeypatch.setenv("PMEMSIM_TEST_SEEN", str(seen))
    replay = Replay.of(parse_log(FEW))
    lib = check_log(replay, LibChecker.parse(f"{built['lib']}:scribbles"), jobs=jobs)
    assert sorted(seen.read_text().split()) == want
    assert (
        lib.inconsistent
        == check_log(replay, FunctionChecker(append_ok, "py"), engine="exhaustive").inconsistent
    )
    seen.unlink()
    prog = check_log(replay, ProgramChecker((built["prog"],)), jobs=jobs)  # scribbles too
    assert sorted(seen.read_text().split()) == want
    assert prog.inconsistent == lib.inconsistent > 0


def test_a_program_sees_every_image_the_function_sees(built: dict[str, str]) -> None:
    replay = Replay.of(parse_log(MANY))
    prog = check_log(replay, ProgramChecker((built["prog"],)), jobs=2)
    py = check_log(replay, FunctionChecker(append_ok, "py"), engine="exhaustive")
    assert (prog.images_checked, prog.inconsistent) == (py.images_checked, py.inconsistent)
    assert prog.minimal is not None and py.minimal is not None
    assert prog.minimal.token == py.minimal.token
    assert prog.minimal.verdict == "exit status 1"


# -- Python checkers in worker processes ----------------------------------------------------


@pytest.mark.parametrize("text", [MANY, log_text(store(0, 1), flush(0), "FENCE")])
def test_jobs_check_exactly_the_images_one_job_checks(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also with fewer images than workers (which once judged the wrong buffer)."""
    seen = tmp_path / "seen.txt"
    monkeypatch.setenv("PMEMSIM_TEST_SEEN", str(seen))

    def note(img: memoryview) -> bool:
        info = current_crash()
        with open(os.environ["PMEMSIM_TEST_SEEN"], "a") as f:
            f.write(
                f"{fnv(bytes(img))} {info.point if info else -1} "
                f"{os.environ['PMREORDER_MARKERS']!r}\n"
            )
        return append_ok(img)

    results = []
    for jobs in (1, 3):
        r = check_log(
            Replay.of(parse_log(text)),
            FunctionChecker(note, "note"),
            jobs=jobs,
            engine="exhaustive",
        )
        results.append((sorted(seen.read_text().splitlines()), r.as_dict()))
        seen.unlink()
    (one, d1), (three, d3) = results
    assert one == three
    d1.pop("seconds"), d3.pop("seconds")
    assert d1 == d3


def test_docs_bad_log_with_three_jobs(tmp_path: Path) -> None:
    bad = log_text(
        store(12, 1, 4), store(0, 1, 4), store(4, 1, 4), store(8, 1, 4), flush(0), "FENCE"
    )

    def abc(img: memoryview) -> bool:
        w = [int.from_bytes(img[o : o + 4], "little") for o in (0, 4, 8, 12)]
        return w[3] == 0 or w[:3] == [1, 1, 1]

    one = check_log(Replay.of(parse_log(bad)), FunctionChecker(abc, "abc"), engine="exhaustive")
    three = check_log(Replay.of(parse_log(bad)), FunctionChecker(abc, "abc"), jobs=3)
    assert (
        (three.images_checked, three.inconsistent)
        == (one.images_checked, one.inconsistent)
        == (5, 3)
    )
    assert three.minimal is not None and three.minimal.verdict == "returned False"


# -- several registered files ---------------------------------------------------------------

DATA_FILE, FLAG_FILE = "/tmp/pmemsim-pmlog-test/data", "/tmp/pmemsim-pmlog-test/flag"


def test_several_files_one_image_over_all_of_them() -> None:
    calls: list[str] = []

    def per_file(img: memoryview) -> bool:
        calls.append(fnv(bytes(img)))
        return True

    def together(files: dict[str, memoryview]) -> bool:
        return u64(files[FLAG_FILE], 0) == 0 or u64(files[DATA_FILE], 0) == 0x1234

    bug = Replay.of(read_log(str(DATA / "twofiles-bug.log")))
    fixed = Replay.of(read_log(str(DATA / "twofiles-fixed.log")))
    r = check_log(bug, FunctionChecker(together, "t", all_files=True), engine="exhaustive")
    assert r.verdict == "inconsistent" and [f["path"] for f in r.files] == [DATA_FILE, FLAG_FILE]
    m = r.minimal
    assert m is not None and [(ln[0], ln[1]) for ln in m.lines] == [(0, 0)]  # data's line 0
    assert m.lost[0].source == "twofiles.c:33 in main"
    assert "line data +0x0" in m.describe()
    assert r.ignored["STORE"] == 1  # the store to memory no file was registered for
    assert (
        check_log(
            fixed, FunctionChecker(together, "t", all_files=True), engine="exhaustive"
        ).verdict
        == "consistent"
    )
    # pmreorder's protocol: the checker runs on each file's image, each distinct one once.
    p = check_log(bug, FunctionChecker(per_file, "p"), engine="exhaustive")
    assert p.verdict == "consistent" and p.images_checked == 4
    assert p.checker_runs == len(calls) < 2 * p.images_checked


def test_several_files_with_a_program(tmp_path: Path) -> None:
    script = tmp_path / "both.py"
    script.write_text(
        "import sys\n"
        "data, flag = (open(p, 'rb').read(8) for p in sys.argv[1:3])\n"
        "sys.exit(0 if flag == bytes(8) or data == (0x1234).to_bytes(8, 'little') else 1)\n"
    )
    both = ProgramChecker((sys.executable, str(script)), all_files=True)
    bug = check_log(Replay.of(read_log(str(DATA / "twofiles-bug.log"))), both)
    assert bug.verdict == "inconsistent" and bug.minimal is not None
    assert bug.minimal.token == "0:0.0=1"
    fixed = check_log(Replay.of(read_log(str(DATA / "twofiles-fixed.log"))), both)
    assert fixed.verdict == "consistent"


@pytest.mark.parametrize("watch_after", [0.0, float("inf")])
@pytest.mark.parametrize("jobs", [1, 2])
def test_a_program_that_writes_a_page_no_image_changes_does_not_spoil_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int, watch_after: float
) -> None:
    # The stores are all in the pool's second page; the program fails an image whose first
    # page is not zeros, then writes 0xff over it. Page 0 is in no image's patch, so only
    # noticing the write (inotify once watching, else a rebuild after every run) keeps the
    # next image right. Watching from the first image (0) or never (inf: a short check's
    # way, as closing a watch costs more than its rebuilds).
    monkeypatch.setattr("pmemsim.pmlog.slots._WATCH_AFTER", watch_after)
    script = tmp_path / "spoils.py"
    script.write_text(
        "import sys\n"
        "with open(sys.argv[1], 'r+b') as f:\n"
        "    clean = f.read(4096) == bytes(4096)\n"
        "    f.seek(0)\n"
        "    f.write(b'\\xff' * 4096)\n"
        "sys.exit(0 if clean else 1)\n"
    )
    ops = [op for i in range(6) for op in (store(4096 + 64 * i, i + 1), flush(4096 + 64 * i))]
    text = log_text(*ops, "FENCE").replace(";0x1000;0x0", ";0x2000;0x0", 1)
    r = check_log(
        Replay.of(parse_log(text)),
        ProgramChecker((sys.executable, str(script))),
        engine="exhaustive",
        jobs=jobs,
    )
    assert r.images_checked > 8
    assert r.verdict == "consistent", r.minimal and r.minimal.verdict


def test_a_program_is_judged_by_its_exit_not_by_what_it_left_running(tmp_path: Path) -> None:
    # A checker that leaves a process in the background holding its output (a shell
    # script's "cmd &") was judged when the pipe closed: every image "timed out". Its exit is
    # the verdict, and what it left is stopped: it could read or write the next image.
    pids = tmp_path / "pids"
    script = tmp_path / "leaves.sh"
    script.write_text(f"#!/bin/sh\nsleep 60 &\necho $! >> {pids}\nexit 0\n")
    script.chmod(0o755)
    replay = Replay.of(parse_log(log_text(store(0, 1), store(64, 2), flush(0, 128), "FENCE")))
    r = check_log(replay, ProgramChecker((str(script),), timeout=5))
    assert r.verdict == "consistent" and r.images_checked == 4
    left = [int(p) for p in pids.read_text().split()]
    assert len(left) == 4

    def running(pid: int) -> bool:
        try:  # (a zombie was killed, and waits for init to reap it)
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read()
        except FileNotFoundError:
            return False
        return "(sleep)" in fields and fields.rsplit(")", 1)[1].split()[0] != "Z"

    deadline = time.monotonic() + 10  # SIGKILL was sent; its delivery is the kernel's
    while any(running(pid) for pid in left) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(running(pid) for pid in left), "a process the checker left still runs"


def test_a_chatty_programs_verdict_keeps_the_end_of_what_it_said(tmp_path: Path) -> None:
    chatty = ("-c", "import sys; print('x' * 10**7); print('THE END'); sys.exit(3)")
    replay = Replay.of(parse_log(log_text(store(0, 1), flush(0), "FENCE")))
    r = check_log(replay, ProgramChecker((sys.executable, *chatty)))
    assert r.minimal is not None and r.minimal.verdict.endswith("THE END")


@pytest.mark.parametrize("code", [0, 1])
@pytest.mark.parametrize(("engine", "jobs"), [("lazy", 1), ("exhaustive", 1), ("exhaustive", 2)])
def test_a_checker_calling_sys_exit_gets_a_verdict(engine: str, jobs: int, code: int) -> None:
    # sys.exit() in a checker (one ported from a program's main) ended pmemsim on the spot,
    # with the checker's status and no report; it is the checker's failure, as an exception.
    def exits(image: Any) -> bool:
        sys.exit(code)

    replay = Replay.of(parse_log(log_text(store(0, 1), flush(0), "FENCE")))
    r = check_log(replay, FunctionChecker(exits, "exits"), engine=engine, jobs=jobs)
    assert r.verdict == "inconsistent" and r.minimal is not None
    assert r.minimal.verdict.startswith(f"called sys.exit({code})")


# -- PMREORDER_MARKERS -----------------------------------------------------------------------


def test_pmreorder_markers_are_every_marker_record_before_the_crash(
    built: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = log_text(
        "a.BEGIN",
        store(0, 1),
        flush(0),
        "FENCE",
        "a.END",
        "b.BEGIN",
        "lib.op.BEGIN",
        store(64, 2),
        flush(64),
        "lib.op.END",
        "FENCE",
        "b.END",
        store(128, 3),
    )
    seen = tmp_path / "seen.txt"
    monkeypatch.setenv("PMEMSIM_TEST_SEEN", str(seen))
    r = check_log(Replay.of(parse_log(text)), LibChecker.parse(f"{built['lib']}:markers"))
    assert r.crash_points == 3
    assert set(seen.read_text().splitlines()) == {
        "a.BEGIN",
        "a.BEGIN|a.END|b.BEGIN|lib.op.BEGIN|lib.op.END",
        "a.BEGIN|a.END|b.BEGIN|lib.op.BEGIN|lib.op.END|b.END",
    }


def test_pmreorder_markers_keep_their_newest_within_64_kib() -> None:
    from pmemsim.pmlog.check import MARKERS_LIMIT

    ops = []
    for i in range(4000):
        ops += [f"marker{i:05}.BEGIN", f"marker{i:05}.END"]
    seen: list[str] = []

    def note(img: memoryview) -> bool:
        seen.append(os.environ["PMREORDER_MARKERS"])
        return True

    check_log(
        Replay.of(parse_log(log_text(*ops, store(0, 1)))),
        FunctionChecker(note, "n"),
        engine="exhaustive",
    )
    assert len(set(seen)) == 1  # the images of one crash point
    value = seen[0]
    assert len(value) <= MARKERS_LIMIT + 4 and value.startswith("...|marker")
    assert value.endswith("|marker03999.BEGIN|marker03999.END")


# -- a checker that crashes in a worker: later images keep their markers --------------------


def _marked_log() -> str:
    ops = []
    for epoch in range(12):
        ops.append(f"e{epoch % 3}.BEGIN")
        for k in range(3):
            ops.append(store(0x40 * k + 8 * (epoch % 8), epoch * 16 + k + 1))
        ops.append(f"e{epoch % 3}.END")
        ops.append(flush(0x40 * (epoch % 3)))
        ops.append("FENCE")
    return log_text(*ops)


def _marker_verdict(image: Any) -> bool:
    content = bytes(image)
    return zlib.crc32(content + os.environ.get("PMREORDER_MARKERS", "?").encode()) % 3 != 0


def _crashes_on_some(image: Any) -> bool:
    if zlib.crc32(bytes(image)) % 7 == 0:
        os._exit(3)  # in a worker process: the checker crashed
    return _marker_verdict(image)


def _raises_on_some(image: Any) -> bool:
    if zlib.crc32(bytes(image)) % 7 == 0:
        raise RuntimeError("crashed")
    return _marker_verdict(image)


def test_images_after_a_worker_crash_see_their_own_markers() -> None:
    replay = Replay.of(parse_log(_marked_log()))
    want = check_log(replay, FunctionChecker(_raises_on_some, "py"), engine="exhaustive")
    got = check_log(replay, FunctionChecker(_crashes_on_some, "py"), engine="exhaustive", jobs=2)
    assert got.images_checked == want.images_checked > 100
    assert got.inconsistent == want.inconsistent > 0
    assert got.minimal is not None and want.minimal is not None
    assert got.minimal.token == want.minimal.token


def test_workers_answer_on_file_descriptors_past_1024(tmp_path: Path) -> None:
    """A process with many files open (a long test run) gets pipe descriptors numbered
    1,024 and up, which select() refuses: the workers' reader waits with poll. Found by a
    long CLI fuzz run (ValueError: filedescriptor out of range in select())."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the open-file limit ({hard}) leaves no descriptor past 1,024")
    limit = 2048 if hard == resource.RLIM_INFINITY else hard
    log = (
        f"START|REGISTER_FILE;{tmp_path / 'p.bin'};0x10000000;0x1000;0x0"
        "|STORE;0x10000000;0x1;0x8|FLUSH;0x10000000;0x40|FENCE|STOP"
    )
    code = f"""
import os, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (2048, {limit}))
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # the next ones are past 1,024
from pmemsim.pmlog import Replay, check_log, parse_log
from pmemsim.pmlog.checkers import FunctionChecker
r = check_log(Replay.of(parse_log({log!r})), FunctionChecker(lambda i: True, "true"), jobs=2)
print(r.verdict, r.images_checked)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "consistent"


@pytest.mark.parametrize("jobs", [0, 257, 10**23, True, 2.0])
def test_a_number_of_workers_no_machine_has_is_refused(jobs: Any) -> None:
    """``jobs`` of 10**23 forked workers one by one until the process ran out of files."""
    from pmemsim.errors import InvalidArgumentError
    from pmemsim.explore import CrashCheck, check
    from pmemsim.pmlog import Replay, check_log, parse_log
    from pmemsim.pmlog.checkers import FunctionChecker

    log = "START|REGISTER_FILE;p.bin;0x10000000;0x1000;0x0|STOP"
    with pytest.raises(InvalidArgumentError, match="from 1 to 256"):
        check_log(Replay.of(parse_log(log)), FunctionChecker(lambda i: True, "t"), jobs=jobs)
    c = CrashCheck("c", lambda v: None, lambda v: True)
    with pytest.raises(InvalidArgumentError, match="from 1 to 256"):
        check(c, jobs=jobs, progress=None)
