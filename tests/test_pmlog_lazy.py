"""check-log's default for Python checkers and recoveries: lazy exploration by read path,
exact like exhaustive exploration, cheaper when the checker reads little."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pmemsim.cli import main
from pmemsim.explore import current_crash
from pmemsim.pmlog import FunctionChecker, Replay, check_log, parse_log, read_log
from pmemsim.pmlog.readpaths import RecordingImage

BASE = 0x10000000
NOFILE = "/nonexistent-pmemsim-test/pool.bin"
DATA = Path(__file__).resolve().parent / "data" / "pmlog"


def log_text(*ops: str) -> str:
    return "|".join(["START", f"REGISTER_FILE;{NOFILE};0x{BASE:x};0x1000;0x0", *ops, "STOP"])


def store(off: int, value: int, size: int = 8) -> str:
    return f"STORE;0x{BASE + off:x};0x{value:x};0x{size:x}"


def flush(off: int, n: int = 64) -> str:
    return f"FLUSH;0x{BASE + off:x};0x{n:x}"


def u64(img: Any, off: int) -> int:
    return int.from_bytes(img[off : off + 8], "little")


def both(text: str, fn: Any) -> tuple[Any, Any]:
    replay = Replay.of(parse_log(text))
    planned = check_log(replay, FunctionChecker(fn, "f"), engine="exhaustive")
    lazy = check_log(replay, FunctionChecker(fn, "f"))
    return planned, lazy


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("store"), st.integers(0, 5), st.integers(1, 3)),
        st.tuples(st.just("flush"), st.integers(0, 5), st.just(0)),
        st.tuples(st.just("fence"), st.just(0), st.just(0)),
    ),
    max_size=16,
)


@settings(max_examples=40, derandomize=True, deadline=None)
@given(ops=OPS, guard=st.integers(0, 5), guarded=st.integers(0, 5), want=st.integers(1, 3))
def test_lazy_and_exhaustive_give_the_same_verdict_and_minimal_crash(
    ops: list[tuple[str, int, int]], guard: int, guarded: int, want: int
) -> None:
    records = []
    for kind, line, value in ops:
        if kind == "store":
            records.append(store(64 * line, value))
        elif kind == "flush":
            records.append(flush(64 * line))
        else:
            records.append("FENCE")

    def invariant(img: Any) -> bool:
        # "a nonzero word in the guard line means the guarded line holds `want`"
        return u64(img, 64 * guard) == 0 or u64(img, 64 * guarded) >= want

    planned, lazy = both(log_text(*records), invariant)
    assert lazy.verdict == planned.verdict and lazy.exact and planned.exact
    assert lazy.crash_points == planned.crash_points
    assert lazy.images_possible == planned.images_possible
    assert lazy.images_checked <= planned.images_checked
    if planned.minimal is not None:
        assert lazy.minimal is not None
        assert lazy.minimal.token == planned.minimal.token
        assert lazy.minimal.verdict == planned.minimal.verdict == "returned False"


def test_a_checker_reading_one_line_runs_once_per_content_of_that_line() -> None:
    # Ten lines in flight in one epoch: 1,024 images; the checker reads line 0 alone.
    text = log_text(*[store(64 * i, i + 1) for i in range(10)], flush(0, 640), "FENCE")
    planned, lazy = both(text, lambda img: u64(img, 0) in (0, 1))
    # (The end point's one image, all persisted, was judged before the fence already.)
    assert planned.images_checked == 1024
    assert lazy.verdict == planned.verdict == "consistent"
    assert lazy.images_checked == 2  # line 0 with and without its store
    assert lazy.images_possible == planned.images_possible


def test_crash_info_and_markers_reach_a_lazy_checker() -> None:
    text = log_text("tx.BEGIN", store(0, 1), flush(0), "FENCE", "tx.END", store(64, 2))
    seen: set[tuple[object, str]] = set()

    def note(img: Any) -> bool:
        info = current_crash()
        assert info is not None
        seen.add((info.markers, os.environ["PMREORDER_MARKERS"]))
        return u64(img, 0) in (0, 1)

    r = check_log(Replay.of(parse_log(text)), FunctionChecker(note, "n"))
    assert r.engine == "lazy" and r.verdict == "consistent"
    # The checker asked which markers were open, so each point has runs of its own.
    assert seen == {(("tx",), "tx.BEGIN"), ((), "tx.BEGIN|tx.END")}


def test_a_checker_that_needs_a_buffer_is_explored_by_plan() -> None:
    bad = log_text(
        store(12, 1, 4), store(0, 1, 4), store(4, 1, 4), store(8, 1, 4), flush(0), "FENCE"
    )

    def abc(img: Any) -> bool:
        a, b, c, flag = struct.unpack_from("<IIII", img, 0)  # needs a real buffer
        return flag == 0 or a == b == c == 1

    planned, lazy = both(bad, abc)
    assert lazy.verdict == planned.verdict == "inconsistent"
    assert lazy.minimal is not None and planned.minimal is not None
    assert lazy.minimal.token == planned.minimal.token
    assert "reads its image as a buffer" in lazy.fallback and "then exhaustive" in lazy.engine
    assert "explored by plan, not lazily" in lazy.report()


def test_the_recording_image_reads_like_a_memoryview() -> None:
    from pmemsim.explore.lazy import Observation

    obs = Observation([64], lambda m: m)
    data = bytes(range(200))
    img = RecordingImage(memoryview(data), obs, 0)
    assert len(img) == 200 and img[5] == 5 and img[-1] == 199 and img[2:4] == b"\x02\x03"
    assert img[::50] == data[::50] and bytes(img) == data and img.tobytes() == data
    assert list(img)[:3] == [0, 1, 2] and img == data and img.hex() == data.hex()
    assert int.from_bytes(img[8:16], "little") == int.from_bytes(data[8:16], "little")
    assert obs.events[0][:2] == (0, 0) and any(e[1] == 3 for e in obs.events)  # line 3: 199


def test_the_recovery_of_a_scenario_is_explored_lazily_on_the_simulator(
    tmp_path: Path, capsys: Any
) -> None:
    scenario = Path(__file__).resolve().parent.parent / "scenarios" / "append_log.py"
    name = "append_log: record and tail under one fence"
    log = tmp_path / "one.log"
    out = tmp_path / "r.json"
    assert main(["export-log", "--scenario", f"{scenario}::{name}", "-o", str(log)]) == 0
    rec = ["--recovery", f"{scenario}::{name}"]
    assert main(["check-log", str(log), *rec, "--json", str(out)]) == 1
    lazy = capsys.readouterr().out
    assert "engine lazy" in lazy and "read path(s)" in lazy
    planned_out = tmp_path / "p.json"
    assert (
        main(["check-log", str(log), *rec, "--engine", "exhaustive", "--json", str(planned_out)])
        == 1
    )
    import json

    a, b = json.loads(out.read_text()), json.loads(planned_out.read_text())
    assert a["verdict"] == b["verdict"] == "inconsistent"
    assert a["minimal"]["token"] == b["minimal"]["token"]
    assert a["images_checked"] < b["images_checked"]


def test_a_real_log_lazily() -> None:
    def ok(img: Any) -> bool:
        return u64(img, 8) == 0 or u64(img, 0x40) == 42

    r = check_log(
        Replay.of(read_log(str(DATA / "append-bug-stderr.log"))), FunctionChecker(ok, "ok")
    )
    assert r.engine == "lazy" and r.verdict == "inconsistent"
    assert r.minimal is not None and r.minimal.lost[0].source == "append.c:21 in append_record"
