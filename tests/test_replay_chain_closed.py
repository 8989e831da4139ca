"""A replay token that crashes recovery (``point>point``) makes a second judge for the
recovery's crash images; it is closed as the replay ends, however it ends, as the workload's
judge is (tests/test_judge_closed.py). Today that judge opens nothing: here each judge builds
its harness as it is made (the set and source a future judge might hold), and the collector
is off (left_open), so that a judge left open shows."""

from __future__ import annotations

from typing import Any

import pytest

from pmemsim.explore import CrashCheck, judges, replay


def _workload(view: Any) -> None:
    view.u64[0] = 1
    view.persist(0, 8)


def _recover(view: Any) -> None:
    view.u64[1] = 2
    view.persist(8, 8)
    view.u64[2] = 3
    view.persist(16, 8)


def _recover_fails(view: Any) -> None:
    if view.u64[1] == 2:  # (run again on the recovery's crash image, it fails)
        raise ValueError("recovered twice")
    _recover(view)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The judges made from here on, each with its harness built at once."""
    made: list[Any] = []
    init = judges._PoolJudge.__init__

    def opened(self: Any, c: Any) -> None:
        init(self, c)
        self.harness._build()
        made.append(self)

    monkeypatch.setattr(judges._PoolJudge, "__init__", opened)
    return made


@pytest.mark.parametrize(
    ("recover", "failed"), [(_recover, False), (_recover_fails, True)], ids=["passes", "fails"]
)
def test_a_recovery_crashs_judge_is_closed(
    made: list[Any], left_open: Any, recover: Any, failed: bool
) -> None:
    c = CrashCheck("chain", _workload, recover, recovery_crash_depth=1)
    err = replay(c, "chain@1:>2:")
    assert (err is not None) is failed
    assert len(made) == 2  # the workload's judge and the recovery's
    assert left_open() == []


def test_a_recovery_that_fails_as_a_workload_closes_the_judge(
    made: list[Any], left_open: Any
) -> None:
    def fails_recorded(view: Any) -> None:
        raise ValueError("recovery fails")

    c = CrashCheck("chain", _workload, fails_recorded, recovery_crash_depth=1)
    err = replay(c, "chain@1:>0:")
    assert isinstance(err, ValueError)
    assert len(made) == 2
    assert left_open() == []
