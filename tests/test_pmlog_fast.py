"""The lean log replay (pmemsim.pmlog.fastreplay) against the whole simulator, its reference.

Random logs (stores of 1 to 8 bytes at any alignment, runs of stores of one source line,
flushes of every size and alignment, fences, deep syncs, markers, several registered files,
an alias, records outside every file) are replayed both ways: crash points, their states
(units, atoms, options, durable content), every image of each point (bytes and content
keys), lint findings (with their counts, in the simulator's terms and the log's), the
replay's counts, and
check-log's whole result (verdict, minimal crash, counts) must be the same. Then the
durability self-check of the lean path: bugs planted in it are caught.
"""

from __future__ import annotations

import itertools
import json
import os
import types
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pmemsim.errors import PmemError
from pmemsim.explore.durability import DurabilityViolation
from pmemsim.explore.trace import StopRecording
from pmemsim.pmlog import FunctionChecker, Replay, check_log, parse_log, read_log
from pmemsim.pmlog import fastreplay as fast
from pmemsim.pmlog import twin as twin_module
from pmemsim.pmlog.check import _image
from pmemsim.pmlog.grammar import Log
from pmemsim.pmlog.lint import _FLUSH_KINDS, _STORE_KINDS, log_findings

#: More examples, drawn at random (PMEMSIM_FAST_EXAMPLES=2000), for a longer search.
EXAMPLES = int(os.environ.get("PMEMSIM_FAST_EXAMPLES", "30"))
DERANDOMIZE = "PMEMSIM_FAST_EXAMPLES" not in os.environ
BASE = 0x10000000
ALIAS = 0x20000000
FRAMES = ["", ";0x1: put (a.c:1)", ";0x2: get (b.c:2);0x3: main (b.c:9)"]
MARKERS = ["m", "tx.a"]


@st.composite
def logs(draw: st.DrawFn, *, data_file: str) -> str:
    """A random log over one to three files (one of them maybe with content, one maybe
    registered twice)."""
    n = draw(st.integers(1, 3))
    sizes = [draw(st.sampled_from([0x1000, 0x2000])) for _ in range(n)]
    with_data = draw(st.booleans())
    paths = [
        data_file if i == 0 and with_data else f"/nonexistent-pmemsim-fast/f{i}.bin"
        for i in range(n)
    ]
    regs = [
        f"REGISTER_FILE;{paths[i]};0x{BASE + i * 0x100000:x};0x{sizes[i]:x};0x0" for i in range(n)
    ]
    alias = draw(st.booleans())
    if alias:
        regs.append(f"REGISTER_FILE;{paths[0]};0x{ALIAS:x};0x{sizes[0]:x};0x0")
    bases = [BASE + i * 0x100000 for i in range(n)] + ([ALIAS] if alias else [])
    sizes_of = sizes + ([sizes[0]] if alias else [])
    ops: list[str] = []
    open_markers: list[str] = []

    def address() -> int:
        k = draw(st.integers(0, len(bases)))
        if k == len(bases):
            return draw(st.sampled_from([0x30000000, BASE - 4]))  # outside, or across an edge
        # Mostly a few lines, so that lines get several stores; sometimes anywhere.
        if draw(st.booleans()):
            return bases[k] + draw(st.integers(0, 4 * 64 - 1))
        return bases[k] + draw(st.integers(-8, sizes_of[k] + 8))

    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(["S", "S", "S", "S", "R", "T", "F", "F", "N", "N", "D", "M"]))
        if kind == "T":  # a non-temporal store, as pmemcheck logs one: the store, its flush
            size = draw(st.integers(1, 8))
            at = address()
            ops.append(f"STORE;0x{at:x};0x{draw(st.integers(0, 255)):x};0x{size:x}")
            ops.append(f"FLUSH;0x{at:x};0x{size:x}")
        elif kind == "S":
            size = draw(st.integers(1, 8))
            value = draw(st.integers(0, (1 << (8 * size)) - 1))
            frames = draw(st.sampled_from(FRAMES))
            ops.append(f"STORE;0x{address():x};0x{value:x};0x{size:x}{frames}")
        elif kind == "R":  # a run: one source line, each store where the last one ended
            at = address()
            frames = draw(st.sampled_from(FRAMES))
            size = 8 - at % 8  # the first store may be short; the next ones are aligned
            for _ in range(draw(st.integers(2, 5))):
                value = draw(st.integers(0, (1 << (8 * size)) - 1))
                ops.append(f"STORE;0x{at:x};0x{value:x};0x{size:x}{frames}")
                at, size = at + size, 8
        elif kind == "F":
            size = draw(st.sampled_from([0x40, 0x40, 0x40, 0, 1, 0x10, 0x41, 0x80, 0xC8, 0x1000]))
            ops.append(f"FLUSH;0x{address():x};0x{size:x}")
        elif kind == "N":
            ops.append("FENCE")
        elif kind == "D":
            size = draw(st.sampled_from([0, 8, 0x40, 0x100]))
            ops.append(f"DEEP_SYNC;0x{address():x};0x{size:x}")
        elif open_markers and draw(st.booleans()):
            ops.append(f"{open_markers.pop()}.END")
        else:
            name = draw(st.sampled_from(MARKERS))
            open_markers.append(name)
            ops.append(f"{name}.BEGIN")
    ops += [f"{m}.END" for m in reversed(open_markers)]
    return "|".join(["START", *regs, *ops, "STOP"])


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("fast") / "data.bin"
    path.write_bytes(bytes((i * 7 + 3) % 256 for i in range(0x1800)) + bytes(0x800))
    return str(path)


