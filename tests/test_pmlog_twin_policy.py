"""When check-log's durability self-check runs in a forked twin (pmemsim.pmlog.twin): only
when the user left the CPUs to check-log (no --jobs), not with PMEMSIM_TWIN=0, and always at
a lower priority than the check it shadows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from helpers import check_log_cli

from pmemsim.pmlog import forked
from pmemsim.pmlog import twin as twin_module
from pmemsim.pmlog.check import check_log
from pmemsim.pmlog.checkers import FunctionChecker
from pmemsim.pmlog.grammar import parse_log
from pmemsim.pmlog.replay import Replay

BASE = 0x10000000


def _log(path: Path) -> str:
    records = ["START", f"REGISTER_FILE;{path / 'pool'};0x{BASE:x};0x1000;0x0"]
    for i in range(8):
        line = BASE + (i % 4) * 64
        records += [f"STORE;0x{line:x};0x{i + 1:x};0x8", f"FLUSH;0x{line:x};0x40", "FENCE"]
    return "|".join([*records, "STOP"])


@pytest.fixture
def twins(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every log is long enough for a twin and two CPUs are there; the twins started are
    counted."""
    monkeypatch.setattr(forked, "TWIN_FROM", 1)
    monkeypatch.setattr(forked, "_cpus", lambda: 2)
    monkeypatch.delenv(forked.TWIN_ENV, raising=False)
    started: list[int] = []
    original = twin_module.Twin.__init__

    def counted(self: Any, *args: Any) -> None:
        original(self, *args)
        started.append(self.pid)

    monkeypatch.setattr(twin_module.Twin, "__init__", counted)
    return started


def _cli(folder: Path, *args: str) -> int:
    return check_log_cli(folder, _log(folder), *args)[0]


def test_jobs_given_keeps_the_self_check_in_process(twins: list[int], tmp_path: Path) -> None:
    if not forked._alone():
        pytest.skip("another thread runs in this process: no fork")
    assert _cli(tmp_path) == 0
    assert len(twins) == 1  # left to check-log: the self-check on the free CPU
    for jobs in ("1", "2"):
        assert _cli(tmp_path, "--jobs", jobs) == 0
    assert len(twins) == 1  # --jobs 1 (or N) given: one CPU per job, none more


def test_pmemsim_twin_0_keeps_the_self_check_in_process(
    twins: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(forked.TWIN_ENV, "0")
    assert _cli(tmp_path) == 0
    assert twins == []


def test_check_log_twin_false_keeps_the_self_check_in_process(twins: list[int]) -> None:
    if not forked._alone():
        pytest.skip("another thread runs in this process: no fork")
    replay = Replay.of(parse_log(_log(Path("/nonexistent-pmemsim-test"))))
    ok = FunctionChecker(lambda image: True, "ok")
    assert check_log(replay, ok, twin=False).inconsistent == 0
    assert twins == []
    assert check_log(replay, ok).inconsistent == 0
    assert len(twins) == 1


def test_the_twin_runs_at_a_lower_priority(
    twins: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not forked._alone():
        pytest.skip("another thread runs in this process: no fork")
    seen = tmp_path / "nice"
    real = twin_module._replay

    def noted(*args: Any) -> Any:  # in the twin
        seen.write_text(str(os.nice(0)))
        return real(*args)

    monkeypatch.setattr(twin_module, "_replay", noted)
    assert _cli(tmp_path) == 0
    assert len(twins) == 1
    assert int(seen.read_text()) == min(os.nice(0) + forked.TWIN_NICE, 19)
