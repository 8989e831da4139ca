"""The accumulative engine's cuts of a log machine's state: the fast path for lines with one
store in flight each (:func:`pmemsim.pmlog.check._single_cuts`) against the general one
(:func:`pmemsim.pmlog.check._cuts`)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pmemsim.pmlog.check import _cuts, _single_cuts
from pmemsim.pmlog.fastreplay import LineInFlight

BASE = bytes(range(64))


@st.composite
def single_store_lines(draw: st.DrawFn) -> list[LineInFlight]:
    """Lines in flight, one store each: stores of one record share a number, and some
    stores write what the line held already (they never deviate)."""
    n = draw(st.integers(0, 6))
    out = []
    for i in range(n):
        seq = draw(st.integers(1, 4))
        at = 64 * i + 8 * draw(st.integers(0, 7))
        same = draw(st.booleans())
        data = BASE[at - 64 * i : at - 64 * i + 8] if same else bytes([0xEE]) * 8
        out.append(LineInFlight(0, 64 * i, BASE, ((seq, at, data, None),), 0))
    return out


def _option(i: int, o: int) -> tuple[Any, ...]:
    # A stand-in for PoolImage._option: a key delta and a loss that name the option.
    return (b"", 1000 * (i + 1) + o, i + 1, 0, 64 * i, 64 * i + 64)


@settings(max_examples=300, deadline=None)
@given(single_store_lines())
def test_single_store_cuts_are_the_general_cuts(lines: list[LineInFlight]) -> None:
    asked: list[tuple[int, int]] = []

    def option(i: int, o: int) -> tuple[Any, ...]:
        asked.append((i, o))
        return _option(i, o)

    got = _single_cuts(lines, 7, {}.get, option)
    assert got is not None
    assert [dev for dev, _, _, _ in got] == list(_cuts(lines))
    for dev, key, lost, hits in got:
        assert hits == tuple(_option(*d) for d in dev)
        assert key == 7 + sum(h[1] for h in hits)
        assert lost == sum(h[2] for h in hits)
    assert len(asked) == len(set(asked))  # each line's option asked for once


def test_a_record_across_lines_is_cut_whole() -> None:
    # Lines 0 and 1 hold one record's stores (number 1), line 2 a later store (number 2):
    # the cuts keep all three, the first two, or none.
    lines = [
        LineInFlight(0, 64 * i, BASE, ((seq, 64 * i, b"\xee" * 8, None),), 0)
        for i, seq in enumerate([1, 1, 2])
    ]
    cuts = _single_cuts(lines, 0, {}.get, _option)
    assert cuts is not None
    assert [dev for dev, _, _, _ in cuts] == [(), ((2, 1),), ((0, 1), (1, 1), (2, 1))]


def test_lines_with_several_stores_take_the_general_way() -> None:
    two = ((1, 0, b"\xee" * 8, None), (2, 8, b"\xdd" * 8, None))
    lines = [LineInFlight(0, 0, BASE, two, 0)]
    assert _single_cuts(lines, 0, {}.get, _option) is None
    assert list(_cuts(lines)) == [(), ((0, 1),), ((0, 2),)]
