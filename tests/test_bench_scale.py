"""bench/bench_scale.py's own logic: which tools run, which measure a comparison reads, the
pmreorder wrapper's one fix, and one tiny run end to end (both measures, the baseline)."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
bench_scale: Any = importlib.import_module("bench_scale")
pmreorder_lib: Any = importlib.import_module("pmreorder_lib")


def test_tools_keep_their_baseline_twins() -> None:
    assert bench_scale.chosen_tools(["lib-acc"], False) == ["lib-acc"]
    assert bench_scale.chosen_tools(["lib-acc", "pmreorder-lib-acc"], True) == [
        "lib-acc",
        "base:lib-acc",
        "pmreorder-lib-acc",
    ]
    assert bench_scale.chosen_tools(["base:py-acc", "py-acc"], True) == ["base:py-acc", "py-acc"]


def test_tools_refused_by_name() -> None:
    assert "unknown tool 'lib-fast'" in bench_scale.check_tools("lib-acc,lib-fast", False)
    assert "needs --baseline" in bench_scale.check_tools("base:lib-acc", False)
    assert "needs --baseline" in bench_scale.check_tools("base:pmreorder-lib-acc", True)
    assert bench_scale.check_tools("lib-acc, base:lib-acc", True) == ["lib-acc", "base:lib-acc"]


def _result(tool: str, after: float, whole: float, whole_status: str = "ok") -> Any:
    r = bench_scale.Result("chosen", "1 x 4, 64 MiB", tool, 1, 4, 64 << 20, "ok")
    r.seconds, r.whole_seconds, r.whole_status = after, whole, whole_status
    return r


def test_each_measure_compared_on_its_own_times() -> None:
    rows = [_result("lib-acc", 0.01, 0.15), _result("pmreorder-lib-acc", 0.02, 0.05)]
    pair = (("lib-acc", "pmreorder-lib-acc"),)
    (after,) = bench_scale.compare(rows, pair, "after")
    (whole,) = bench_scale.compare(rows, pair, "whole")
    assert after["shapes"][0]["won"] and after["shapes"][0]["ratio"] == pytest.approx(2.0)
    assert not whole["shapes"][0]["won"] and whole["shapes"][0]["ratio"] == pytest.approx(1 / 3)
    rows[1].whole_status = "timeout"  # pmreorder did not finish: pmemsim wins that measure
    (whole,) = bench_scale.compare(rows, pair, "whole")
    assert whole["shapes"][0]["won"] and whole["shapes"][0]["ratio"] is None
    met = {(t["measure"], t["met"]) for t in bench_scale.targets(rows)}
    assert met == {("after", True), ("whole", True)}


def test_wrapper_hands_pmreorder_bytes() -> None:
    seen: list[object] = []

    class LibChecker:
        def check_consistency(self, filename: object) -> int:
            seen.append(filename)
            return 0

    module = types.ModuleType("consistencycheckwrap")
    module.LibChecker = LibChecker  # type: ignore[attr-defined]
    pmreorder_lib.patch_lib_checker(module)
    assert LibChecker().check_consistency("/dev/shm/pool") == 0
    assert seen == [b"/dev/shm/pool"]


def test_tiny_run_measures_both_ways(capsys: pytest.CaptureFixture[str]) -> None:
    """py-acc and its twin from this checkout as the baseline: every row timed both ways."""
    argv = ["--shape", "1x1@4K", "--tools", "py-acc,record", "--baseline", str(ROOT)]
    assert bench_scale.main([*argv, "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "whole run (exec to exit, as a user waits)" in out
    data = json.loads(out.rsplit("BENCH_JSON ", 1)[1])
    rows = {r["tool"]: r for r in data["results"]}
    assert list(rows) == ["py-acc", "base:py-acc", "record", "base:record"]
    for tool in ("py-acc", "base:py-acc"):
        row = rows[tool]
        assert (row["status"], row["whole_status"]) == ("ok", "ok")
        assert 0 < row["seconds"] < row["whole_seconds"]
        assert (row["checks"], row["distinct"], row["possible"]) == (2, 2, 3)
    assert rows["record"]["whole_status"] == "none"
    assert rows["record"]["checks"] == 0 and rows["record"]["possible"] == 3


def test_a_baseline_runs_its_own_code_whatever_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m pmemsim`` imports from the current folder before PYTHONPATH: run from
    this checkout, the baseline's whole runs were this checkout's code. A baseline whose
    ``python -m pmemsim`` exits 3 must show it."""
    import shutil

    base = tmp_path / "checkout"
    for part in ("pmemsim", "backends"):
        shutil.copytree(ROOT / part, base / part, ignore=shutil.ignore_patterns("__pycache__"))
    main_py = base / "pmemsim" / "__main__.py"
    main_py.write_text("raise SystemExit(3)\n" + main_py.read_text())
    monkeypatch.chdir(ROOT)
    argv = ["--shape", "1x1@4K", "--tools", "py-acc", "--baseline", str(base), "--repeat", "1"]
    bench_scale.main(argv)
    data = json.loads(capsys.readouterr().out.rsplit("BENCH_JSON ", 1)[1])
    rows = {r["tool"]: r for r in data["results"]}
    assert rows["py-acc"]["whole_status"] == "ok"
    assert rows["base:py-acc"]["whole_status"].startswith("failed: exit 3")
    assert rows["base:py-acc"]["status"] == "ok"  # the after-start-up child imports no __main__


