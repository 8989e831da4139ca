"""check-log's replays on the workers (pmemsim/distributed/logs.py, cursor.py): a worker
goes on with its replay of the log from the last batch it judged, so a log of many batches
costs each worker about one replay, not one per batch; and whatever order the batches
arrive in, the result is inline's.

Most tests run the workers' code in this process through a client that runs the batches
in an order of the test's choosing (no cluster to start); the last runs a LocalCluster."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import c_library

pytest_plugins = ["dask_support"]

BASE = 0x10000000


def epochs_log(epochs: int, seed: int = 7) -> str:
    """Per epoch: a record's value to line 1, then its "valid" copy to line 0, a third
    line's store; each flushed, one fence. A crash that persists line 0 without line 1 is
    inconsistent (see :func:`ordered`)."""
    rng = random.Random(seed)
    recs = ["START", f"REGISTER_FILE;/nonexistent-pmemsim-test/pool;0x{BASE:x};0x1000;0x0"]
    for e in range(1, epochs + 1):
        other = 2 + rng.randrange(60)
        recs += [
            f"STORE;0x{BASE + 64:x};0x{e:x};0x8",
            f"STORE;0x{BASE:x};0x{e:x};0x8",
            f"STORE;0x{BASE + other * 64 + 8 * rng.randrange(8):x};0x{e:x};0x8",
            f"FLUSH;0x{BASE:x};0x40",
            f"FLUSH;0x{BASE + 64:x};0x40",
            f"FLUSH;0x{BASE + other * 64:x};0x40",
            "FENCE",
        ]
    recs.append("STOP")
    return "|".join(recs)


def ordered(img: memoryview) -> bool:
    """Line 0 never runs ahead of line 1."""
    valid, value = struct.unpack_from("<Q", img, 0)[0], struct.unpack_from("<Q", img, 64)[0]
    return valid <= value


class _Future:
    def __init__(self, client: OrderedClient, fn: Any, args: tuple[Any, ...]) -> None:
        self.client, self.fn, self.args = client, fn, args
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def result(self) -> Any:
        self.client.run_until(self)
        if self.error is not None:
            raise self.error
        return self.value


class OrderedClient:
    """What DaskJudge uses of a Dask client, running the tasks in this process, one at a
    time, when a result is asked for: the oldest first, the newest first, or a seeded
    random one of those submitted."""

    def __init__(self, order: str | int) -> None:
        self.order = order
        self.rng = random.Random(order if isinstance(order, int) else 0)
        self.pending: list[_Future] = []
        self.ran: list[int] = []

    def submit(self, fn: Any, *args: Any, key: str, pure: bool) -> _Future:
        fut = _Future(self, fn, args)
        self.pending.append(fut)
        return fut

    def run_until(self, fut: _Future) -> None:
        while not fut.done:
            if self.order == "forward":
                k = 0
            elif self.order == "reverse":
                k = len(self.pending) - 1
            else:
                k = self.rng.randrange(len(self.pending))
            task = self.pending.pop(k)
            args = [a.result() if isinstance(a, _Future) else a for a in task.args]
            try:
                task.value = task.fn(*args)
            except BaseException as exc:
                task.error = exc
            task.done = True

    def cancel(self, futures: list[_Future]) -> None:
        self.pending = [f for f in self.pending if f not in futures]

    def run(self, fn: Any, *args: Any, on_error: str) -> None:
        fn(*args)


class InProcess:
    """A Dask executor's check-log side, its one worker this process."""

    workers = 1

    def __init__(self, order: str | int, batch: int, resume: bool = True) -> None:
        self.client = OrderedClient(order)
        self.log_batch = batch
        self.log_resume = resume
        self.sent = self.log_replayed = self.log_replays = 0

    def log_judge(self, replay: Any, checker: Any, crash_points: str, *common: Any) -> Any:
        from pmemsim.distributed.logs import DaskJudge

        return DaskJudge(self, replay, checker, crash_points, *common, batch=self.log_batch)


def _comparable(result: Any) -> dict[str, Any]:
    d = result.as_dict()
    for k in ("seconds", "images_per_second"):
        d.pop(k, None)
    return d


@pytest.fixture(scope="module")
def long_log() -> tuple[Any, Any, Any]:
    """A log of 150 epochs (1,050 operations) and its inline result."""
    pytest.importorskip("cloudpickle", reason="dask is not installed: pip install 'pmemsim[dask]'")
    from pmemsim.pmlog import FunctionChecker, Replay, check_log, parse_log

    replay = Replay.of(parse_log(epochs_log(150)))
    checker = FunctionChecker(ordered, "ordered")
    inline = check_log(replay, checker, engine="exhaustive")
    assert inline.inconsistent and inline.minimal is not None
    return replay, checker, inline


