"""A library checker's worker is kept from one check to the next: the next check with an
equal checker takes it (no process to start, no folder to make), unless its library file
changed; between checks it holds no image file; a forked child never uses its parent's;
and at exit, or on ``LibChecker.close()``, it is ended and its folder removed."""

from __future__ import annotations

import gc
import marshal
import mmap
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers import c_library

from pmemsim.explore import frames
from pmemsim.pmlog import imagefile, serve, workers
from pmemsim.pmlog.check import check_log
from pmemsim.pmlog.checkers import LibChecker
from pmemsim.pmlog.grammar import parse_log
from pmemsim.pmlog.replay import Replay

BASE = 0x10000000
#: Inconsistent where the image's first byte is 1 (the log's first store).
FIRST_BYTE = r"""
#include <stdio.h>
int check(const char *path) {
    FILE *f = fopen(path, "rb");
    int first = f ? fgetc(f) : -1;
    if (f) fclose(f);
    return first != 1;
}
"""
ALWAYS = "int check(const char *path) { (void)path; return %d; }\n"


def _log(name: str = "p", size: int = 0x1000, epochs: int = 2) -> str:
    records = [f"START|REGISTER_FILE;/nonexistent-pmemsim-test/{name};0x{BASE:x};0x{size:x};0x0"]
    for e in range(epochs):
        a = BASE + 64 * e
        records += [f"STORE;0x{a:x};0x{e + 1:x};0x8", f"FLUSH;0x{a:x};0x40", "FENCE"]
    return "|".join([*records, "STOP"]) + "\n"


def _check(checker: LibChecker, text: str | None = None) -> str:
    return check_log(Replay.of(parse_log(text or _log())), checker).verdict


def _kept(checker: LibChecker) -> workers.LibWorker:
    (w,) = [w for w in workers._spares() if w.checker == checker]
    return w


@pytest.fixture(autouse=True)
def _no_spares() -> object:
    workers.close_spares()
    yield
    workers.close_spares()


