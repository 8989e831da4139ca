"""check(..., jobs=N) on a streamed CrashCheck: the workers forked mid-recording, each going
on with the workload and exploring the chunks of crash points it takes
(pmemsim.explore.shares). The report is the one jobs=1 gives, byte for byte (recovery runs
and seconds aside); a workload that runs differently in a worker is refused; a worker that
dies is an error; nothing a worker or its recovery started outlives the check."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import epochs_workload

import pmemsim as pm
from pmemsim.explore import CrashCheck, check, shares, workers
from pmemsim.explore import engine as engine_module
from pmemsim.explore.executor import LocalProcesses

WORK = {"seconds": 0, "images_per_second": 0, "recovery_runs": 0}


@pytest.fixture(autouse=True)
def _small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fork early and cut small chunks: small checks then go through every path."""
    monkeypatch.setattr(engine_module, "PARALLEL_FROM", 40)
    monkeypatch.setattr(shares, "CHUNK", 8)


@pytest.fixture
def workers_take_every_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test whose premise is that a worker runs recovery: the parent, which takes the
    chunks no worker has taken yet, would take all of them from a worker that starts late
    (a loaded machine) and the test would see nothing of the worker."""
    monkeypatch.setattr(shares, "PARENT_TAKES", False)


@pytest.fixture
def late_workers(monkeypatch: pytest.MonkeyPatch, workers_take_every_chunk: None) -> None:
    """Each worker forked mid-recording starts 0.3 s late, as on a loaded machine (where it
    may not run before the parent is done): the check still goes to the workers."""
    fork = shares.fork

    def late(siblings: Any = ()) -> Any:
        got = fork(siblings)
        if not isinstance(got, workers._Worker):
            time.sleep(0.3)
        return got

    monkeypatch.setattr(shares, "fork", late)


def _close_pipes() -> None:
    """Close every pipe this process holds (the worker's to its parent among them)."""
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                os.close(int(fd))


def _checksum_recovery(v: pm.View) -> bool:
    if sum(v.u64[k * 8 + 1] for k in range(3)) % 7 == 3:
        raise ValueError("bad sum")
    return True


def _reading_all(v: pm.View) -> bool:
    """Reads every word written: each image its own read path (a lazy run each)."""
    if sum(v.u64[k] for k in range(24)) % 7 == 3:
        raise ValueError("bad sum")
    return True


def _two_bugs(v: pm.View) -> None:
    for e in range(30):
        v.u64[8] = 7 + e
        v.u64[0] = 1
        v.u64[24] = 9 + e
        v.u64[16] = 1
        v.persist(0, 256)


def _two_bug_recovery(v: pm.View) -> bool:
    if v.u64[0] and v.u64[8] < 7:
        raise KeyError("first record torn")
    if v.u64[16] and v.u64[24] < 9:
        raise ValueError("second record torn")
    return True


def _wide(v: pm.View) -> None:
    for i in range(9):
        v.u64[i * 8] = i + 1
    v.persist(0, 9 * 64)


CHECKS = [
    CrashCheck("exhaustive", epochs_workload(30, 3), _checksum_recovery, strategy="exhaustive"),
    CrashCheck("lazy", epochs_workload(30, 3), _reading_all),
    CrashCheck("random", _two_bugs, _two_bug_recovery, strategy="random:5", seed=11),
    CrashCheck("two bugs", _two_bugs, _two_bug_recovery),
    CrashCheck("wide", _wide, lambda v: v.u64[8 * 8] == 0 or v.u64[0] == 1, strategy="exhaustive"),
    CrashCheck(
        "faults",
        epochs_workload(12, 2),
        _checksum_recovery,
        strategy="exhaustive",
        faults=("unsafe_shutdown", "badblock"),
    ),
]


@pytest.mark.parametrize("c", CHECKS, ids=lambda c: c.name)
def test_jobs_give_the_report_jobs_1_gives(c: CrashCheck) -> None:
    forked: list[int] = []
    real = shares.Shares.start

    def start(self: Any) -> None:
        forked.append(self.jobs)
        real(self)

    one = check(c, progress=None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shares.Shares, "start", start)
        two = check(c, progress=None, jobs=2)
        three = check(c, progress=None, jobs=3)
    assert forked == [2, 3], "the check never went to workers"
    assert one.report() == two.report() == three.report()
    assert one.as_dict() | WORK == two.as_dict() | WORK == three.as_dict() | WORK
    assert [f.token for f in one.failures] == [f.token for f in two.failures]
    assert [f.token for f in one.failures] == [f.token for f in three.failures]
    # The user's live exception, re-run here: the same class as jobs=1's.
    assert [type(f.error) for f in one.failures] == [type(f.error) for f in two.failures]


def test_a_workload_that_runs_differently_in_a_worker_is_refused() -> None:
    here = os.getpid()

    def workload(v: pm.View) -> None:
        for e in range(40):
            for i in range(3):
                v.u64[i * 8 + e % 8] = e * 10 + i + 1
            if e > 30 and os.getpid() != here:
                v.u64[1] = e  # a store the parent's run does not make
            v.persist(0, 3 * 64)

    c = CrashCheck("odd", workload, lambda v: True, strategy="exhaustive")
    with pytest.raises(shares.WorkerMismatch, match="not deterministic"):
        check(c, progress=None, jobs=2)


def test_the_workloads_own_error_after_the_fork_is_raised_and_nothing_is_left() -> None:
    def workload(v: pm.View) -> None:
        for e in range(30):
            v.u64[e % 8] = e + 1
            v.persist(0, 64)
        raise ValueError("the workload's own bug")

    with pytest.raises(ValueError, match="own bug"):
        check(
            CrashCheck("w", workload, lambda v: True, strategy="exhaustive"), progress=None, jobs=2
        )


@pytest.mark.usefixtures("late_workers")
def test_a_worker_that_dies_is_an_error_and_nothing_is_left() -> None:
    here = os.getpid()

    def recover(v: pm.View) -> bool:
        if os.getpid() != here:
            os.kill(os.getpid(), signal.SIGKILL)
        return True

    c = CrashCheck("dies", epochs_workload(30, 3), recover, strategy="exhaustive")
    with pytest.raises(RuntimeError, match="was killed by signal 9 before it answered"):
        check(c, progress=None, jobs=2)


@pytest.mark.parametrize("executor", [None, LocalProcesses(2)], ids=["shares", "local"])
@pytest.mark.usefixtures("late_workers")
def test_a_worker_whose_pipe_ends_before_its_exit_is_named_by_its_real_end(
    executor: LocalProcesses | None,
) -> None:
    """A dying process's files are closed before its exit can be seen: the parent may
    read the end of the pipe first (a loaded machine runs it in between), and must then
    wait for the exit to say how the worker ended. Here the gap is made long: the
    worker closes its pipes, then is killed."""
    here = os.getpid()

    def recover(v: pm.View) -> bool:
        if os.getpid() != here:
            _close_pipes()
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGKILL)
        return True

    c = CrashCheck("dies late", epochs_workload(30, 3), recover, strategy="exhaustive")
    with pytest.raises(RuntimeError, match="was killed by signal 9 before it answered"):
        check(c, progress=None, jobs=2, executor=executor)