def test_a_library_childs_worker_starts_before_its_imports_as_the_cli_starts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started once the child had imported pmemsim, the worker kept the child waiting some
    14 ms right before its clock, and the check ran on cold caches (a short check's first
    images 0.2 ms slower). The child starts it first thing, as ``pmemsim.cli.run`` does,
    and its checker takes that worker."""
    from pmemsim.pmlog import forked, workers

    library = bench_scale.build_library(tmp_path)
    if library is None:
        pytest.skip("no C compiler to build the checker library")
    log = tmp_path / "small.log"
    bench_scale.write_log(log, tmp_path / "pool", bench_scale.Shape("small", 3, 2, 4096, 4096))
    taken: list[object] = []
    take = forked.take_early

    def take_early(*args: str) -> object:
        taken.append(take(*args))
        return taken[-1]

    monkeypatch.setattr(forked, "take_early", take_early)
    monkeypatch.setattr(workers, "take_early", take_early)
    workers.close_spares()
    try:
        got = bench_scale.child_pmemsim({"tool": "lib-acc", "library": library, "log": str(log)})
    finally:
        forked.end_early()  # (one the checker did not take)
        workers.close_spares()
    assert got["verdict"] == "consistent" and got["checks"] > 0
    assert len(taken) == 1 and taken[0] is not None


#: An after-start-up child's check as bench_scale.child_pmemsim runs it (argv: the checker's
#: kind, the engine, the log, the library): the modules of pmemsim's that the check imported,
#: LAZY and the checker loaded first, and whether it ran speculatively.
LAZY_CHILD = """
import importlib, json, sys

sys.path.insert(0, {bench!r})
import bench_scale

import pmemsim.pmlog

for name in bench_scale.LAZY:
    importlib.import_module(name)
import pmemsim.pmlog.check as check
from pmemsim.pmlog import FunctionChecker, LibChecker, Replay, check_log, parse_log

kind, engine, log, library = sys.argv[1:]
if kind == "lib":
    checker = LibChecker.parse(library + ":ok")
    checker.loaded()
else:
    checker = FunctionChecker(lambda image: True, "trivial")
asked = []
worth = check.worth_speculating
check.worth_speculating = lambda *args: asked.append(worth(*args)) or asked[-1]
before = set(sys.modules)
with open(log) as f:
    r = check_log(Replay.of(parse_log(f.read())), checker, engine=engine)
new = sorted(
    m for m in set(sys.modules) - before if m.partition(".")[0] in ("pmemsim", "pmemsim_backends")
)
print(json.dumps({{"new": new, "verdict": r.verdict, "speculated": any(asked)}}))
"""


def test_lazy_names_every_module_a_check_imports_on_first_use(tmp_path: Path) -> None:
    """The after-start-up child imports LAZY before its clock: a module the check imports
    on first use that LAZY does not name is timed as the check's. Each way the bench
    checks (a Python or a library checker, each engine, a library checker's log long
    enough to run speculatively or not) in a fresh interpreter."""
    import subprocess

    from pmemsim.pmlog.forked import SPECULATE_FROM

    shape = bench_scale.Shape
    small = tmp_path / "small.log"
    bench_scale.write_log(small, tmp_path / "pool", shape("small", 3, 2, 4096, 4096))
    # (5 operations an epoch: 2 stores, 2 flushes, a fence)
    long = tmp_path / "long.log"
    bench_scale.write_log(
        long, tmp_path / "pool", shape("long", SPECULATE_FROM // 5 + 1, 2, 4096, 4096)
    )
    library = bench_scale.build_library(tmp_path)
    cases = [("py", engine, small, False) for engine in ("exhaustive", "accumulative")]
    if library is not None:
        cases += [
            ("lib", engine, log, speculative)
            for engine in ("exhaustive", "accumulative")
            for log, speculative in ((small, False), (long, True))
        ]
    script = LAZY_CHILD.format(bench=str(ROOT / "bench"))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, kind, engine, str(log), str(library)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for kind, engine, log, _ in cases
    ]
    unnamed = {}
    try:
        for (kind, engine, log, speculative), child in zip(cases, children, strict=True):
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            got = json.loads(out)
            assert (got["verdict"], got["speculated"]) == ("consistent", speculative)
            if got["new"]:
                unnamed[f"{kind} {engine} {log.stem}"] = got["new"]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert unnamed == {}, "bench_scale.LAZY misses what these checks imported"
    if library is None:
        pytest.skip("no C compiler: the library checker's imports were not looked at")


def test_a_budget_adds_rounds_while_they_fit() -> None:
    assert bench_scale.another_round(0, 3, 0.0, 0.0)
    assert bench_scale.another_round(2, 3, 50.0, 0.0)  # the least, whatever the time
    assert not bench_scale.another_round(3, 3, 1.0, 0.0)  # no budget: --repeat rounds
    assert bench_scale.another_round(3, 3, 3.0, 4.0)  # a fourth ends near 4 s
    assert not bench_scale.another_round(3, 3, 3.3, 4.0)  # one would end past it
    assert not bench_scale.another_round(0, 0, 0.0, 4.0)  # (none made: none to go by)


def test_a_budget_measures_a_short_shape_more_than_repeat_times(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--shape", "1x1@4K", "--tools", "py-acc", "--repeat", "2", "--interleave"]
    assert bench_scale.main([*argv, "--budget", "4"]) == 0
    data = json.loads(capsys.readouterr().out.rsplit("BENCH_JSON ", 1)[1])
    assert data["budget"] == 4
    (row,) = data["results"]
    # A round of py-acc (its two children) takes well under a second here.
    assert row["repeats"] > 2 and row["status"] == "ok"


def test_a_budget_without_interleaving_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_scale.main(["--shape", "1x1@4K", "--budget", "4"])
    assert exc.value.code == 2
    assert "--budget" in capsys.readouterr().err
