"""Shared fixtures: a fresh simulator per test, and sets on it."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pmemsim_backends.sim import SimBackend

import pmemsim as pm
from pmemsim import source


@pytest.fixture
def sim() -> SimBackend:
    """A fresh simulated ADR machine (CACHE_LINE granularity)."""
    return SimBackend()


@pytest.fixture
def make_set(sim: SimBackend) -> Iterator[Callable[..., pm.Set]]:
    """``make_set(granularity=CACHE_LINE, **config)``: a set on the test's simulator."""
    made: list[pm.Set] = []

    def factory(granularity: pm.Granularity = pm.Granularity.CACHE_LINE, **kw: Any) -> pm.Set:
        kw.setdefault("backend", sim)
        s = pm.Set(pm.Config(granularity=granularity, **kw))
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close()


@pytest.fixture
def anon() -> Callable[[int], pm.Source]:
    """``anon(size)``: an anonymous source."""
    return pm.Source.anonymous


@pytest.fixture
def v(make_set: Callable[..., pm.Set]) -> pm.View:
    """A view of 4 zeroed pages (16 KiB) on the test's CACHE_LINE simulator."""
    s = make_set()
    return s.view(s.map(pm.Part(pm.Source.anonymous(4 * 4096))))


@pytest.fixture
def left_open() -> Iterator[Any]:
    """A function listing the sources opened since the test began and still open (the
    collector off meanwhile: a source left to it shows)."""
    enabled = gc.isenabled()
    gc.disable()
    before = {id(s) for s in source._open_sources}
    try:
        yield lambda: [s for s in source._open_sources if id(s) not in before and not s.closed]
    finally:
        if enabled:
            gc.enable()
