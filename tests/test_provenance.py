"""Blaming the right line: stores made in helper functions are reported at their caller once
the helpers are marked (pmemsim.helper), in failures, lint findings, crash points and logs."""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pmemsim_backends.sim import SimBackend

import pmemsim as pm
from pmemsim import provenance
from pmemsim.explore import CrashCheck, check, record
from pmemsim.pmlog.export import export_log


@pytest.fixture(autouse=True)
def _fresh_helpers() -> Iterator[None]:
    """Marks are process-wide: each test starts and ends with none."""
    provenance.clear_helpers()
    old = provenance.set_helper_depth(8)
    yield
    provenance.clear_helpers()
    provenance.set_helper_depth(old)


def store_u64(v: pm.View, index: int, value: int) -> None:
    v.u64[index] = value  # the helper's line


def persist_u64(v: pm.View, index: int) -> None:
    v.persist(index * 8, 8)


def put(v: pm.View, index: int, value: int) -> None:  # a helper built on a helper
    store_u64(v, index, value)
    persist_u64(v, index)


def _line_of(fn: object, text: str) -> int:
    lines, first = inspect.getsourcelines(fn)  # type: ignore[arg-type]
    return first + next(i for i, line in enumerate(lines) if text in line)


def buggy(v: pm.View) -> None:
    store_u64(v, 8, 7)  # data: never persisted (the bug)
    put(v, 0, 1)  # flag


def _recover(v: pm.View) -> bool:
    return v.u64[0] == 0 or v.u64[8] == 7


def _lost_line(r: object) -> str:
    m = r.minimal  # type: ignore[attr-defined]
    assert m is not None
    return str(m.lost[0])


def test_a_store_in_a_marked_helper_is_blamed_on_its_caller() -> None:
    c = CrashCheck("helper", buggy, _recover)
    here = f"test_provenance.py:{_line_of(buggy, 'store_u64(v, 8, 7)')} in buggy"
    helper_line = f"test_provenance.py:{_line_of(store_u64, 'v.u64[index]')} in store_u64"
    assert helper_line in _lost_line(check(c))  # unmarked: the helper takes the blame
    pm.helper(store_u64)
    assert here in _lost_line(check(c))


def test_nested_helpers_and_the_depth_limit() -> None:
    def workload(v: pm.View) -> None:
        put(v, 0, 1)  # the flag line alone: never a failure, but the lint and points see it
        v.u64[16] = 2

    pm.helper(store_u64)
    pm.helper(put)
    trace = record(workload, keep_ops=True)
    stores = [op for op in trace.ops if op.kind == "store"]
    first = provenance.locations(stores[0].provenance)[0]
    assert first.function.endswith(".workload")
    assert first.lineno == _line_of(workload, "put(v, 0, 1)")
    old = provenance.set_helper_depth(1)
    try:
        trace = record(workload, keep_ops=True)
    finally:
        provenance.set_helper_depth(old)
    # One frame up from store_u64 is put, itself a helper: the store stops there, and the
    # report falls back to it (it has nothing else).
    stores = [op for op in trace.ops if op.kind == "store"]
    (code, _), *_ = stores[0].provenance
    assert code.co_name == "put"
    with pytest.raises(ValueError):
        provenance.set_helper_depth(0)


def test_lint_and_crash_points_name_the_caller() -> None:
    def workload(v: pm.View) -> None:
        store_u64(v, 0, 1)
        store_u64(v, 8, 2)  # never flushed: a lint error
        persist_u64(v, 1)  # the crash point

    pm.helper(store_u64)
    pm.helper(persist_u64)
    sim = SimBackend()
    with pm.Set(pm.Config(granularity=pm.Granularity.CACHE_LINE, backend=sim)) as s:
        workload(s.view(s.map(pm.Part(pm.Source.anonymous(4096)))))
        (finding,) = [f for f in sim.lint() if f.kind.name == "UNFLUSHED_STORE"]
    assert f"test_provenance.py:{_line_of(workload, 'store_u64(v, 8, 2)')} in " in str(finding)
    trace = record(workload)
    where = f"test_provenance.py:{_line_of(workload, 'persist_u64(v, 1)')}"
    assert where in trace.points[0].describe()


def test_a_marked_module_or_package_is_helper_code(tmp_path: Path) -> None:
    pkg = tmp_path / "pmhelpers"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "access.py").write_text(
        textwrap.dedent(
            """
            def set_u64(v, i, x):
                v.u64[i] = x
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        access = importlib.import_module("pmhelpers.access")

        def workload(v: pm.View) -> None:
            access.set_u64(v, 8, 7)
            v.u64[0] = 1
            v.persist(0, 8)

        c = CrashCheck("module", workload, _recover)
        assert "access.py:3 in set_u64" in _lost_line(check(c))
        pm.helper("pmhelpers")  # the package, by name: every module in it
        assert f":{_line_of(workload, 'access.set_u64')} in " in _lost_line(check(c))
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("pmhelpers.access", "pmhelpers"):
            sys.modules.pop(name, None)


def test_exported_logs_name_the_caller() -> None:
    pm.helper(store_u64)
    pm.helper(put)
    log = export_log(CrashCheck("x", buggy, _recover))
    stores = [r for r in log.split("|") if r.startswith("STORE")]
    assert all(";buggy (test_provenance.py:" in s for s in stores), stores


def test_helper_refuses_what_it_cannot_mark() -> None:
    with pytest.raises(TypeError):
        pm.helper(42)
    assert pm.helper(staticmethod(store_u64)) is not None
    assert pm.helper(property(lambda self: 1)) is not None
