"""The durability self-check compares every line its own model changed since the last crash
point, not only those the lean replay says it changed: a replay that changes a line without
saying so is caught at the next crash point (pmemsim.pmlog.selfcheck's verify, whose model
names the lines it changed in one set)."""

from __future__ import annotations

from typing import Any

import pytest

from pmemsim.explore.durability import DurabilityViolation
from pmemsim.pmlog import Replay, parse_log
from pmemsim.pmlog import fastreplay as fast
from pmemsim.pmlog.check import _image

BASE = 0x10000000
LOG = "|".join(
    [
        "START",
        f"REGISTER_FILE;/nonexistent-pmemsim-touched/p.bin;0x{BASE:x};0x2000;0x0",
        f"STORE;0x{BASE:x};0x1;0x8",
        f"STORE;0x{BASE + 0x1040:x};0x2;0x8",
        f"FLUSH;0x{BASE:x};0x40",
        f"FLUSH;0x{BASE + 0x1040:x};0x40",
        "FENCE",  # crash point 0, before it
        f"STORE;0x{BASE + 0x80:x};0x3;0x8",
        f"FLUSH;0x{BASE + 0x80:x};0x40",
        "FENCE",  # crash point 1
        f"STORE;0x{BASE + 0x8:x};0x4;0x8",
        f"FLUSH;0x{BASE:x};0x40",
        "FENCE",  # crash point 2: line 0 in flight again
        "STOP",
    ]
)


def _replay() -> int:
    replay = Replay.of(parse_log(LOG))
    img = _image(replay)
    try:
        return fast.record_log(replay, img, "barriers", lambda p: None, twin=False).point_count
    finally:
        img.close()


def test_the_log_is_fine_as_it_is() -> None:
    assert _replay() == 4


@pytest.mark.parametrize("line", [0x0, 0x1040])
def test_a_line_the_replay_changed_without_saying_so_is_caught_at_the_next_point(
    monkeypatch: pytest.MonkeyPatch, line: int
) -> None:
    # The first fence makes the line durable; the replay then garbles its buffer there and
    # leaves it out of the lines it says it changed. Only the model's own note of what its
    # fence changed names the line at crash point 1 (line 0 is in flight again at point 2).
    original = fast._Machine._fold

    def fold(self: Any, p: Any) -> None:
        first = self.barriers == 1
        original(self, p)
        if first:
            p.buf[line + 3] ^= 0x5A
            self.changed_lines.discard((p.index, line))

    monkeypatch.setattr(fast._Machine, "_fold", fold)
    with pytest.raises(DurabilityViolation, match=r"crash point 1: .*pmemsim bug"):
        _replay()
