"""Worker processes end before their image files' folder is removed."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from pmemsim.pmlog import serve
from pmemsim.pmlog.check import check_log
from pmemsim.pmlog.checkers import FunctionChecker
from pmemsim.pmlog.grammar import parse_log
from pmemsim.pmlog.replay import Replay

BASE = 0x10000000
# One crash point with two images: fewer than the three workers.
LOG = "|".join(
    [
        "START",
        f"REGISTER_FILE;/nonexistent-pmemsim-test/pool;0x{BASE:x};0x1000;0x0",
        f"STORE;0x{BASE:x};0x1;0x8",
        "STOP",
    ]
)


def test_a_worker_given_no_image_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that was given no image may still be making its image files when the check
    ends: it was left to exit on its own, and made them in a folder already removed (or
    while it was being removed: "Directory not empty")."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    made = serve.Files.__init__

    def slow(self: Any, *args: Any) -> None:  # in the worker: a slow start
        time.sleep(0.3)
        made(self, *args)

    monkeypatch.setattr(serve.Files, "__init__", slow)
    r = check_log(Replay.of(parse_log(LOG)), FunctionChecker(lambda image: True, "ok"), jobs=3)
    assert r.images_checked == 2 and r.inconsistent == 0
    time.sleep(0.6)  # what a worker left running would make by now
    assert list(tmp_path.iterdir()) == []