def test_the_next_check_takes_the_kept_worker_with_no_image_file_left(tmp_path: Path) -> None:
    checker = LibChecker.parse(f"{c_library(tmp_path, FIRST_BYTE)}:check")
    assert _check(checker) == "inconsistent"
    worker = _kept(checker)
    pid, home = worker.pid, worker.home
    assert home is not None
    images = Path(home.path, "images")
    # Its files are removed after the check (the worker is told so, and does it at once).
    deadline = time.monotonic() + 10
    while list(images.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert images.is_dir() and not list(images.iterdir())
    # Another pool, another name and size: the same worker, new files.
    assert _check(checker, _log("q", 0x4000_0000)) == "inconsistent"
    assert _kept(checker).pid == pid and _kept(checker).home is home
    checker.close()
    assert not workers._spares()
    assert not Path(home.path).exists()


def test_a_rebuilt_library_gets_a_new_worker(tmp_path: Path) -> None:
    lib = c_library(tmp_path, ALWAYS % 1)
    checker = LibChecker.parse(f"{lib}:check")
    assert _check(checker) == "consistent"
    pid = _kept(checker).pid
    c_library(tmp_path, ALWAYS % 0)  # same path, another function
    assert _check(checker) == "inconsistent"
    assert _kept(checker).pid != pid
    # LibChecker.parse again of an unchanged library: the kept worker.
    pid = _kept(checker).pid
    assert LibChecker.parse(f"{lib}:check") == checker
    assert _kept(checker).pid == pid


GETENV = r"""
#include <stdlib.h>
int check(const char *path) {
    (void)path;
    const char *v = getenv("PMEMSIM_TEST_OK");
    return v ? atoi(v) : -1;
}
"""


def test_another_environment_or_folder_gets_a_new_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checker may read them (its library perhaps once, as it loads): a worker started
    with others is not the one a fork would have been."""
    monkeypatch.setenv("PMEMSIM_TEST_OK", "1")
    checker = LibChecker.parse(f"{c_library(tmp_path, GETENV)}:check")
    assert _check(checker) == "consistent"
    pid = _kept(checker).pid
    monkeypatch.setenv("PMEMSIM_TEST_OK", "0")
    assert _check(checker) == "inconsistent"
    assert _kept(checker).pid != pid
    pid = _kept(checker).pid
    monkeypatch.chdir(tmp_path)
    assert _check(checker) == "inconsistent"
    assert _kept(checker).pid != pid


def test_a_checker_found_by_the_loaders_search_is_not_kept() -> None:
    """Its file is not known: whether it changed cannot be told. (strlen: the image file's
    path is longer than 1, the consistent value.)"""
    checker = LibChecker.parse("libc.so.6:strlen").loaded()  # (its spare, used once)
    assert _check(checker) == "inconsistent"
    assert not workers._spares()
    assert _check(checker) == "inconsistent"


def test_a_worker_that_crashed_is_replaced_and_the_replacement_kept(tmp_path: Path) -> None:
    crash = "int check(const char *p) { (void)p; *(volatile int *)0 = 1; return 1; }\n"
    checker = LibChecker.parse(f"{c_library(tmp_path, crash)}:check")
    first = _kept(checker).pid
    assert _check(checker) == "inconsistent"
    assert _kept(checker).pid not in (0, first)
    assert _check(checker) == "inconsistent"


#: Forks a child that forks a grandchild (sleeping in the background) and exits; waits for
#: the child: the grandchild, orphaned, is no child of the checker's process. Its pid goes to
#: the file PMEMSIM_TEST_PIDS names.
ORPHANS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
int check(const char *path) {
    (void)path;
    pid_t child = fork();
    if (child == 0) {
        pid_t grandchild = fork();
        if (grandchild == 0) { sleep(30); _exit(0); }
        FILE *f = fopen(getenv("PMEMSIM_TEST_PIDS"), "a");
        if (f) { fprintf(f, "%d\n", (int)grandchild); fclose(f); }
        _exit(0);
    }
    waitpid(child, NULL, 0);
    return 1;
}
"""


def test_an_orphan_the_checker_left_does_not_outlive_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker inherits its checker's orphans (a subreaper): it sees them, and is not kept
    (its process group ends, the orphans with it)."""
    pids = tmp_path / "pids.txt"
    monkeypatch.setenv("PMEMSIM_TEST_PIDS", str(pids))
    checker = LibChecker.parse(f"{c_library(tmp_path, ORPHANS)}:check")
    assert _check(checker) == "consistent"
    assert not workers._spares()
    orphans = [int(p) for p in pids.read_text().split()]
    assert orphans
    deadline = time.monotonic() + 5
    while not all(_gone(p) for p in orphans) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(_gone(p) for p in orphans), "an orphan of the checker outlived the check"


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_kept_worker_that_died_meanwhile_is_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checker = LibChecker.parse(f"{c_library(tmp_path, FIRST_BYTE)}:check")
    assert _check(checker) == "inconsistent"
    dead = _kept(checker)
    os.kill(dead.pid, signal.SIGKILL)
    while not _gone(dead.pid):
        time.sleep(0.001)
    restarts: list[object] = []
    monkeypatch.setattr(workers.Workers, "_restart", lambda *a: restarts.append(a))
    assert _check(checker) == "inconsistent"
    assert not restarts
    assert _kept(checker) is not dead


def test_at_most_kept_workers(tmp_path: Path) -> None:
    checkers = [
        LibChecker.parse(f"{c_library(tmp_path, ALWAYS % 1, f'c{k}')}:check")
        for k in range(workers.KEPT + 2)
    ]
    for c in checkers:
        assert _check(c) == "consistent"
    assert [w.checker for w in workers._spares()] == checkers[-workers.KEPT :]


def test_no_descriptor_is_left_by_workers_ended(tmp_path: Path) -> None:
    """Checks with more checkers than are kept end workers as they go: every descriptor of
    theirs (pipes, pidfd, the judging word's memfd, the folder's lock) is closed then, not
    whenever the collector frees them."""
    specs = [f"{c_library(tmp_path, ALWAYS % 1, f'c{k}')}:check" for k in range(workers.KEPT + 2)]
    before = len(os.listdir("/proc/self/fd"))
    gc.disable()
    try:
        for k in range(3 * len(specs)):  # (each parsed: a new interpreter, when none is kept)
            assert _check(LibChecker.parse(specs[k % len(specs)])) == "consistent"
        workers.close_spares()
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        gc.enable()


def test_checks_in_threads_take_a_kept_worker_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checks may run in threads (a Dask worker's): two that both find the kept worker fit
    (its checks made slow here) must not both take it."""
    checker = LibChecker.parse(f"{c_library(tmp_path, FIRST_BYTE)}:check").loaded()
    current = workers.LibWorker.current

    def slowly(self: workers.LibWorker) -> bool:
        time.sleep(0.05)  # (the other thread asks meanwhile)
        return current(self)

    monkeypatch.setattr(workers.LibWorker, "current", slowly)
    verdicts: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            verdicts.append(_check(checker))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and verdicts == ["inconsistent"] * 2


def test_a_forked_child_never_uses_its_parents_worker(tmp_path: Path) -> None:
    checker = LibChecker.parse(f"{c_library(tmp_path, ALWAYS % 1)}:check")
    assert _check(checker) == "consistent"
    pid = _kept(checker).pid
    child = os.fork()
    if child == 0:
        os._exit(0 if not workers._spares() else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _kept(checker).pid == pid


def test_at_exit_the_kept_worker_ends_and_its_folder_goes(tmp_path: Path) -> None:
    lib = c_library(tmp_path, ALWAYS % 1)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script = textwrap.dedent(
        f"""
        import sys
        from pmemsim.pmlog import LibChecker, Replay, check_log, parse_log
        from pmemsim.pmlog import workers
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_pmlog_kept_worker import _log
        checker = LibChecker.parse({f"{lib}:check"!r})
        print(check_log(Replay.of(parse_log(_log())), checker).verdict)
        print(workers._spares()[0].pid)
        """
    )
    env = {**os.environ, "TMPDIR": str(tmp)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    verdict, pid = done.stdout.split()
    assert verdict == "consistent"
    assert not list(tmp.iterdir())
    # Ended (not merely orphaned): no such process, or a zombie its new parent reaps, once
    # the kernel is done with it (a killed process may still be exiting).
    deadline = time.monotonic() + 5
    while not _gone(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _gone(int(pid))


def test_the_worker_keeps_its_inotify_instance_from_one_check_to_the_next(tmp_path: Path) -> None:
    """Closing an inotify instance that watches a file takes the kernel 15 ms or more (a
    grace period): a kept worker that closed its files' at the end of each check made the
    next one wait for it. One instance serves every check (its watches go with the files)."""
    made, closed = (tmp_path / "made", tmp_path / "closed")
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.close(w1)
            os.close(r2)

            class Counted(imagefile.Inotify):
                def __init__(self) -> None:
                    super().__init__()
                    with made.open("a") as f:
                        f.write("1")

                def close(self) -> None:
                    with closed.open("a") as f:
                        f.write("1")
                    super().close()

            serve.Inotify = Counted  # type: ignore[misc]
            serve.serve(lambda: lambda files, run: None, r1, w2, mmap.mmap(-1, serve.WORD))
            code = 0
        finally:
            os._exit(code)
    os.close(r1)
    os.close(w2)
    reader = frames.Reader(r2, marshal.loads)
    assert reader.get(None) == ("ready", "")
    image = ("I", ((b"\x01" * 64, 0, 1, 0, 0, 64),), ((0,),), None, None)
    for n, name in enumerate(["a", "b", "c"]):
        folder = tmp_path / f"check{n}"
        frames.send(w1, ("setup", str(folder), [name], [(4096, None, 0)], 1, 60.0), marshal.dumps)
        frames.send(w1, [image], marshal.dumps)
        assert reader.get(None) == []
        frames.send(w1, ("release",), marshal.dumps)
    os.close(w1)
    os.waitpid(pid, 0)
    os.close(r2)
    assert made.read_text() == "1"
    assert not closed.exists()
    assert not [p for n in range(3) for p in (tmp_path / f"check{n}").iterdir()]


def _tried(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes the checks' folders are tried for from now on."""
    sizes: list[int] = []
    real = workers.probe

    def probe(folder: str, size: int) -> None:
        sizes.append(size)
        real(folder, size)

    monkeypatch.setattr(workers, "probe", probe)
    return sizes


def test_a_check_within_the_size_tried_ahead_tries_no_file_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The spare's folder is tried for large files while no check waits (four system calls
    # a first check made on its path, for a size the file system takes anyway).
    checker = LibChecker.parse(f"{c_library(tmp_path, ALWAYS % 1)}:check").loaded()
    tried = _tried(monkeypatch)
    # (Small pools: a check puts larger ones elsewhere where /dev/shm is small.)
    assert _check(checker, _log(size=1 << 20)) == "consistent"
    assert _check(checker, _log(size=4 << 20)) == "consistent"
    assert tried == []


def test_a_pool_past_the_size_tried_ahead_is_tried_by_its_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "PROBED_AHEAD", 1 << 20)
    checker = LibChecker.parse(f"{c_library(tmp_path, ALWAYS % 1)}:check").loaded()
    tried = _tried(monkeypatch)
    assert _check(checker, _log(size=1 << 20)) == "consistent"
    assert tried == []
    assert _check(checker, _log(size=4 << 20)) == "consistent"
    assert _check(checker, _log(size=2 << 20)) == "consistent"
    assert tried == [4 << 20]  # (then known to fit: the smaller one tries nothing)
