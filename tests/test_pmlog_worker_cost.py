"""A checker worker's work per image (:func:`pmemsim.pmlog.serve.serve`), made cheaper
without changing what it does: the judging word, the files put back, a C checker called
keeping the interpreter's lock, its output kept only for inconsistent images.

Each test runs ``serve`` in a forked child (it sends the checker's output to a file of its
own, over this process's stdout and stderr) and talks to it as pmemsim does."""

from __future__ import annotations

import marshal
import mmap
import os
import posix
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import c_library

from pmemsim.explore import frames
from pmemsim.pmlog import serve
from pmemsim.pmlog.imagefile import IN_Q_OVERFLOW

POOL = 4096


def _patch(line: int, fill: int, pool: int = 0) -> tuple[bytes, int, int, int, int, int]:
    """An image's line option as pmemsim sends it: (content, key, atoms, pool, start, end)."""
    return (bytes([fill]) * 64, 0, 1, pool, line, line + 64)


def _image(*patches: tuple[bytes, int, int, int, int, int], runs: Any = ((0,),)) -> Any:
    return ("I", tuple(patches), runs, None, None)


def _run(
    folder: Path,
    load: Callable[[], Any],
    batches: list[list[Any]],
    before: Callable[[], None] = lambda: None,
    judging: mmap.mmap | None = None,
    files: int = 1,
) -> tuple[list[Any], list[Any]]:
    """Serve ``batches`` in a forked worker loading its judge with ``load`` (``before``: run
    first, in the child): the answer to each batch, and what the child noted in
    :data:`NOTES` (sent back at its end)."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    r3, w3 = os.pipe()
    if judging is None:
        judging = mmap.mmap(-1, serve.WORD)
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            for fd in (w1, r2, r3):
                os.close(fd)
            before()
            serve.serve(load, r1, w2, judging)
            frames.send(w3, NOTES, marshal.dumps)
            code = 0
        finally:
            os._exit(code)
    for fd in (r1, w2, w3):
        os.close(fd)
    try:
        reader = frames.Reader(r2, marshal.loads)
        assert reader.get(None) == ("ready", "")
        pools = [(POOL, None, 0)] * files
        names = [f"pool{i}" for i in range(files)]
        frames.send(w1, ("setup", str(folder), names, pools, 1, 60.0), marshal.dumps)
        answers = []
        for batch in batches:
            frames.send(w1, batch, marshal.dumps)
            answers.append(reader.get(None))
        os.close(w1)
        w1 = -1
        notes = frames.Reader(r3, marshal.loads).get(None)
    finally:
        if w1 >= 0:
            os.close(w1)
        _, status = os.waitpid(pid, 0)
        for fd in (r2, r3):
            os.close(fd)
    assert status == 0, status
    return answers, notes


#: What a judge in the child notes for the test (sent back when the worker ends).
NOTES: list[Any] = []


def _seen() -> Any:
    """A Python judge noting what its image holds at lines 0 and 64 and its last byte:
    inconsistent when line 0 is 0xee."""

    def judge(files: Any, run: list[int]) -> str | None:
        m = files.maps[run[0]]
        NOTES.append((m[0], m[64], m[POOL - 1]))
        return "bad" if m[0] == 0xEE else None

    return judge


def test_every_image_is_its_patches_over_the_moved_lines(tmp_path: Path) -> None:
    batches = [
        [_image(_patch(0, 1)), _image(_patch(64, 2)), _image(_patch(0, 3), _patch(64, 4))],
        [("M", [(0, 64, b"\x05" * 64)]), _image(_patch(0, 6)), _image(), _image(_patch(64, 7))],
        [_image(_patch(0, 0xEE)), _image()],
    ]
    answers, seen = _run(tmp_path, _seen, batches)
    # Each image's lines are put back before the next: to zeros, or to what was moved in.
    assert seen == [(1, 0, 0), (0, 2, 0), (3, 4, 0), (6, 5, 0), (0, 5, 0), (0, 7, 0),
                    (0xEE, 5, 0), (0, 5, 0)]  # fmt: skip
    assert answers == [[], [], [(0, ["bad"])]]


@pytest.mark.parametrize("order", ["little", "big"])
def test_the_judging_word_names_each_image(
    tmp_path: Path, order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    judging = mmap.mmap(-1, serve.WORD)  # (shared with the child, which judges)

    def load() -> Any:
        def judge(files: Any, run: list[int]) -> str | None:
            NOTES.append(int.from_bytes(judging[: serve.WORD], "little"))
            return None

        return judge

    def before() -> None:
        monkeypatch.setattr(sys, "byteorder", order)

    batches = [[_image(), _image()], [_image(), ("M", []), _image(), _image()]]
    _, words = _run(tmp_path, load, batches, before, judging=judging)
    assert words == [1 << 20, 1 << 20 | 1, 2 << 20, 2 << 20 | 1, 2 << 20 | 2]


def test_a_judge_that_writes_its_image_gets_the_next_one_right_without_inotify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def load() -> Any:
        def judge(files: Any, run: list[int]) -> str | None:
            path = files.paths[run[0]]
            with open(path, "rb") as f:
                data = f.read()
            NOTES.append((data[0], data[64], data[POOL - 1]))
            with open(path, "r+b") as f:  # spoils its file, a byte and the end
                f.seek(POOL - 1)
                f.write(b"\x99")
            return None

        return judge

    def no_inotify() -> None:
        def refused() -> None:
            raise OSError("no inotify here")

        monkeypatch.setattr(serve, "Inotify", refused)

    batches = [[_image(_patch(0, 1)), _image(_patch(64, 2))], [_image(_patch(0, 3))]]
    for before in (no_inotify, lambda: None):
        _, seen = _run(tmp_path / before.__name__, load, batches, before)
        assert seen == [(1, 0, 0), (0, 2, 0), (3, 0, 0)], before


def test_an_object_is_called_by_its_method_a_function_as_it_is() -> None:
    limit = serve.Limited(lambda files, run: None, 10.0)
    call = serve._direct(limit)
    assert call == limit.__call__ and call.__self__ is limit  # type: ignore[attr-defined]

    def judge(files: Any, run: list[int]) -> str | None:
        return None

    assert serve._direct(judge) is judge
    assert serve._direct(len) is len  # type: ignore[arg-type]


def _libpython() -> str:
    """The shared library that holds Python's C API in this process."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if re.search(r"/libpython3[.\d]*\.so", path):
                return path
    pytest.skip("this Python has no shared libpython to load a C checker from")


