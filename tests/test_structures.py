"""The structures built like published bugs (tests/structures): every verdict right and
exact by default, where exhaustive exploration would need millions of images; random
samples of the same images never disagree with lazy exploration."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pmemsim.explore import CrashCheck, check

FOLDER = Path(__file__).resolve().parent / "structures"
MODULES = ("constructor", "hash_split", "node_shift")


def _checks(name: str) -> tuple[CrashCheck, CrashCheck]:
    spec = importlib.util.spec_from_file_location(f"structures_{name}", FOLDER / f"{name}.py")
    assert spec is not None and spec.loader is not None
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m.bug, m.fix


@pytest.mark.parametrize("name", MODULES)
def test_bug_and_fix_get_exact_verdicts_by_default(name: str) -> None:
    bug, fix = _checks(name)
    for c in (bug, fix):
        r = check(c, progress=None)
        assert r.as_expected and r.exact, r.summary()
        assert r.images_covered == r.images_possible
    found = check(bug, progress=None)
    assert found.images_possible > 10**6 and found.read_paths < 2000
    assert found.minimal is not None and found.minimal.lines  # a crash that lost something


@pytest.mark.parametrize("name", MODULES)
def test_random_images_agree_with_lazy_exploration(name: str) -> None:
    bug, fix = _checks(name)
    lazy = {f.signature for f in check(bug, progress=None).failures}
    sampled = check(bug, strategy="random:150", seed=1, progress=None)
    assert {f.signature for f in sampled.failures} <= lazy
    assert check(fix, strategy="random:150", seed=1, progress=None).verdict == "consistent"
