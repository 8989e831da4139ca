"""Crash checks explored on a Dask cluster (a LocalCluster of 2 worker processes): the
same reports as inline, byte for byte, for the catalogue and for checks made in Python;
a worker killed mid-batch and a recovery that hangs change nothing; a worker that cannot
run the check says why."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

import pmemsim as pm
from pmemsim.cli.discover import Found, discover, restored_imports
from pmemsim.errors import InvalidArgumentError
from pmemsim.explore import CheckResult, CrashCheck, check

pytest_plugins = ["dask_support", "pytester"]

ROOT = Path(__file__).resolve().parent.parent
#: What differs between executors: timings, and how many runs the lazy explorer shared.
VARYING = ("seconds", "images_per_second", "recovery_runs")


def comparable(r: CheckResult) -> dict[str, Any]:
    d = r.as_dict()
    for k in VARYING:
        d.pop(k, None)
    return d


def same(a: CheckResult, b: CheckResult) -> None:
    assert a.report() == b.report()
    assert comparable(a) == comparable(b)
    assert [str(f.crash) for f in a.failing] == [str(f.crash) for f in b.failing]


def test_the_catalogue_gives_the_reports_it_gives_inline(dask_cluster: Any) -> None:
    dask_cluster.batch = 4
    sent = 0
    with restored_imports():
        entries = [e for e in discover(ROOT / "scenarios", None) if isinstance(e, Found)]
        assert len(entries) > 20
        for e in entries:
            inline = check(e.check, name=e.ref, progress=None)
            on_dask = check(e.check, name=e.ref, progress=None, executor=dask_cluster)
            same(on_dask, inline)
            sent += dask_cluster.sent
    assert sent >= 2 * len(entries)  # every check went out, in several batches


# -- checks made in Python (they travel by value) ------------------------------------------

RECORDS = 6


def one_fence(v: pm.View) -> None:
    """Record and count flushed together under one fence: the count may persist alone."""
    for i in range(RECORDS):
        v.u64[(i + 1) * 8] = i + 1
        v.u64[0] = i + 1
        v.flush((i + 1) * 64, 8)
        v.flush(0, 8)
        v.drain()


def every_record_there(v: pm.View) -> bool:
    return all(v.u64[(i + 1) * 8] == i + 1 for i in range(v.u64[0]))


def log_check(recover: Any = every_record_there, **kw: Any) -> CrashCheck:
    return CrashCheck("one fence", one_fence, recover, expect="inconsistent", **kw)


@pytest.mark.parametrize("strategy", ["lazy", "exhaustive", "random:3"])
def test_checks_made_in_python_give_the_same_report(dask_cluster: Any, strategy: str) -> None:
    c = log_check(strategy=strategy, faults=("unsafe_shutdown",), seed=7)
    inline = check(c, progress=None)
    assert inline.failures
    same(check(c, progress=None, executor=dask_cluster), inline)
    assert dask_cluster.sent > 1
    # The minimal failure was run again here: the report holds recovery's own verdict.
    assert str(inline.failures[0].error) == "recovery returned False"


def test_local_processes_list_failing_crashes_as_inline() -> None:
    """A crash point cut into slices (each slice with both states) lists its failing crashes
    state by state, as inline (this needs no Dask: the merge is the engine's)."""
    from pmemsim.explore.executor import LocalProcesses

    c = log_check(strategy="exhaustive", faults=("unsafe_shutdown",))
    same(check(c, progress=None, executor=LocalProcesses(2)), check(c, progress=None))


def test_progress_counts_workers(dask_cluster: Any) -> None:
    seen: list[Any] = []
    check(log_check(), progress=seen.append, executor=dask_cluster)
    assert seen[-1].workers == 2
    assert seen[-1].point == seen[-1].points


def killing(flag: str, client: int, at: int) -> Any:
    """Recovery that ends its worker process once, at crash point ``at`` or later (never in
    the client, which runs recovery only to describe failures)."""

    def recover(v: pm.View) -> bool:
        crash = pm.explore.current_crash()
        if os.getpid() != client and crash is not None and crash.point >= at:
            try:
                fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os._exit(3)
        return every_record_there(v)

    return recover


def test_a_worker_killed_mid_batch_changes_nothing(dask_cluster: Any, tmp_path: Path) -> None:
    flag = tmp_path / "killed"
    dask_cluster.batch = 4  # batches of several crash points: the kill is mid-batch
    c = log_check(killing(str(flag), os.getpid(), 2), strategy="exhaustive")
    inline = check(c, progress=None)
    on_dask = check(c, progress=None, executor=dask_cluster)
    assert flag.exists()  # a worker died, and its batch ran again elsewhere
    same(on_dask, inline)


def _allow_failures(dask_scheduler: Any, count: int) -> int:
    old = int(dask_scheduler.allowed_failures)
    dask_scheduler.allowed_failures = count
    return old


def test_a_batch_that_kills_every_worker_is_an_error_that_says_so(dask_cluster: Any) -> None:
    client = os.getpid()

    def recover(v: pm.View) -> bool:
        crash = pm.explore.current_crash()
        if os.getpid() != client and crash is not None and crash.point == 2:
            os._exit(3)
        return every_record_there(v)

    c = log_check(recover, strategy="exhaustive")
    run = dask_cluster.client.run_on_scheduler
    old = run(_allow_failures, count=1)  # two deaths, not Dask's default four
    try:
        with pytest.raises(InvalidArgumentError, match=r"crash point.* died every time"):
            check(c, progress=None, executor=dask_cluster)
    finally:
        run(_allow_failures, count=old)


def hanging(at: int) -> Any:
    def recover(v: pm.View) -> bool:
        crash = pm.explore.current_crash()
        if crash is not None and crash.point == at:
            while True:
                pass
        return every_record_there(v)

    return recover


def test_a_hang_reads_the_same_in_any_thread() -> None:
    """Dask runs recovery in worker threads, where the run timer interrupts from another
    thread; the client re-runs the failure in its main thread, under a signal. Both must
    give one verdict (this needs no Dask)."""
    c = log_check(hanging(3), run_timeout=0.3)
    here = check(c, progress=None)
    there: list[CheckResult] = []
    t = threading.Thread(target=lambda: there.append(check(c, progress=None)))
    t.start()
    t.join(60)
    assert here.hangs == 1
    same(there[0], here)
    assert "did not finish within 0.3 s" in here.report()


def test_a_recovery_that_hangs_on_a_worker_is_a_hang(dask_cluster: Any) -> None:
    c = log_check(hanging(3), run_timeout=0.5)
    inline = check(c, progress=None)
    assert inline.hangs >= 1
    assert any(f.kind == "hang" for f in inline.failures)
    same(check(c, progress=None, executor=dask_cluster), inline)


def test_a_workload_that_records_differently_on_a_worker_is_refused(dask_cluster: Any) -> None:
    client = os.getpid()

    def workload(v: pm.View) -> None:
        for i in range(1 if os.getpid() == client else 2):
            v.u64[i * 8] = 1
            v.persist(i * 64, 8)

    c = CrashCheck("it depends", workload, lambda v: True)
    with pytest.raises(InvalidArgumentError, match="recorded other crash states"):
        check(c, progress=None, executor=dask_cluster)


def test_a_check_that_does_not_pickle_says_so(dask_cluster: Any) -> None:
    lock = threading.Lock()

    def recover(v: pm.View) -> bool:
        with lock:
            return True

    c = CrashCheck("locked", one_fence, recover)
    with pytest.raises(InvalidArgumentError, match="cannot be sent to Dask workers"):
        check(c, progress=None, executor=dask_cluster)


def test_small_checks_can_stay_here(dask_cluster: Any) -> None:
    dask_cluster.min_work = 1000
    c = log_check()
    same(check(c, progress=None, executor=dask_cluster), check(c, progress=None))
    assert dask_cluster.sent == 0


def test_without_dask_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from pmemsim.distributed import Dask, DaskUnavailable

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(DaskUnavailable, match=r"pip install 'pmemsim\[dask\]'"):
        Dask("local:2")


@pytest.mark.parametrize(
    ("text", "address", "workers"),
    [
        ("tcp://10.0.0.1:8786", "tcp://10.0.0.1:8786", None),
        ("node7:8786", "tcp://node7:8786", None),
        ("tls://[::1]:8786", "tls://[::1]:8786", None),
        ("local", None, None),
        ("local:3", None, 3),
    ],
)
def test_scheduler_spellings(text: str, address: str | None, workers: int | None) -> None:
    from pmemsim.distributed import Scheduler

    s = Scheduler.parse(text)
    assert (s.address, s.workers) == (address, workers)


@pytest.mark.parametrize("text", ["", "local:0", "local:x", "http://x:1", "node7", "tcp://"])
def test_bad_scheduler_spellings_are_refused(text: str) -> None:
    from pmemsim.distributed import Scheduler

    with pytest.raises(InvalidArgumentError, match="--scheduler"):
        Scheduler.parse(text)


def test_the_environment_names_the_scheduler() -> None:
    from pmemsim.distributed import scheduler_from

    env = {"PMEMSIM_SCHEDULER": "local:2"}
    assert scheduler_from(None, env) is not None
    assert str(scheduler_from(None, env)) == "local:2"
    assert scheduler_from(None, {}) is None
    assert str(scheduler_from("tcp://a:1", env)) == "tcp://a:1"  # the option wins
    assert scheduler_from("", env) is None  # an empty option: no cluster
    with pytest.raises(InvalidArgumentError, match="PMEMSIM_SCHEDULER"):
        scheduler_from(None, {"PMEMSIM_SCHEDULER": "nonsense"})


def test_importing_pmemsim_distributed_does_not_import_dask() -> None:
    import subprocess
    import sys

    code = "import sys, pmemsim.distributed; print('distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the command line ----------------------------------------------------------------------


def _json_without_timings(path: Path) -> Any:
    import json

    data = json.loads(path.read_text())

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in (*VARYING, "runs")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(data)


def commands(capsys: pytest.CaptureFixture[str], *argvs: list[str]) -> list[tuple[int, str]]:
    """Each command's exit code and output, all run from this one line: the stacks of
    stores reach past the workload into the caller's frames."""
    from pmemsim.cli import main

    out = []
    for argv in argvs:
        code = main(argv)
        out.append((code, capsys.readouterr().out))
    return out


def test_pmemsim_check_on_a_scheduler_reports_as_inline(
    dask_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    path = str(ROOT / "scenarios" / "cow_node.py")
    address = dask_cluster.client.scheduler.address
    (code, inline), (code_dask, on_dask) = commands(
        capsys,
        ["check", path, "--json", str(tmp_path / "inline.json")],
        ["check", path, "--json", str(tmp_path / "dask.json"), "--scheduler", address],
    )
    assert code == code_dask == 0
    assert f"on the scheduler at {address}, 2 worker(s)" in on_dask.splitlines()[0]
    assert _json_without_timings(tmp_path / "dask.json") == _json_without_timings(
        tmp_path / "inline.json"
    )
    # Every report printed after the table is the same.
    assert (
        on_dask.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
        == (inline.split("\n\n", 1)[1].rsplit("\n\n", 1)[0])
    )


def test_pmemsim_check_takes_the_scheduler_from_the_environment(
    dask_cluster: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pmemsim.cli import main

    address = dask_cluster.client.scheduler.address
    monkeypatch.setenv("PMEMSIM_SCHEDULER", address)
    assert main(["check", str(ROOT / "scenarios" / "cow_node.py"), "-k", "correct"]) == 0
    assert f"on the scheduler at {address}" in capsys.readouterr().out
    # --jobs asks for local processes: the variable is a default, the option wins.
    assert main(["check", str(ROOT / "scenarios" / "cow_node.py"), "--jobs", "2"]) == 0
    assert "on the scheduler" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduler", "nowhere"], "expected tcp://HOST:PORT"),
        (["--scheduler", "local:0"], "local:N needs a number of workers >= 1"),
        (["--scheduler", "local:2", "--jobs", "2"], "give --jobs or --scheduler, not both"),
        (["--scheduler", "tcp://127.0.0.1:1"], "cannot reach the Dask scheduler"),
    ],
)
def test_pmemsim_check_refuses_a_bad_scheduler(
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("distributed", reason="dask is not installed")
    from pmemsim.cli import main
    from pmemsim.distributed import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 0.5)
    assert main(["check", str(ROOT / "scenarios" / "cow_node.py"), *args]) == 2
    out, err = capsys.readouterr()
    assert message in err
    assert out == ""  # refused before the header
    assert "Traceback" not in err


def test_pmemsim_check_without_dask_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from pmemsim.cli import main

    monkeypatch.setitem(sys.modules, "distributed", None)
    path = str(ROOT / "scenarios" / "cow_node.py")
    assert main(["check", path, "--scheduler", "local:2"]) == 2
    assert "pip install 'pmemsim[dask]'" in capsys.readouterr().err


# -- check-log -----------------------------------------------------------------------------

DATA = ROOT / "tests" / "data" / "pmemcheck"
#: Python versions of tests/c's checkers of two of the corpus's programs.
CHECKERS = """
import struct

MASK = (1 << 64) - 1


def raw_flag(img):
    flag, length, sum_ = struct.unpack_from("<3Q", img, 0)
    if flag == 0:
        return True
    if flag != 1 or not 0 < length <= 4096 - 64:
        return False
    s = 1469598103934665603
    for b in bytes(img[64 : 64 + length]):
        s = ((s ^ b) * 1099511628211) & MASK
    return s == sum_


def raw_tail(img):
    magic, capacity, count = struct.unpack_from("<3Q", img, 0)
    if magic != 0x4C494154574152:
        return count == 0
    if count > capacity:
        return False
    for i in range(count):
        r0, r1, r2 = struct.unpack_from("<3Q", img, 64 + 32 * i)
        if r0 == 0 or r2 != r0 ^ r1 ^ 0x9E3779B97F4A7C15:
            return False
    return True
"""


@pytest.mark.parametrize(
    ("log", "checker", "code"),
    [
        ("raw_flag-bug-q.log", "raw_flag", 1),
        ("raw_flag-fixed-q.log", "raw_flag", 0),
        ("raw_tail-bug-q.log", "raw_tail", 1),
        ("raw_tail-fixed-q.log", "raw_tail", 0),
    ],
)
def test_check_log_on_a_scheduler_reports_as_inline(
    dask_cluster: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    log: str,
    checker: str,
    code: int,
) -> None:
    from pmemsim.distributed import executor as executor_module

    monkeypatch.setattr(executor_module, "LOG_BATCH", 8)  # several batches, on both workers
    checkers = tmp_path / "checkers.py"  # by file: it travels by value
    checkers.write_text(CHECKERS)
    args = ["check-log", str(DATA / log), "--checker-py", f"{checkers}:{checker}"]
    args += ["--engine", "exhaustive"]
    address = dask_cluster.client.scheduler.address
    (inline_code, inline), (dask_code, on_dask) = commands(
        capsys,
        [*args, "--json", str(tmp_path / "inline.json")],
        [*args, "--json", str(tmp_path / "dask.json"), "--scheduler", address],
    )
    assert inline_code == dask_code == code
    assert f"on the scheduler at {address}, 2 worker(s)" in on_dask.splitlines()[0]
    assert on_dask.splitlines()[1:-1] == inline.splitlines()[1:-1]  # all but header, timing
    assert _json_without_timings(tmp_path / "dask.json") == _json_without_timings(
        tmp_path / "inline.json"
    )


def test_check_log_in_python_on_a_cluster(dask_cluster: Any) -> None:
    from pmemsim.pmlog import FunctionChecker, Replay, check_log, read_log

    scope: dict[str, Any] = {}
    exec(CHECKERS, scope)
    replay = Replay.of(read_log(str(DATA / "raw_tail-bug-q.log")))
    checker = FunctionChecker(scope["raw_tail"], "raw_tail")
    dask_cluster.log_batch = 4
    inline = check_log(replay, checker, engine="exhaustive")
    on_dask = check_log(replay, checker, engine="exhaustive", executor=dask_cluster)
    assert inline.inconsistent > 0
    assert on_dask.report() == inline.report()
    assert on_dask.as_dict().keys() == inline.as_dict().keys()
    assert dask_cluster.sent > 1
    with pytest.raises(InvalidArgumentError, match="lazy exploration"):
        check_log(replay, checker, engine="lazy", executor=dask_cluster)


# -- the pytest plugin ---------------------------------------------------------------------

INNER = """
import os

PIDS = {pids!r}
REPORT = {report!r}


def one_fence(v):
    for i in range(6):
        v.u64[(i + 1) * 8] = i + 1
        v.u64[0] = i + 1
        v.flush((i + 1) * 64, 8)
        v.flush(0, 8)
        v.drain()


def every_record_there(v):
    with open(PIDS, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    return all(v.u64[(i + 1) * 8] == i + 1 for i in range(v.u64[0]))


def test_it(crash_check):
    r = crash_check(one_fence, every_record_there, expect="inconsistent", strategy="exhaustive")
    with open(REPORT, "w") as f:
        f.write(r.report())
"""


def test_the_pytest_plugin_explores_on_a_scheduler(
    dask_cluster: Any, pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pids, report = tmp_path / "pids", tmp_path / "report"
    pytester.makepyfile(test_inner=INNER.format(pids=str(pids), report=str(report)))
    address = dask_cluster.client.scheduler.address
    reports = []
    for extra in ([], [f"--pmemsim-scheduler={address}"]):
        pids.write_text("")
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *extra)
        result.assert_outcomes(passed=1)
        reports.append(report.read_text())
        ran = {int(x) for x in pids.read_text().split()}
        assert (ran == {os.getpid()}) == (not extra)  # with the option, workers ran it
    assert reports[0] == reports[1] and reports[0]
    assert f"scheduler={address}" in str(result.outlines)


@pytest.mark.parametrize(
    ("value", "message"),
    [("nowhere", "expected tcp://HOST:PORT"), ("local:0", "local:N needs a number")],
)
def test_the_pytest_plugin_refuses_a_bad_scheduler(
    pytester: pytest.Pytester, value: str, message: str
) -> None:
    pytester.makepyfile(test_inner="def test_it():\n    pass\n")
    result = pytester.runpytest_inprocess(f"--pmemsim-scheduler={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in str(result.errlines)


def test_the_pytest_plugin_without_dask_says_how_to_install(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)
    pytester.makepyfile(test_inner="def test_it():\n    pass\n")
    result = pytester.runpytest_inprocess("--pmemsim-scheduler=local:2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "pip install 'pmemsim[dask]'" in str(result.errlines)


def test_check_log_progress_counts_workers(capsys: pytest.CaptureFixture[str]) -> None:
    from pmemsim.cli.log import _progress
    from pmemsim.cli.terminal import Terminal

    class TwoWorkers:
        workers = 2

    show = _progress(Terminal(live=True), TwoWorkers())
    show(4096, 4096)
    assert "4,096 image(s) judged" in capsys.readouterr().err
    show = _progress(Terminal(live=True))
    show(4096, 4096)
    assert "workers" not in capsys.readouterr().err


KILLING_CHECKER = """
import os

CLIENT = {client}
FLAG = {flag!r}


def killing(img):
    if os.getpid() != CLIENT:
        try:
            fd = os.open(FLAG, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            os._exit(3)
    return raw_tail(img)
"""


def test_check_log_with_a_worker_killed_mid_batch_reports_as_inline(
    dask_cluster: Any, tmp_path: Path
) -> None:
    from pmemsim.pmlog import FunctionChecker, Replay, check_log, load_function, read_log

    flag = tmp_path / "killed"
    path = tmp_path / "killing.py"
    path.write_text(CHECKERS + KILLING_CHECKER.format(client=os.getpid(), flag=str(flag)))
    fn = load_function(f"{path}:killing")
    replay = Replay.of(read_log(str(DATA / "raw_tail-bug-q.log")))
    checker = FunctionChecker(fn, "killing")
    dask_cluster.log_batch = 4
    inline = check_log(replay, checker, engine="exhaustive")
    on_dask = check_log(replay, checker, engine="exhaustive", executor=dask_cluster)
    assert flag.exists()  # a worker died, and its batch ran again elsewhere
    assert on_dask.report() == inline.report()


def test_check_log_with_a_base_image_reports_as_inline(dask_cluster: Any, tmp_path: Path) -> None:
    from pmemsim.pmlog import FunctionChecker, Replay, check_log, read_log

    scope: dict[str, Any] = {}
    exec(CHECKERS, scope)
    log = read_log(str(DATA / "raw_tail-bug-q.log"))
    base = tmp_path / "base"
    base.write_bytes(bytes(4096))
    replay = Replay.of(log, base_images={log.files[0].path: str(base)})
    assert replay.pools[0].source == str(base)
    checker = FunctionChecker(scope["raw_tail"], "raw_tail")
    dask_cluster.log_batch = 4
    inline = check_log(replay, checker, engine="exhaustive")
    assert check_log(replay, checker, engine="exhaustive", executor=dask_cluster).report() == (
        inline.report()
    )


def test_a_worker_refuses_a_base_image_it_does_not_have_as_the_client(tmp_path: Path) -> None:
    from pmemsim.distributed.logs import _same_base_images
    from pmemsim.distributed.shipping import WorkerProblem

    base = tmp_path / "base"
    base.write_bytes(bytes(4096))
    _same_base_images([(str(base), 4096, "")])
    with pytest.raises(WorkerProblem, match="is not on this worker"):
        _same_base_images([(str(tmp_path / "elsewhere"), 4096, "")])
    with pytest.raises(WorkerProblem, match="differs on this worker"):
        _same_base_images([(str(base), 8192, "")])
    with pytest.raises(WorkerProblem, match="differs on this worker"):
        _same_base_images([(str(base), 4096, "0" * 128)])


def test_check_log_ships_the_logs_text(
    dask_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log read from a file is read again at each pass; a worker does not have the file
    (here: a relative path, and the workers' folder is another)."""
    from pmemsim.pmlog import FunctionChecker, Replay, check_log, read_log

    scope: dict[str, Any] = {}
    exec(CHECKERS, scope)
    (tmp_path / "here.log").write_bytes((DATA / "raw_tail-bug-q.log").read_bytes())
    monkeypatch.chdir(tmp_path)
    replay = Replay.of(read_log("here.log"))
    checker = FunctionChecker(scope["raw_tail"], "raw_tail")
    dask_cluster.log_batch = 4
    inline = check_log(replay, checker, engine="exhaustive")
    on_dask = check_log(replay, checker, engine="exhaustive", executor=dask_cluster)
    assert on_dask.report() == inline.report()


@pytest.fixture(scope="module")
def c_checkers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tests/c's checkers of raw_flag and raw_tail, as a library and as a program."""
    import shutil
    import subprocess

    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("gcc is not installed: the C checkers cannot be built")
    out = tmp_path_factory.mktemp("c-checkers")
    made = {}
    for name in ("raw_flag", "raw_tail"):
        src = str(ROOT / "tests" / "c" / f"check_{name}.c")
        lib, exe = out / f"libcheck_{name}.so", out / f"check_{name}"
        flags = [cc, "-std=gnu11", "-O2", src]
        for cmd in (
            [*flags, "-DCHECKER_LIB", "-shared", "-fPIC", "-o", str(lib)],
            [*flags, "-o", str(exe)],
        ):
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        made[f"lib:{name}"], made[f"program:{name}"] = lib, exe
    return made


@pytest.mark.parametrize(
    ("log", "checker"),
    [("raw_flag-bug-q.log", "lib:raw_flag"), ("raw_tail-bug-q.log", "program:raw_tail")],
)
def test_check_log_with_c_checkers_on_a_scheduler_reports_as_inline(
    dask_cluster: Any,
    c_checkers: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    log: str,
    checker: str,
) -> None:
    path = c_checkers[checker]
    how = ["--checker-lib", f"{path}:check"] if checker.startswith("lib") else ["--", str(path)]
    address = dask_cluster.client.scheduler.address
    (inline_code, inline), (dask_code, on_dask) = commands(
        capsys,
        ["check-log", str(DATA / log), "--json", str(tmp_path / "inline.json"), *how],
        [
            "check-log",
            str(DATA / log),
            "--json",
            str(tmp_path / "dask.json"),
            "--scheduler",
            address,
            *how,
        ],
    )
    assert inline_code == dask_code == 1
    assert on_dask.splitlines()[1:-1] == inline.splitlines()[1:-1]
    assert _json_without_timings(tmp_path / "dask.json") == _json_without_timings(
        tmp_path / "inline.json"
    )


def test_a_local_cluster_beside_another_says_nothing_of_ports(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Port 8787 taken (another check's LocalCluster): the scheduler's HTTP server takes
    another port; the user's terminal hears nothing of it."""
    import contextlib
    import socket
    import warnings

    from dask_support import dask_or_skip, hard_limit

    dask_or_skip()
    from pmemsim.distributed import Dask

    taken = socket.socket()
    with contextlib.suppress(OSError):  # (taken already: the case itself)
        taken.bind(("", 8787))
    taken.listen()
    try:
        with hard_limit(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Dask("local:1").close()
    finally:
        taken.close()
    assert not [w for w in caught if "8787" in str(w.message)]
    assert "8787" not in capfd.readouterr().err