def test_a_worker_calls_its_c_checker_keeping_the_interpreters_lock(tmp_path: Path) -> None:
    # PyGILState_Check as the checker: 1 (consistent) only where the lock is held. A
    # worker runs one thread; a speculative child may run another (its long-wait watch).
    lib = _libpython()
    answers, _ = _run(
        tmp_path, lambda: serve.c_judge(lib, "PyGILState_Check"), [[_image(), _image()]]
    )
    assert answers == [[]]
    speculative = serve.c_judge(lib, "PyGILState_Check", streams=())
    assert speculative(types.SimpleNamespace(bpaths=[b"/"]), [0]) == "returned 0"


TALKER = r"""
#include <stdio.h>
static int calls;

/* Says something on every call, through stdout's buffer and unbuffered stderr;
   inconsistent when its image starts with 0xee. */
int talk(const char *path)
{
    FILE *f = fopen(path, "rb");
    int c = f ? fgetc(f) : -1;
    if (f) fclose(f);
    printf("call %d", ++calls);
    fprintf(stderr, "byte %d\n", c);
    return c != 0xee;
}

int quiet(const char *path)
{
    return 1;
}
"""


@pytest.fixture(scope="module")
def talker(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(c_library(tmp_path_factory.mktemp("talker"), TALKER, "talk"))


def _no_inotify(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    def before() -> None:
        def refused() -> None:
            raise OSError("no inotify here")

        monkeypatch.setattr(serve, "Inotify", refused)

    return before


@pytest.mark.parametrize("watched", [True, False])
def test_a_library_checkers_output_is_kept_for_inconsistent_images_only(
    tmp_path: Path, talker: str, watched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Watched, a consistent image's output is dropped once the poll after it says it
    # spoke; else the judge looks after every run. Either way the same answers.
    bad = _patch(0, 0xEE)
    batches = [
        [_image(), _image(_patch(0, 1)), _image(bad), _image()],
        [_image(bad), _image(_patch(0, 2))],
        [_image(bad, runs=((1,), (0,)))],  # (two runs: the first one's output is dropped)
        [_image(_patch(64, 3)), _image(bad, runs=((0,), (1,)))],
    ]
    before = (lambda: None) if watched else _no_inotify(monkeypatch)
    answers, _ = _run(
        tmp_path, lambda: serve.c_judge(talker, "talk", streams=(1, 2)), batches, before, files=2
    )

    def said(verdict: str | None) -> Any:
        # (In the order stdio wrote them: the stdout buffer's mode is the process's.)
        return verdict and sorted(re.findall(r"returned 0|call \d+|byte \d+", verdict))

    assert [[(n, [said(v) for v in vs]) for n, vs in a] for a in answers] == [
        [(2, [["byte 238", "call 3", "returned 0"]])],
        [(0, [["byte 238", "call 5", "returned 0"]])],
        [(0, [None, ["byte 238", "call 8", "returned 0"]])],
        [(1, [["byte 238", "call 10", "returned 0"], None])],
    ]


@pytest.mark.parametrize("watched", [True, False])
def test_a_silent_consistent_image_costs_no_look_at_the_output(
    tmp_path: Path, talker: str, watched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (The poll that asks whether a checker changed its file says whether it wrote.)
    def counted() -> None:
        if not watched:
            _no_inotify(monkeypatch)()
        real = posix.lseek

        def lseek(fd: int, pos: int, how: int) -> int:
            if how == os.SEEK_CUR:  # (where the output ends; files are looked at otherwise)
                NOTES.append("lseek")
            return real(fd, pos, how)

        monkeypatch.setattr(posix, "lseek", lseek)  # (os's C half, which serve calls)

    batches = [[_image(), _image(_patch(0, 1))], [_image(_patch(64, 2))] * 4]
    answers, notes = _run(tmp_path, lambda: serve.c_judge(talker, "quiet"), batches, counted)
    assert answers == [[], []]
    assert notes == ([] if watched else ["lseek"] * 6)


def test_a_lost_event_counts_as_output_too(tmp_path: Path) -> None:
    # Past inotify's queue, any file may have changed and the checker may have spoken.
    files = serve.Files(str(tmp_path / "images"), ["pool"], [(POOL, None, 0)])
    dropped: list[int] = []
    said = tmp_path / "said"
    said.touch()
    judge: Any = types.SimpleNamespace(
        path=str(said), watched=False, drop=lambda: dropped.append(1)
    )
    files.follow(judge)
    assert judge.watched and files.output is judge and files.notify is not None
    queued = [[(-1, IN_Q_OVERFLOW)], []]
    files.notify.pending = lambda: bool(queued[0])  # type: ignore[method-assign]
    files.notify.events = lambda: queued.pop(0) if queued else []  # type: ignore[method-assign]
    files.check()
    assert dropped == [1] and files.rebuilds == 1


def test_a_workers_folder_is_made_with_what_it_lacks(tmp_path: Path) -> None:
    # (Without os's makedirs where the parent is there: the usual case.)
    serve._folder(str(tmp_path / "a"))
    serve._folder(str(tmp_path / "a"))
    serve._folder(str(tmp_path / "b" / "c"))
    assert (tmp_path / "a").is_dir() and (tmp_path / "b" / "c").is_dir()
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o700