def _on(ex: InProcess, long_log: tuple[Any, Any, Any]) -> Any:
    from pmemsim.pmlog import check_log

    replay, checker, inline = long_log
    result = check_log(replay, checker, engine="exhaustive", executor=ex)
    assert result.report() == inline.report()
    assert _comparable(result) == _comparable(inline)
    return result


def test_a_worker_replays_a_log_of_many_batches_once(long_log: tuple[Any, Any, Any]) -> None:
    replay, _, _ = long_log
    ex = InProcess("forward", batch=16)
    _on(ex, long_log)
    assert ex.sent >= 40
    # One replay, each operation once: the batches went on from where the last one stopped.
    assert ex.log_replays == 1
    assert ex.log_replayed == replay.operations


def test_every_batch_replays_from_the_start_without_resume(
    long_log: tuple[Any, Any, Any],
) -> None:
    """The old way (bench/bench_dask.py's reference): what the counters say of it."""
    replay, _, _ = long_log
    ex = InProcess("forward", batch=16, resume=False)
    _on(ex, long_log)
    assert ex.log_replays == ex.sent >= 40
    assert ex.log_replayed > ex.sent // 2 * replay.operations // 2


@pytest.mark.parametrize("order", ["reverse", 1, 2])
def test_batches_out_of_order_give_inline_s_result(
    long_log: tuple[Any, Any, Any], order: str | int
) -> None:
    replay, _, _ = long_log
    ex = InProcess(order, batch=16)
    _on(ex, long_log)
    # A batch before the replay's point starts another replay; one after goes on with it.
    assert 1 < ex.log_replays < ex.sent
    assert ex.log_replayed < ex.log_replays * replay.operations


def test_a_batch_at_the_point_the_replay_waits_at_goes_on_there(
    long_log: tuple[Any, Any, Any],
) -> None:
    """Batches of 1 image: most crash points' images span several batches."""
    replay, _, _ = long_log
    ex = InProcess("forward", batch=1)
    result = _on(ex, long_log)
    assert ex.sent == result.images_checked
    assert ex.log_replays == 1
    assert ex.log_replayed == replay.operations


# -- the cursor ------------------------------------------------------------------------------


class Visits:
    """A job that notes the crash points it is handed."""

    def __init__(self, first: int, last: int, fail_at: int | None = None) -> None:
        self.first, self.last, self.fail_at = first, last, fail_at
        self.seen: list[int] = []
        self.closed: list[bool] = []
        self.threads: set[str] = set()

    def visit(self, point: Any, img: Any) -> None:
        self.threads.add(threading.current_thread().name)
        if point.index == self.fail_at:
            raise RuntimeError("the judge failed")
        self.seen.append(point.index)

    def close(self, done: bool) -> list[int]:
        self.closed.append(done)
        return self.seen


@pytest.fixture
def small_replay() -> Any:
    from pmemsim.pmlog import Replay, parse_log

    return Replay.of(parse_log(epochs_log(10)))


def test_a_cursor_goes_on_from_its_point(small_replay: Any) -> None:
    from pmemsim.distributed.cursor import LogCursor

    cursor = LogCursor(small_replay, "barriers")
    try:
        assert cursor.run(Visits(2, 4)) == [2, 3, 4]
        assert cursor.at == 4 and cursor.serves(4) and not cursor.serves(3)
        assert cursor.run(Visits(4, 4)) == [4]  # the point it waits at, again
        assert cursor.run(Visits(7, 10)) == [7, 8, 9, 10]  # 10: the end of the log
        assert cursor.operations == 70  # 10 epochs of 7
        with pytest.raises(ValueError, match="cannot serve 3"):
            cursor.run(Visits(3, 5))
    finally:
        cursor.close()


def test_the_job_runs_in_the_replays_thread(small_replay: Any) -> None:
    from pmemsim.distributed.cursor import LogCursor

    cursor = LogCursor(small_replay, "barriers")
    job = Visits(0, 1)
    cursor.run(job)
    cursor.close()
    assert job.threads == {"pmemsim-log-replay"}
    assert job.closed == [True]


def test_a_log_shorter_than_the_batch_ends_the_cursor(small_replay: Any) -> None:
    from pmemsim.distributed.cursor import LogCursor, ReplayEnded

    cursor = LogCursor(small_replay, "barriers")
    job = Visits(9, 12)
    with pytest.raises(ReplayEnded, match="has 11 crash point"):
        cursor.run(job)
    assert job.seen == [9, 10] and job.closed == [False]
    assert cursor.ended and not cursor.serves(12)


