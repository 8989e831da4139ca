"""The garbage collector during a log's replay (fastreplay._collector_for_the_replay): young
collections at most every YOUNG allocations while it runs, the caller's settings back after
it, and a setting the caller chose (collection off, or rarer) left alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from pmemsim.pmlog.check import check_log
from pmemsim.pmlog.checkers import FunctionChecker
from pmemsim.pmlog.fastreplay import YOUNG
from pmemsim.pmlog.grammar import parse_log
from pmemsim.pmlog.replay import Replay

BASE = 0x10000000
LOG = (
    f"START|REGISTER_FILE;/nonexistent-pmemsim-test/p;0x{BASE:x};0x1000;0x0|"
    f"STORE;0x{BASE:x};0x1;0x8|FLUSH;0x{BASE:x};0x40|FENCE|STOP\n"
)


@pytest.fixture(autouse=True)
def _thresholds_kept() -> Iterator[None]:
    saved = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def _thresholds_seen(change: tuple[int, ...] | None = None) -> list[tuple[int, ...]]:
    """The thresholds the checker saw at each image (it sets ``change`` at the first)."""
    seen: list[tuple[int, ...]] = []

    def checker(image: object) -> bool:
        seen.append(gc.get_threshold())
        if change is not None and len(seen) == 1:
            gc.set_threshold(*change)
        return True

    result = check_log(Replay.of(parse_log(LOG)), FunctionChecker(checker, "seen"))
    assert result.verdict == "consistent" and seen
    return seen


def test_young_collections_are_rarer_during_the_replay_and_as_before_after() -> None:
    gc.set_threshold(700, 10, 10)
    assert set(_thresholds_seen()) == {(YOUNG, 10, 10)}
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("chosen", [(0, 10, 10), (YOUNG * 5, 3, 4)])
def test_a_callers_own_choice_is_left_alone(chosen: tuple[int, int, int]) -> None:
    """Collection turned off, or young collections already rarer: as the caller set it."""
    gc.set_threshold(*chosen)
    assert set(_thresholds_seen()) == {chosen}
    assert gc.get_threshold() == chosen


def test_a_setting_changed_during_the_replay_is_not_undone() -> None:
    gc.set_threshold(700, 10, 10)
    _thresholds_seen(change=(123, 4, 5))
    assert gc.get_threshold() == (123, 4, 5)
