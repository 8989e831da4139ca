"""check() streams a CrashCheck's crash points (jobs=1): each point is explored as the
recording reaches it and dropped after, so memory does not grow with the program. The
report must be the one exploring the whole recorded trace gives (``executor=Inline()``)."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest
from helpers import epochs_workload

import pmemsim as pm
from pmemsim.explore import CrashCheck, check, judges, marker
from pmemsim.explore import engine as engine_module
from pmemsim.explore.executor import Inline

ROOT = Path(__file__).resolve().parent.parent


def _same(c: CrashCheck) -> None:
    streamed = check(c, progress=None)
    kept = check(c, progress=None, executor=Inline())
    assert streamed.report() == kept.report()
    timing = {"seconds": 0, "images_per_second": 0}
    assert streamed.as_dict() | timing == kept.as_dict() | timing
    assert streamed.recovery_runs == kept.recovery_runs


def _many_points(v: pm.View) -> None:
    for i in range(60):
        with marker("put" if i % 2 else "grow"):
            v.u64[(i % 8) * 8 + i // 8] = i + 1
            v.persist((i % 8) * 64, 64) if i % 3 else None


def _recover(v: pm.View) -> bool:
    return sum(v.u64[k * 8] for k in range(8)) % 7 != 3


@pytest.mark.parametrize(
    "options",
    [
        {"strategy": "lazy"},
        {"strategy": "exhaustive"},
        {"strategy": "random:5", "seed": 3},
        {"strategy": "exhaustive", "faults": ("unsafe_shutdown",)},
        {"strategy": "exhaustive", "faults": ("badblock",)},
        {"strategy": "lazy", "markers": {"grow": "exhaustive"}},
        {"strategy": "lazy", "recovery_crash_depth": 1},
        {"strategy": "lazy", "crash_points": "operations"},
        {"strategy": "exhaustive", "max_images": 3},
    ],
    ids=str,
)
def test_a_streamed_check_reports_what_the_whole_trace_does(options: dict[str, Any]) -> None:
    _same(CrashCheck("s", _many_points, _recover, **options))


def _scenario_checks() -> list[CrashCheck]:
    out = []
    for path in sorted((ROOT / "scenarios").glob("*.py")):
        if path.name.startswith("_"):
            continue
        name = f"pmemsim_scenario_{path.stem}"  # as tests/test_scenarios.py loads them
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        out += [c for c in vars(module).values() if isinstance(c, CrashCheck)]
    return out


def test_the_catalogue_reports_the_same_streamed() -> None:
    checks = _scenario_checks()
    assert len(checks) > 20
    for c in checks:
        _same(c)


def test_a_streamed_check_keeps_only_the_states_it_reports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pmemsim_backends.sim import SimBackend

    states: list[weakref.ref[object]] = []
    most = [0]
    runs = [0]
    make_state = SimBackend.crash_state
    judge = judges._PoolJudge.verdict

    def made(self: Any, *a: Any, **kw: Any) -> Any:
        st = make_state(self, *a, **kw)
        states.append(weakref.ref(st))
        return st

    def verdict(self: Any, *a: Any, **kw: Any) -> Any:
        runs[0] += 1
        if runs[0] % 40 == 0:
            gc.collect()
            most[0] = max(most[0], sum(ref() is not None for ref in states))
        return judge(self, *a, **kw)

    def workload(v: pm.View) -> None:
        for i in range(200):
            v.u64[i % 64] = i + 1
            v.persist((i % 64) * 8, 8)

    monkeypatch.setattr(SimBackend, "crash_state", made)
    monkeypatch.setattr(judges._PoolJudge, "verdict", verdict)
    c = CrashCheck("keep", workload, lambda v: v.u64[0] != 65, strategy="exhaustive")
    r = check(c, progress=None)
    assert r.verdict == "inconsistent" and r.crash_points == 201 and len(states) >= 201
    assert r.minimal is not None
    # While it ran: the point explored, the one before, the failures found so far (not
    # every state recorded, as exploring a whole trace keeps them).
    assert 0 < most[0] <= 4, most


def test_a_workload_that_fails_after_some_points_still_raises() -> None:
    def workload(v: pm.View) -> None:
        v.u64[0] = 1
        v.persist(0, 8)
        raise ValueError("the workload's own bug")

    with pytest.raises(ValueError, match="own bug"):
        check(CrashCheck("w", workload, lambda v: True), progress=None)


@pytest.mark.parametrize(
    "epochs, lines, forks",
    [
        (3, 4, False),  # below the threshold: jobs=2 is jobs=1
        (40, 4, True),  # past it mid-way: the rest shared with a worker
        (25, 4, True),  # past it near the end: forked there (what is left is not known)
        (1, 9, True),  # one heavy point: forked before it, its images sliced
    ],
)
def test_jobs_explore_inline_until_the_work_is_worth_workers(
    monkeypatch: pytest.MonkeyPatch, epochs: int, lines: int, forks: bool
) -> None:
    from pmemsim.explore import shares

    monkeypatch.setattr(engine_module, "PARALLEL_FROM", 300)
    monkeypatch.setattr(shares, "CHUNK", 32)
    started: list[int] = []
    real = shares.Shares.start

    def start(self: Any) -> None:
        started.append(len(self.window) - 1)  # the crash point it forked at
        real(self)

    monkeypatch.setattr(shares.Shares, "start", start)

    def recover(v: pm.View) -> bool:
        return sum(v.u64[k * 8 + 1] for k in range(lines)) % 5 != 3

    c = CrashCheck("jobs", epochs_workload(epochs, lines), recover, strategy="exhaustive", seed=1)
    one = check(c, progress=None)
    two = check(c, progress=None, jobs=2)
    assert bool(started) == forks, started
    assert one.report() == two.report()
    runs = {"seconds": 0, "images_per_second": 0, "recovery_runs": 0}
    assert one.as_dict() | runs == two.as_dict() | runs
    if not forks:
        assert one.recovery_runs == two.recovery_runs
    else:
        assert started[0] == 0 if epochs == 1 else started[0] > 0


def test_a_lazy_check_whose_runs_are_shared_by_its_points_never_forks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thousands of images covered by a few runs: no worker would have anything to do but
    record the workload again."""
    from pmemsim.explore import shares

    monkeypatch.setattr(engine_module, "PARALLEL_FROM", 50)
    started: list[int] = []
    monkeypatch.setattr(shares.Shares, "start", lambda self: started.append(1))
    c = CrashCheck("lazy", epochs_workload(200, 4), lambda v: True)
    r = check(c, progress=None, jobs=2)
    assert r.images_possible > 50 * 20 and r.recovery_runs < 50 and not started


def _pipes() -> int:
    """Pipe ends this process holds (Linux: /proc/self/fd)."""
    import stat

    n = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += stat.S_ISFIFO(os.fstat(int(name)).st_mode)
    return n


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_worker_holds_no_other_workers_pipes() -> None:
    """A worker that held the parent's end of an earlier worker's pipe kept that worker from
    seeing its pipe close: stopping it waited its 50 ms grace, then sent SIGTERM."""
    from pmemsim.explore.workers import Workers

    held = list(Workers(3, lambda: lambda item: _pipes()).map([0, 1, 2]))
    assert len(held) == 3 and held[0] == held[1] == held[2], held