def test_a_failing_job_ends_the_cursor_with_its_error(small_replay: Any) -> None:
    from pmemsim.distributed.cursor import LogCursor

    cursor = LogCursor(small_replay, "barriers")
    job = Visits(1, 5, fail_at=3)
    with pytest.raises(RuntimeError, match="the judge failed"):
        cursor.run(job)
    assert job.seen == [1, 2] and job.closed == [False]
    assert cursor.ended


def test_closing_a_cursor_ends_its_thread(small_replay: Any) -> None:
    from pmemsim.distributed.cursor import LogCursor

    cursor = LogCursor(small_replay, "barriers")
    cursor.run(Visits(0, 0))
    thread = cursor._thread
    assert thread is not None and thread.is_alive()
    cursor.close()
    thread.join(10)
    assert not thread.is_alive() and cursor.ended


# -- on a LocalCluster -----------------------------------------------------------------------


def test_on_a_cluster_each_worker_replays_the_log_about_once(
    dask_cluster: Any, long_log: tuple[Any, Any, Any]
) -> None:
    from dask_support import WORKERS

    from pmemsim.pmlog import check_log

    replay, checker, inline = long_log
    dask_cluster.log_batch = 16
    result = check_log(replay, checker, engine="exhaustive", executor=dask_cluster)
    assert result.report() == inline.report()
    assert _comparable(result) == _comparable(inline)
    assert dask_cluster.sent >= 40
    # Every batch from the start would be about sent / 2 replays of the whole log; a batch
    # that reaches a worker after a later one (rare, early) costs a replay up to it.
    assert dask_cluster.log_replayed <= (WORKERS + 2) * replay.operations


# -- a checker stuck on a worker -----------------------------------------------------------

# Three lines stored, flushed together, fenced: three images persist line 0 without line 1
# or 2 (the odd ones: the checkers below are slow, loop or crash on them).
WAIT_LOG = "|".join(
    [
        "START",
        f"REGISTER_FILE;/nonexistent-pmemsim-test/stuck.pool;0x{BASE:x};0x1000;0x0",
        f"STORE;0x{BASE:x};0x1;0x8",
        f"STORE;0x{BASE + 0x40:x};0x2;0x8",
        f"STORE;0x{BASE + 0x80:x};0x3;0x8",
        f"FLUSH;0x{BASE:x};0xc0",
        "FENCE",
        "STOP",
    ]
)

ODD = "image[0] == 1 and (image[0x40] == 0 or image[0x80] == 0)"

#: On the odd images, in the order judged: the first crashes (SIGSEGV) when ``crash``, the
#: next sleeps ``sleep`` s; inconsistent. (Written out per run: the workers' environment is
#: theirs.)
PROGRAM = """
import os, signal, sys, time
with open(sys.argv[-1], "rb") as f:
    image = f.read(0x81)
if ODD:
    for i, what in enumerate(("crash", "sleep")):
        if what == "crash" and not {crash}:
            continue
        try:
            os.close(os.open(f"{flags}.{{i}}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        if what == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep({sleep})
        break
    sys.exit(1)
""".replace("ODD", ODD)


def _program(path: Path, flags: Path, sleep: float, crash: bool = False) -> list[str]:
    path.write_text(PROGRAM.format(flags=flags, sleep=sleep, crash=crash))
    return ["--", sys.executable, str(path)]


PY_CHECKER = f"""
import time

def check(image):
    if {ODD}:
        if image[0x40] == 0 and image[0x80] == 0:
            time.sleep({{sleep}})
        return False
    return True
"""

RECOVERY = """
import time
from pmemsim.explore import CrashCheck

def work(view):
    for line in range(3):
        view.write(line * 0x40, bytes([line + 1]))
    view.persist(0, 0xc0)

def loops(view):
    if view.read(0, 1) == b"\\x01" and view.read(0x40, 0x41)[::0x40] == b"\\x00\\x00":
        while True:
            time.sleep(0.02)
    return True

looping = CrashCheck("looping", work, loops, size=4096, run_timeout=20)
"""

NOTICE = re.compile(
    r"check-log: \[crash (\S+)\] still waiting for the checker on this image after "
    r"([\d.]+) s \(no time limit\); Ctrl-C stops the check and prints the failures found so "
    r"far; "
)