@pytest.mark.parametrize("executor", [None, LocalProcesses(2)], ids=["shares", "local"])
@pytest.mark.usefixtures("workers_take_every_chunk")
def test_a_worker_that_closes_its_pipe_and_goes_on_is_an_error_and_is_stopped(
    monkeypatch: pytest.MonkeyPatch, executor: LocalProcesses | None
) -> None:
    """Its exit is awaited for a while (workers.DYING), not for ever."""
    monkeypatch.setattr(workers, "DYING", 0.3)
    here = os.getpid()

    def recover(v: pm.View) -> bool:
        if os.getpid() != here:
            _close_pipes()
            time.sleep(30)
        return True

    c = CrashCheck("closes", epochs_workload(30, 3), recover, strategy="exhaustive")
    t = time.monotonic()
    with pytest.raises(RuntimeError, match=r"closed its pipe .* still running 0\.3 s later"):
        check(c, progress=None, jobs=2, executor=executor)
    assert time.monotonic() - t < 20  # (a hang, not a speed: the sleep is 30 s)


@pytest.mark.parametrize("executor", [None, LocalProcesses(2)], ids=["shares", "local"])
@pytest.mark.usefixtures("late_workers")
def test_a_worker_that_dies_is_seen_at_once_though_a_process_it_forked_holds_its_pipe(
    executor: LocalProcesses | None,
) -> None:
    """The worker's exit is watched (a pidfd), not only its pipe's end, which a process its
    recovery forked keeps open: the check waited for that process (here 30 s)."""
    here = os.getpid()

    def recover(v: pm.View) -> bool:
        if os.getpid() != here:
            if os.fork() == 0:  # holds every descriptor of the worker, its pipes too
                time.sleep(30)
                os._exit(0)
            os._exit(3)
        return True

    c = CrashCheck("dies, forked", epochs_workload(30, 3), recover, strategy="exhaustive")
    t = time.monotonic()
    with pytest.raises(RuntimeError, match=r"ended \(exit status 3\) before it answered"):
        check(c, progress=None, jobs=2, executor=executor)
    assert time.monotonic() - t < 20  # (a hang, not a speed: the sleep is 30 s)