def _images(state: Any, limit: int = 16) -> list[tuple[tuple[int, int], ...]]:
    counts = [len(u.options(state.base(i))) for i, u in enumerate(state.units)]
    out = []
    for combo in itertools.islice(itertools.product(*[range(c) for c in counts]), limit):
        out.append(tuple((i, o) for i, o in enumerate(combo) if o))
    return out


def _summary(point: Any, img: Any, fast_path: bool) -> dict[str, Any]:
    """A crash point as both paths must give it: its place, its state, its images."""
    state = point.state
    units = []
    for i, u in enumerate(state.units):
        base = state.base(i)
        units.append(
            (
                u.medium_index,
                u.offset,
                u.size,
                tuple((a.seq, a.offset, bytes(a.data)) for a in u.wb),
                u.flushed,
                base,
                tuple((o.kept, o.lost) for o in u.options(base)),
            )
        )
    img.move_to(state)
    images = []
    for dev in _images(state):
        img.patch(dev)
        try:
            content = tuple(bytes(img.buffer(m)) for m in range(img.pools))
        finally:
            img.restore(dev)
        # The simulator's own images too (for the lean path: what a recovery maps).
        snaps = tuple(
            state.image(dev).snapshot(state.media[m]).read(0, img.size(m)) for m in range(img.pools)
        )
        assert snaps == content
        images.append((dev, img.key(dev), zlib.crc32(b"".join(content))))
    return {
        "where": (point.index, point.kind, point.position, point.operation, point.markers),
        "units": units,
        "count": state.image_count(),
        "guaranteed": state.guaranteed_image().deviations,
        "images": images,
        "fast": fast_path,
    }