@pytest.fixture
def soon(dask_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A long wait is told after 0.5 s, not 10, here and on the workers: more than a checker
    program's start-up on a loaded machine."""
    from pmemsim.pmlog import waiting

    monkeypatch.setattr(waiting, "FIRST", 0.5)
    dask_cluster.client.run(setattr, waiting, "FIRST", 0.5)
    try:
        yield
    finally:
        dask_cluster.client.run(setattr, waiting, "FIRST", 10.0)


def _check_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, *args: str
) -> tuple[int, str, str, dict[str, Any]]:
    from pmemsim.cli import main

    log = tmp_path / "stuck.log"
    log.write_text(WAIT_LOG)
    out = tmp_path / f"{name}.json"
    code = main(["check-log", str(log), "--json", str(out), "--engine", "exhaustive", *args])
    std = capsys.readouterr()
    return code, std.out, std.err, json.loads(out.read_text())


def _comparable_json(got: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in got.items() if k not in ("seconds", "images_per_second")}


@pytest.mark.usefixtures("soon")
@pytest.mark.parametrize("checker", ["python", "program"])
def test_a_long_wait_on_a_worker_is_told_as_inline(
    dask_cluster: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    checker: str,
) -> None:
    """A checker slow on one image, judged on a worker, is told of on stderr while the
    client waits for the batch, in the words and with the crash token of a run without a
    cluster (a Python checker in worker processes, --jobs 2; a program, --jobs 1)."""
    if checker == "python":
        chk = tmp_path / "chk.py"
        chk.write_text(PY_CHECKER.format(sleep=1.6))
        args, here = ["--timeout", "none", "--checker-py", f"{chk}:check"], ["--jobs", "2"]
    else:
        args, here = ["--timeout", "none"], []
    address = dask_cluster.client.scheduler.address
    runs = []
    for name, where in (("here", here), ("dask", ["--scheduler", address])):
        if checker == "program":
            where = [*where, *_program(tmp_path / "chk.py", tmp_path / f"{name}-flag", 1.6)]
        code, out, err, got = _check_log(tmp_path, capsys, name, *args, *where)
        assert code == 1 and got["inconsistent"] == 3 and got["timed_out"] == 0
        assert "still waiting" not in out
        told = [(m[1], float(m[2])) for m in NOTICE.finditer(err)]
        assert len({t for t, _ in told}) == 1, err  # one image, named as --replay names it
        seconds = [s for _, s in told]
        assert seconds == sorted(seconds) and 0.5 <= seconds[0] < 1.6, err
        runs.append((told[0][0], _comparable_json(got)))
    assert runs[0] == runs[1]


#: Loops in pure Python on one image (the one of the two odd lines lost).
PY_LOOPING = f"""
def check(image):
    while {ODD} and image[0x40] == 0 and image[0x80] == 0:
        pass
    return True
"""


@pytest.mark.parametrize("checker", ["recovery", "program", "python"])
def test_a_time_limit_holds_on_a_worker_with_inlines_verdict(
    dask_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], checker: str
) -> None:
    """A checker that loops on an image, on a worker, is stopped at its time limit there,
    with the verdict and the notice a run without a cluster gives (a Python checker's in
    the worker's thread, by a watchdog; and in worker processes, --jobs 2, too)."""
    address = dask_cluster.client.scheduler.address
    here: list[list[str]] = [[]]
    if checker == "recovery":
        scenario = tmp_path / "scenario.py"
        scenario.write_text(RECOVERY)
        args = ["--timeout", "0.3", "--recovery", f"{scenario}::looping"]
        verdict = "timed out: recovery did not finish within 0.3 s (run_timeout)"
    elif checker == "python":
        chk = tmp_path / "looping.py"
        chk.write_text(PY_LOOPING)
        args = ["--timeout", "0.3", "--checker-py", f"{chk}:check"]
        verdict = "timed out after 0.3 s (the time limit per checker run)"
        here.append(["--jobs", "2"])
    else:  # (a limit a Python program starts well within, even on a loaded machine)
        args = ["--timeout", "2"]
        verdict = "timed out after 2 s (the time limit per checker run)"
    runs = []
    ways = [*((f"here{i}", w) for i, w in enumerate(here)), ("dask", ["--scheduler", address])]
    for name, where in ways:
        if checker == "program":
            where = [*where, *_program(tmp_path / "chk.py", tmp_path / f"{name}-flag", 60)]
        code, out, err, got = _check_log(tmp_path, capsys, name, *args, *where)
        assert code == 1 and got["timed_out"] == 1, out + err
        [timed] = [line for line in err.splitlines() if "timed out" in line]
        assert timed.endswith(f"] {verdict}; counted as inconsistent, going on")
        runs.append((timed, _comparable_json(got)))
    assert all(run == runs[0] for run in runs[1:])
    assert [m for m in runs[-1][1]["minimal"]["checker"].splitlines()] == [verdict]