@pytest.mark.parametrize("executor", [None, LocalProcesses(2)], ids=["shares", "local"])
@pytest.mark.usefixtures("late_workers")
def test_nothing_a_recovery_started_in_a_worker_outlives_the_check(
    tmp_path: Path, executor: LocalProcesses | None
) -> None:
    """A worker leads a process group, ended with it: a child its recovery started (and
    left running) goes too (workers forked mid-recording, or after it)."""
    here = os.getpid()
    started: list[subprocess.Popen[bytes]] = []

    def recover(v: pm.View) -> bool:
        if os.getpid() != here and not started:
            started.append(subprocess.Popen(["sleep", "60"]))
            (tmp_path / str(started[0].pid)).touch()
        return True

    c = CrashCheck("sleeps", epochs_workload(30, 3), recover, strategy="exhaustive")
    check(c, progress=None, jobs=2, executor=executor)
    pids = [int(p.name) for p in tmp_path.iterdir()]
    assert pids, "no worker ran recovery"
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_alive(p) for p in pids), "a recovery's child outlived the check"


@pytest.mark.usefixtures("workers_take_every_chunk")
def test_a_worker_stuck_past_the_time_budget_is_stopped_and_its_points_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stuck where no signal reaches it (here: every signal blocked, as in a long C call),
    a worker is stopped once the deadline, a run's time and the grace are past; the check
    ends, says so, and counts what it left out."""
    monkeypatch.setattr(shares, "GRACE", 0.2)
    here = os.getpid()

    def recover(v: pm.View) -> bool:
        if os.getpid() != here:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGALRM})
            time.sleep(60)
        return True

    c = CrashCheck(
        "stuck",
        epochs_workload(40, 3),
        recover,
        strategy="exhaustive",
        time_budget=0.5,
        run_timeout=0.2,
    )
    t = time.monotonic()
    r = check(c, progress=None, jobs=2)
    assert time.monotonic() - t < 10
    assert any("was still busy past the check's time budget" in n for n in r.notes), r.notes
    assert not r.exact and r.images_covered < r.images_possible
    assert r.verdict == "consistent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children() -> set[int]:
    """This process's children, live or not reaped yet."""
    me = str(os.getpid())
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        out.add(int(entry))
            except OSError:
                pass
    return out


@pytest.fixture(autouse=True)
def _no_children_left() -> Any:
    """Every worker is stopped and reaped by the time check() returns or raises."""
    before = _children()
    yield
    assert _children() <= before