def _record(text: str | Log, mode: str, fast_path: bool) -> dict[str, Any]:
    replay = Replay.of(parse_log(text) if isinstance(text, str) else text)
    img = _image(replay)
    points: list[dict[str, Any]] = []
    last: list[Any] = [None]

    def on_point(point: Any) -> None:
        s = _summary(point, img, fast_path)
        s["shared"] = point.state is last[0]
        last[0] = point.state
        del s["fast"]
        points.append(s)

    try:
        if fast_path:
            trace: Any = fast.record_log(replay, img, mode, on_point, lint=True)
        else:
            trace = replay.record(mode, on_point=on_point, lint=True)
    finally:
        img.close()
    logged = log_findings(replay, trace.findings)
    # Each finding of the log counts as many records as the simulator's counts operations.
    pools = {f"image of {p.resolved}" for p in replay.pools}
    kinds = _STORE_KINDS | _FLUSH_KINDS
    of_log = [f for f in trace.findings if f.source in pools and f.kind.value in kinds]
    for f, lf in zip(of_log, logged, strict=True):
        assert lf.count == len(lf.concerns) == f.count
    return {
        "points": points,
        "count": trace.point_count,
        "lint": [f.as_dict() for f in logged],
        "concerns": [f.concerns for f in logged],
        "findings": [  # (fences with nothing to order are not reported for logs)
            (f.kind, f.source, f.offset, f.length, f.count, tuple(f.places), f.location)
            for f in trace.findings
            if f.kind.value in kinds
        ],
        "replay": (
            replay.operations,
            replay.stores,
            dict(replay.ignored),
            replay.clipped,
            list(replay.marker_names),
            list(replay.marker_ops),
        ),
    }


def _checker(image: Any) -> bool:
    return zlib.crc32(bytes(image)) % 3 != 0


@settings(max_examples=EXAMPLES * 2, derandomize=DERANDOMIZE, deadline=None)
@given(data=st.data())
def test_the_lean_replay_gives_the_simulators_crash_points_images_and_lint(
    data: st.DataObject, data_file: str
) -> None:
    text = data.draw(logs(data_file=data_file))
    mode = data.draw(st.sampled_from(["barriers", "barriers", "operations", "markers"]))
    want = _record(text, mode, fast_path=False)
    got = _record(text, mode, fast_path=True)
    assert got["replay"] == want["replay"]
    assert got["count"] == want["count"]
    for g, w in zip(got["points"], want["points"], strict=True):
        assert g == w
    assert got["lint"] == want["lint"]
    assert got["concerns"] == want["concerns"]
    assert got["findings"] == want["findings"]


def _failing_images_checker(failing: list[bytes], all_files: bool) -> FunctionChecker:
    """A checker that fails a third of the images (by content) and keeps each one it fails."""

    def one(image: Any) -> bool:
        content = bytes(image)
        if zlib.crc32(content) % 3:
            return True
        failing.append(content)
        return False

    def every(images: dict[str, Any]) -> bool:
        return one(b"".join(bytes(images[k]) for k in sorted(images)))

    return FunctionChecker(every if all_files else one, "crc", all_files)


@settings(max_examples=EXAMPLES, derandomize=DERANDOMIZE, deadline=None)
@given(data=st.data())
def test_check_log_gives_the_same_result_both_ways(data: st.DataObject, data_file: str) -> None:
    text = data.draw(logs(data_file=data_file))
    engine = data.draw(
        st.sampled_from(
            [
                "exhaustive",
                "accumulative",
                "reverse-accumulative",
                "random:2",
                "lazy",
                "extremes",
                "flushed-only",
                "persisted",
                "bounded:2",
            ]
        )
    )
    crash_points = data.draw(st.sampled_from(["barriers", "barriers", "operations", "markers"]))
    all_files = data.draw(st.booleans())
    out = []
    for simulator in (False, True):
        failing: list[bytes] = []
        r = check_log(
            Replay.of(parse_log(text)),
            _failing_images_checker(failing, all_files),
            engine=engine,
            crash_points=crash_points,
            max_images=16,
            simulator=simulator,
        )
        d = r.as_dict()
        del d["seconds"]
        out.append((d, r.report(), failing))
    assert out[0] == out[1]


def test_a_crash_point_past_a_fence_whose_own_point_was_not_compared() -> None:
    # Operations mode: the points before the flush and the fence share the store's state
    # (not compared again); the deep sync's point is past the fence, which the self-check
    # once held back as if this point came before it.
    text = "|".join(
        [
            "START",
            f"REGISTER_FILE;/nonexistent-pmemsim-fast/p.bin;0x{BASE:x};0x1000;0x0",
            f"STORE;0x{BASE:x};0x1;0x1",
            f"FLUSH;0x{BASE:x};0x40",
            "FENCE",
            f"DEEP_SYNC;0x{BASE:x};0x8",
            "STOP",
        ]
    )
    assert _record(text, "operations", fast_path=True) == _record(
        text, "operations", fast_path=False
    )


