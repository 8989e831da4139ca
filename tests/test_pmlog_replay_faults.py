"""What the replay costs in page faults: a log whose stores are spread over a pool touches
every page of the image buffer, and each page should fault once (for the store's write),
not twice (a read of a line's content first maps the zero page, which the write then
faults on again: 1.7 us more a page on this VM, 4% of a check of 30,000 epochs spread over
64 MiB)."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from pmemsim.pmlog import Replay, parse_log
from pmemsim.pmlog import fastreplay as fast
from pmemsim.pmlog.check import _image

BASE = 0x10000000
PAGES = 2_000


def _spread(pages: int) -> str:
    """One store an epoch, each to a page of its own."""
    ops = "".join(
        f"STORE;0x{BASE + 4096 * i + 64:x};0x{i + 1:x};0x8|FLUSH;0x{BASE + 4096 * i + 64:x};0x40|"
        "FENCE|"
        for i in range(pages)
    )
    size = 4096 * pages
    return f"START|REGISTER_FILE;/nonexistent-pmemsim-test/p;0x{BASE:x};0x{size:x};0x0|{ops}STOP\n"


def _replayed(replay: Replay) -> tuple[int, int]:
    """The page faults of a replay of ``replay`` into a new image, and its crash points."""
    img = _image(replay)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        trace = fast.record_log(replay, img, twin=False)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, trace.point_count
    finally:
        img.close()


def _pages_of_4k() -> bool:
    """Whether anonymous memory faults a 4 KiB page at a time (not huge pages always)."""
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return thp.exists() and "[always]" not in thp.read_text()


@pytest.mark.skipif(
    not _pages_of_4k(), reason="faults counted per 4 KiB page (Linux, huge pages not always on)"
)
def test_a_spread_logs_replay_faults_each_page_it_writes_once() -> None:
    replay = Replay.of(parse_log(_spread(PAGES)))
    _replayed(replay)  # (this process's heap grown first)
    faulted, points = _replayed(replay)
    assert points == PAGES + 1
    # Each page's write, and a little of the heap's (twice per page before: at least 4,000).
    assert PAGES <= faulted < 1.5 * PAGES, faulted