@pytest.mark.usefixtures("soon")
def test_a_fault_on_a_worker_is_told_as_it_happens(
    dask_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An image that crashed its checker on a worker is told while the batch goes on (here:
    before the next image's long wait), not when the batch is in."""
    address = dask_cluster.client.scheduler.address
    prog = _program(tmp_path / "chk.py", tmp_path / "flag", 1.2, crash=True)
    code, _, err, got = _check_log(
        tmp_path, capsys, "dask", "--timeout", "none", "--scheduler", address, *prog
    )
    assert code == 1 and got["crashed"] == 1, err
    crashed = err.index("killed by signal 11 (SIGSEGV); counted as inconsistent, going on")
    assert crashed < err.index("still waiting for the checker"), err
    assert err.count("killed by signal") == 1, err  # told once, counted once


def test_a_batch_its_client_left_ends_its_checker_program(tmp_path: Path) -> None:
    """Ctrl-C or an error on the client leaves a batch running on a worker: when the client
    forgets the log, the worker kills the checker program it waits on (no time limit: it
    would run for good, and outlive the worker) and judges no more of the batch; programs
    run again after."""
    import time

    from pmemsim.distributed import logs
    from pmemsim.pmlog import ProgramChecker, Replay, check_log, checkers, parse_log

    pytest.importorskip("cloudpickle", reason="dask is not installed: pip install 'pmemsim[dask]'")
    replay = Replay.of(parse_log(WAIT_LOG))
    flags = tmp_path / "flag"
    checker = ProgramChecker(_program(tmp_path / "chk.py", flags, 60)[1:], timeout=None)
    ended = threading.Event()

    def run() -> None:
        check_log(replay, checker, engine="exhaustive", executor=InProcess("forward", 64))
        ended.set()

    judging = threading.Thread(target=run, daemon=True)
    judging.start()
    started = time.monotonic()
    while not (tmp_path / "flag.1").exists():  # the program sleeps on an odd image
        assert time.monotonic() - started < 30
        time.sleep(0.02)
    [token] = list(logs._LOADED)
    logs._forget(token)
    assert ended.wait(20)  # (the program sleeps 60 s)
    judging.join()
    assert not checkers._STOPPING.is_set()
    assert ProgramChecker(["true"]).run([], "") is None


LOOPING_LIB = """
#include <stdio.h>
int check(const char *path) {
    unsigned char image[0x81];
    FILE *f = fopen(path, "rb");
    size_t n = fread(image, 1, sizeof image, f);
    fclose(f);
    if (n == sizeof image && image[0] == 1 && image[0x40] == 0 && image[0x80] == 0)
        for (;;) {}  /* stuck for good on one image */
    return 1;
}
"""


def test_a_batch_its_client_left_ends_its_library_checker(tmp_path: Path) -> None:
    """As for a checker program: a library function stuck with no time limit is ended with
    its worker when the client forgets the log; its worker is not restarted on the image it
    was stuck on (it spun at 100 % CPU after the check, and after a local cluster closed)."""
    import time

    from pmemsim.distributed import logs
    from pmemsim.pmlog import LibChecker, Replay, check_log, parse_log

    pytest.importorskip("cloudpickle", reason="dask is not installed: pip install 'pmemsim[dask]'")
    lib = c_library(tmp_path, LOOPING_LIB, "loop")
    replay = Replay.of(parse_log(WAIT_LOG))
    checker = LibChecker.parse(f"{lib}:check", timeout=None)
    ended = threading.Event()

    def run() -> None:
        with contextlib.suppress(Exception):  # (what a left batch raises, nobody reads)
            check_log(replay, checker, engine="exhaustive", executor=InProcess("forward", 64))
        ended.set()

    before = _children()
    judging = threading.Thread(target=run, daemon=True)
    judging.start()
    started = time.monotonic()
    while not logs._LOADED or not any(log.batches for log in logs._LOADED.values()):
        assert time.monotonic() - started < 30
        time.sleep(0.02)
    time.sleep(0.3)  # (the worker reaches the image it is stuck on)
    [token] = list(logs._LOADED)
    logs._forget(token)
    assert ended.wait(20)
    judging.join()
    deadline = time.monotonic() + 5
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.02)
    left = _children() - before
    for pid in left:  # (a spinning checker left by a regression would outlive the tests)
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    assert not left, "the stuck checker's worker outlived the check"


def _children() -> set[int]:
    """This process's live children."""
    me = str(os.getpid())
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if fields[1] == me and fields[0] != "Z":
                    out.add(int(entry))
    return out