@pytest.mark.parametrize("size", [0x1030, 0x64])
def test_a_pool_of_part_of_a_page_is_refused_as_the_simulator_refuses_it(size: int) -> None:
    text = "|".join(
        [
            "START",
            f"REGISTER_FILE;/nonexistent-pmemsim-fast/p.bin;0x{BASE:x};0x{size:x};0x0",
            f"STORE;0x{BASE:x};0x1;0x8",
            "FENCE",
            "STOP",
        ]
    )
    errors = []
    for simulator in (False, True):
        with pytest.raises(PmemError) as caught:
            check_log(
                Replay.of(parse_log(text)), _failing_images_checker([], False), simulator=simulator
            )
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]


# -- every log of the pmemcheck corpus, both ways -------------------------------------------

CORPUS = Path(__file__).parent / "data" / "pmemcheck"
CORPUS_LOGS = [e["log"] for e in json.loads((CORPUS / "MANIFEST.json").read_text())["logs"]]


@pytest.mark.parametrize("name", CORPUS_LOGS)
def test_every_corpus_log_replays_the_same_both_ways(name: str) -> None:
    want = _record(read_log(str(CORPUS / name)), "barriers", fast_path=False)
    got = _record(read_log(str(CORPUS / name)), "barriers", fast_path=True)
    assert got["replay"] == want["replay"]
    assert got["count"] == want["count"]
    for g, w in zip(got["points"], want["points"], strict=True):
        assert g == w
    assert got["lint"] == want["lint"]
    assert got["concerns"] == want["concerns"]
    assert got["findings"] == want["findings"]


@pytest.mark.parametrize("engine", ["exhaustive", "accumulative"])
@pytest.mark.parametrize("name", CORPUS_LOGS)
def test_every_corpus_log_checks_the_same_both_ways(name: str, engine: str) -> None:
    two = "two_files" in name
    results = []
    for simulator in (False, True):
        failing: list[bytes] = []
        r = check_log(
            Replay.of(read_log(str(CORPUS / name))),
            _failing_images_checker(failing, two),
            engine=engine,
            simulator=simulator,
            max_images=4096,
        )
        d = r.as_dict()
        del d["seconds"]
        results.append((d, r.report(), failing))
    (got, got_report, got_failing), (want, want_report, want_failing) = results
    assert got == want
    assert got_report == want_report
    assert got_failing == want_failing  # the failing images, byte for byte, in order


# -- the self-check catches bugs planted in the lean path ------------------------------------

LOG = "|".join(
    [
        "START",
        f"REGISTER_FILE;/nonexistent-pmemsim-fast/p.bin;0x{BASE:x};0x1000;0x0",
        f"STORE;0x{BASE:x};0x1;0x8",
        f"STORE;0x{BASE + 0x40:x};0x2;0x8",
        f"STORE;0x{BASE + 0x44:x};0x3;0x2",
        f"FLUSH;0x{BASE:x};0x40",
        "FENCE",
        f"STORE;0x{BASE + 0x80:x};0x4;0x8",
        f"FLUSH;0x{BASE + 0x40:x};0x80",
        f"STORE;0x{BASE + 0x48:x};0x6;0x8",  # after the flush: stays in flight
        "FENCE",
        f"STORE;0x{BASE + 0x8:x};0x5;0x8",
        "FENCE",
        "STOP",
    ]
)


def _replay(on_point: Any = lambda p: None, **kw: Any) -> int:
    replay = Replay.of(parse_log(LOG))
    img = _image(replay)
    try:
        return fast.record_log(replay, img, "barriers", on_point, **kw).point_count
    finally:
        img.close()


