"""Fixtures of the real-backend tests, loaded with ``pytest_plugins = ["real_support"]``.

Every fixture that needs libpmem2 skips the test, with the reason and the remedy, where
libpmem2 cannot be used. Test modules must not import this module themselves (pytest loads
it as a plugin, so that its assertions are rewritten).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pmemsim_backends.real import RealBackend, unavailable_reason

import pmemsim as pm

RunPython = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def real(monkeypatch: pytest.MonkeyPatch) -> RealBackend:
    """The real backend on the platform as it is: the test skips where libpmem2 is missing,
    and an inherited PMEM2_FORCE_GRANULARITY is removed (tests that want it set it)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    monkeypatch.delenv("PMEM2_FORCE_GRANULARITY", raising=False)
    return RealBackend()


@pytest.fixture
def make_real_set(real: RealBackend) -> Iterator[Callable[..., pm.Set]]:
    """``make_real_set(granularity=PAGE, **config)``: a set on the real backend."""
    made: list[pm.Set] = []

    def factory(granularity: pm.Granularity = pm.Granularity.PAGE, **kw: Any) -> pm.Set:
        kw.setdefault("backend", real)
        s = pm.Set(pm.Config(granularity=granularity, **kw))
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close()


@pytest.fixture
def run_python() -> RunPython:
    """``run_python(code, **env)``: run ``code`` in a fresh interpreter (for what could kill
    the one running the tests) and return the completed process."""

    def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **env},
            check=False,
        )

    return run
