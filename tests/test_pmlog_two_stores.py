"""Epochs of two stores (two lines in flight at a fence): check-log's fast ways through them
(the accumulative cuts and the exhaustive images of two lines written out, see
:func:`pmemsim.pmlog.check._single_cuts` and ``_Explorer._every_line``) against the
simulator's replay and the strategies' own plans, image by image, in order.

The logs mix what the fast ways tell apart: stores that change their line or leave it as
it was, two stores of one record across a line boundary (cut together), an epoch whose
second store came first in its line's pool order, a line flushed or not, a line stored
twice (the general way), and an epoch of one store."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pmemsim.markers import current_crash
from pmemsim.pmlog import FunctionChecker, Replay, check_log, parse_log

BASE = 0x10000000
SIZE = 0x2000


def _log(ops: list[str]) -> str:
    """A log of ``ops`` over the one pool these tests register."""
    regs = f"REGISTER_FILE;/nonexistent-pmemsim-two/pool.bin;0x{BASE:x};0x{SIZE:x};0x0"
    return "|".join(["START", regs, *ops, "STOP"])


@st.composite
def two_store_logs(draw: st.DrawFn) -> str:
    """Epochs of (mostly) two 8-byte stores to two lines, their flushes and a fence."""
    ops: list[str] = []
    lines = SIZE // 64
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["two", "two", "two", "record", "same_line", "one"]))
        if kind == "record":  # one record: the last word of a line, the first of the next
            line = draw(st.integers(0, lines - 2))
            at = [BASE + line * 64 + 56, BASE + line * 64 + 64]
        elif kind == "same_line":
            line = draw(st.integers(0, lines - 1))
            at = [BASE + line * 64 + 8 * draw(st.integers(0, 7)) for _ in range(2)]
        else:
            chosen = draw(st.lists(st.integers(0, 7), min_size=2, max_size=2, unique=True))
            at = [BASE + line * 64 + 8 * draw(st.integers(0, 7)) for line in chosen]
            if kind == "one":
                at = at[:1]
        for a in at:
            # Zero: the store may leave its line as it was (that line never deviates).
            value = draw(st.sampled_from([0, 1, 0x1234, 0xFFFFFFFFFFFFFFFF]))
            ops.append(f"STORE;0x{a:x};0x{value:x};0x8")
        flushed = draw(st.sampled_from(["all", "all", "all", "first", "none"]))
        targets = at if flushed == "all" else at[:1] if flushed == "first" else []
        ops += [f"FLUSH;0x{a - a % 64:x};0x40" for a in targets]
        ops.append("FENCE")
    return _log(ops)


def _run(text: str, engine: str, simulator: bool) -> tuple[Any, ...]:
    """check-log's result, report, and every image its checker saw (a digest, with the
    crash point it was judged at), in order; the checker fails a third of them."""
    seen: list[tuple[int, str]] = []

    def fn(image: Any) -> bool:
        digest = hashlib.blake2b(image, digest_size=8).hexdigest()
        info = current_crash()
        assert info is not None
        seen.append((info.point, digest))
        return int(digest, 16) % 3 != 0

    r = check_log(
        Replay.of(parse_log(text)),
        FunctionChecker(fn, "digest"),
        engine=engine,
        simulator=simulator,
    )
    d = r.as_dict()
    del d["seconds"]
    return d, r.report(), seen


@pytest.mark.parametrize("engine", ["exhaustive", "accumulative"])
@settings(max_examples=60, deadline=None)
@given(text=two_store_logs())
def test_two_store_epochs_are_checked_as_the_simulator_checks_them(text: str, engine: str) -> None:
    assert _run(text, engine, simulator=False) == _run(text, engine, simulator=True)


def test_an_epoch_of_two_stores_is_judged_image_by_image_in_the_strategys_order() -> None:
    # Two stores to two lines at offsets 0x100 and 0x40, the later one to the lower line:
    # exhaustive takes all four images (the last line's option varying fastest), the
    # accumulative engine drops the later store first, then both.
    text = _log(
        [
            f"STORE;0x{BASE + 0x100:x};0x1;0x8",
            f"STORE;0x{BASE + 0x40:x};0x2;0x8",
            f"FLUSH;0x{BASE + 0x100:x};0x40",
            f"FLUSH;0x{BASE + 0x40:x};0x40",
            "FENCE",
        ]
    )

    def images(engine: str) -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []

        def fn(image: Any) -> bool:
            got.append((image[0x40], image[0x100]))
            return True

        check_log(Replay.of(parse_log(text)), FunctionChecker(fn, "bytes"), engine=engine)
        return got

    # Crash point 0 (before the fence): lines 0x40 and 0x100 in flight, line 0x40 first.
    assert images("exhaustive") == [(2, 1), (2, 0), (0, 1), (0, 0)]
    assert images("accumulative") == [(2, 1), (0, 1), (0, 0)]


def test_a_state_judged_again_under_another_strategy_counts_what_neither_left_out() -> None:
    # Crash points at markers: n.BEGIN (exhaustive: all four images of the two lines) and
    # m.BEGIN right after, the same state under the accumulative engine (three of them,
    # judged already): no image of the state was left out by both. Then a third store: the
    # new state's points count on their own (m.END accumulative, n.END and the end
    # exhaustive), the first state's count stands.
    text = _log(
        [
            f"STORE;0x{BASE + 0x100:x};0x1;0x8",
            f"STORE;0x{BASE + 0x40:x};0x2;0x8",
            "n.BEGIN",
            "m.BEGIN",
            f"STORE;0x{BASE + 0x200:x};0x3;0x8",  # (a new state from here on)
            "m.END",
            "n.END",
        ]
    )
    got = []
    for simulator in (False, True):
        r = check_log(
            Replay.of(parse_log(text)),
            FunctionChecker(lambda image: True, "true"),
            engine="exhaustive",
            markers={"m": "accumulative"},
            crash_points="markers",
            simulator=simulator,
        )
        d = r.as_dict()
        del d["seconds"]
        got.append(d)
    assert got[0] == got[1]
    assert (got[0]["images_checked"], got[0]["images_skipped"]) == (8, 0)