@pytest.fixture(params=["in process", "twin"])
def where(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The self-check in this process, or in a forked twin (pmemsim.pmlog.twin) whatever
    the log's length and the CPUs; the twins started are counted."""
    started: list[int] = []
    twin = request.param == "twin"
    monkeypatch.setattr(fast, "worth_a_twin", lambda replay: twin)
    original = twin_module.Twin.__init__

    def counted(self: Any, *args: Any) -> None:
        started.append(1)
        original(self, *args)

    monkeypatch.setattr(twin_module.Twin, "__init__", counted)
    return started


def test_the_planted_log_is_fine_as_it_is() -> None:
    assert _replay() == 3


def _plant(monkeypatch: pytest.MonkeyPatch, name: str, make: Any) -> None:
    original = getattr(fast._Machine, name)
    monkeypatch.setattr(fast._Machine, name, make(original))


def _drop_atom(original: Any) -> Any:  # a store's atom is never recorded
    def store(self: Any, pool: int, off: int, data: bytes, frame: Any) -> None:
        original(self, pool, off, data, frame)
        if off == 0x44:
            self.pools[pool].lines[0x40].pop()

    return store


def _fold_unflushed(original: Any) -> Any:  # a fence makes an unflushed line durable
    def fold(self: Any, p: Any) -> None:
        for line in p.lines:
            p.flush_seq.setdefault(line, self.seq + 1)
        original(self, p)

    return fold


def _skip_fold(original: Any) -> Any:  # a flushed and fenced line stays in flight
    def fold(self: Any, p: Any) -> None:
        p.flush_seq.pop(0x40, None)
        original(self, p)

    return fold


def _wrong_buffer(original: Any) -> Any:  # the image buffer gets a wrong byte
    def store(self: Any, pool: int, off: int, data: bytes, frame: Any) -> None:
        original(self, pool, off, data, frame)
        if off == 0x80:
            self.pools[pool].buf[0x81] ^= 0xFF

    return store


def _wrong_base(original: Any) -> Any:  # a line's durable content is not what it held
    def store(self: Any, pool: int, off: int, data: bytes, frame: Any) -> None:
        original(self, pool, off, data, frame)
        p = self.pools[pool]
        if off == 0x80:
            p.bases[0x80] = b"\x01" + p.bases[0x80][1:]

    return store


def _reordered(original: Any) -> Any:  # a line's atoms out of program order
    def store(self: Any, pool: int, off: int, data: bytes, frame: Any) -> None:
        original(self, pool, off, data, frame)
        if off == 0x44:
            atoms = self.pools[pool].lines[0x40]
            atoms[0], atoms[1] = atoms[1], atoms[0]

    return store


def _stale_flush(original: Any) -> Any:  # a flush also covers stores issued after it
    def fold(self: Any, p: Any) -> None:
        for line in list(p.flush_seq):
            p.flush_seq[line] = self.seq + 10
        original(self, p)

    return fold


def _lost_line(original: Any) -> Any:  # a crash state leaves out a line in flight
    def state(self: Any) -> Any:
        got = original(self)
        if len(got.in_flight) > 1:
            got.in_flight = got.in_flight[1:]
        return got

    return state


def _extra_line(original: Any) -> Any:  # a crash state holds a line with nothing in flight
    def state(self: Any) -> Any:
        got = original(self)
        if got.in_flight:
            x = got.in_flight[0]
            clean = fast.LineInFlight(x.pool, 0xC0, bytes(64), ((0, 0xC0, b"\x07", None),), 0)
            got.in_flight = [*got.in_flight, clean]
        return got

    return state


@pytest.mark.parametrize(
    ("name", "make", "point"),
    [
        ("store", _drop_atom, 0),
        ("_fold", _fold_unflushed, 1),
        ("_fold", _skip_fold, 2),
        ("store", _wrong_buffer, 1),
        ("store", _wrong_base, 1),
        ("store", _reordered, 0),
        ("_fold", _stale_flush, 2),
        ("_state", _lost_line, 0),
        ("_state", _extra_line, 0),
    ],
)
def test_the_self_check_catches_a_bug_planted_in_the_lean_replay(
    monkeypatch: pytest.MonkeyPatch, name: str, make: Any, point: int, where: list[int]
) -> None:
    _plant(monkeypatch, name, make)
    with pytest.raises(DurabilityViolation, match=f"crash point {point}: .*pmemsim bug"):
        _replay()
    assert _replay(check=False) == 3  # without the check the bug goes unseen
    assert len(where) == (1 if fast.worth_a_twin(None) else 0)  # type: ignore[arg-type]


def test_a_bug_past_where_the_replay_stopped_is_not_reported(
    monkeypatch: pytest.MonkeyPatch, where: list[int]
) -> None:
    """As in process, whether or not the twin ran ahead of this process."""
    _plant(monkeypatch, "_fold", _skip_fold)  # found at crash point 2

    def stop(point: Any) -> None:
        if point.index == 1:
            raise StopRecording

    assert _replay(stop) == 2
    with pytest.raises(DurabilityViolation, match="crash point 2: "):
        _replay()


def test_a_twin_that_dies_is_a_pmemsim_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pmemsim.pmlog import twin

    monkeypatch.setattr(fast, "worth_a_twin", lambda replay: True)
    monkeypatch.setattr(twin, "_replay", lambda *a: os._exit(3))
    with pytest.raises(RuntimeError, match="self-check's process died"):
        _replay()


def test_the_self_check_is_on_by_default_in_check_log(
    monkeypatch: pytest.MonkeyPatch, where: list[int]
) -> None:
    _plant(monkeypatch, "_fold", _skip_fold)
    with pytest.raises(DurabilityViolation):
        check_log(Replay.of(parse_log(LOG)), FunctionChecker(lambda image: True, "ok"))


def test_a_stale_page_of_a_log_state_is_refused() -> None:
    replay = Replay.of(parse_log(LOG))
    img = _image(replay)
    states: list[Any] = []
    try:
        fast.record_log(replay, img, "barriers", lambda p: states.append(p.state))
        with pytest.raises(RuntimeError, match="only at its crash point"):
            states[0].persisted_page(0)
        assert states[0].units[0].wb  # unit-level questions hold for good
    finally:
        img.close()


def test_a_twin_whose_parent_was_killed_stops(tmp_path: Path) -> None:
    """A check killed with SIGKILL (no chance to end its twin) leaves no process replaying."""
    import signal
    import subprocess
    import sys
    import time

    log = tmp_path / "long.log"
    records = [f"REGISTER_FILE;{tmp_path / 'p'};0x{BASE:x};0x10000;0x0"]
    for i in range(10_000):
        line = BASE + (i % 1024) * 64
        records += [f"STORE;0x{line:x};0x{i + 1:x};0x8", f"FLUSH;0x{line:x};0x40", "FENCE"]
    log.write_text("START|" + "|".join(records) + "|STOP\n")
    code = f"""
import os, sys, time
from pmemsim.pmlog import Replay, read_log
from pmemsim.pmlog import fastreplay as fast
from pmemsim.pmlog.check import _image
replay = Replay.of(read_log({str(log)!r}))
verify = fast.LineModel.verify
def slow(*args):  # 10 s for the whole log: it would outlive the test's deadline
    time.sleep(0.001)
    return verify(*args)
fast.LineModel.verify = slow
from pmemsim.pmlog import twin as twin_module
real = twin_module._replay
def late(*args):  # this process is gone before the twin starts
    time.sleep(0.5)
    return real(*args)
twin_module._replay = late
twin = twin_module.Twin(replay, "barriers")
print(twin.pid, flush=True)
sys.stdin.readline()
"""
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        pid = int(child.stdout.readline())
        child.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    break  # exited, not yet reaped by init
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("the twin kept replaying after its parent was killed")


# -- the replay's shortcuts against its general paths ---------------------------------------


def _narrow_epochs(epochs: int, spelled: str = "0x8", flush: str = "0x40") -> str:
    """Stores of one line each, flushed and fenced (check-log's narrow epochs), with a run
    of one source line and a store left in flight across a fence now and then."""
    ops = []
    for e in range(epochs):
        a, b = BASE + (e * 0x48) % 0x1000 & ~7, BASE + (e * 0x1C8 + 0x40) % 0x1000 & ~7
        ops += [f"STORE;0x{a:x};0x{e + 1:x};{spelled}", f"STORE;0x{b:x};0x{e:x};{spelled}"]
        if e % 3 == 0:
            ops += [f"STORE;0x{b + k:x};0x7;0x8;0x1: put (a.c:1)" for k in (8, 16)]  # a run
        ops += [f"FLUSH;0x{a:x};{flush}"]
        if e % 4:
            ops.append(f"FLUSH;0x{b & ~63:x};{flush}")
        ops.append("FENCE")
    register = f"REGISTER_FILE;/nonexistent-pmemsim-fast/p.bin;0x{BASE:x};0x1000;0x0"
    return "|".join(["START", register, *ops, "STOP"])


def _shadow_cut(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Make every fence cut the records by the general path too and compare; returns, per
    fence with records, whether it took the shortcut (nothing left in flight)."""
    took: list[bool] = []
    original = fast._Machine._fold

    def fold(self: Any, p: Any) -> None:
        had = bool(p.records)
        shadow = types.SimpleNamespace(
            records=list(p.records), flush_seq=dict(p.flush_seq), runs=dict(p.runs), tail=p.tail
        )
        original(self, p)
        fast._Machine._cut_records(shadow)  # type: ignore[arg-type]
        assert (shadow.records, shadow.runs) == (p.records, p.runs)
        assert shadow.tail is p.tail
        if had:
            took.append(not p.lines)

    monkeypatch.setattr(fast._Machine, "_fold", fold)
    return took


@settings(max_examples=EXAMPLES, derandomize=DERANDOMIZE, deadline=None)
@given(data=st.data())
def test_a_fence_cuts_the_records_as_the_general_path_does(
    data: st.DataObject, data_file: str
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        took = _shadow_cut(mp)
        _record(data.draw(logs(data_file=data_file)), "barriers", fast_path=True)
        _record(_narrow_epochs(12), "barriers", fast_path=True)
    assert True in took and False in took  # (both ways taken)


@pytest.mark.parametrize(("spelled", "flush"), [("0x8", "0x40"), ("0x08", "0x040")])
def test_narrow_epochs_replay_the_same_both_ways_however_sizes_are_written(
    spelled: str, flush: str
) -> None:
    """The replay reads the common spellings of a store's and a flush's size by lookup,
    others as the grammar does."""
    text = _narrow_epochs(12, spelled, flush)
    want = _record(text, "barriers", fast_path=False)
    got = _record(text, "barriers", fast_path=True)
    assert got == want
    assert want["count"] == 13


@pytest.mark.parametrize(
    "changed",
    ["STORE;0x{:x};0x1ff;0x1", "STORE;0x{:x};1;0x1", "STORE;0x{:x};0x1;0x9", "STORE;0x{:x};0x1"],
)
def test_a_store_changed_since_the_log_was_read_is_named_as_the_grammar_names_it(
    monkeypatch: pytest.MonkeyPatch, changed: str
) -> None:
    """(A value too big for its size, one not written 0x..., a size past 8, no size: the
    careful path's error, not a store of other bytes.)"""
    from pmemsim.pmlog.grammar import LogFormatError, _parse_record

    replay = Replay.of(parse_log(_narrow_epochs(2)))
    texts = [t for chunk in replay.log.iter_texts() for t in chunk]
    texts[texts.index(next(t for t in texts if t.startswith("STORE;")))] = changed.format(BASE)
    monkeypatch.setattr(replay.log, "iter_texts", lambda: iter([texts]))
    with pytest.raises(LogFormatError) as want:
        _parse_record(0, (0, 0, 0, 0, changed.format(BASE), False))
    img = _image(replay)
    try:
        with pytest.raises(LogFormatError) as got:
            fast.record_log(replay, img, "barriers", check=False, twin=False)
    finally:
        img.close()
    assert str(got.value) == str(want.value)
