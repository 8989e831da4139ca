"""What the installed libpmem2 offers, read from its ELF file, and features that are missing."""

from __future__ import annotations

import ctypes.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pmemsim_backends.real import RealBackend, _ffi, capabilities
from pmemsim_backends.real.capabilities import (
    FEATURE_SYMBOLS,
    Capabilities,
    LibraryNotFound,
    read_library,
)

import pmemsim as pm

if TYPE_CHECKING:
    from real_support import RunPython

pytest_plugins = ["real_support"]

PAGE = 4096
MakeSet = Callable[..., pm.Set]


def test_symbol_table_and_versions(real: RealBackend) -> None:
    info = real.library
    assert info.soname == "libpmem2.so.1"
    assert "LIBPMEM2_1.0" in info.version_nodes
    assert all(v in info.version_nodes for v in info.functions.values())
    assert set(info.functions) >= _ffi.CORE
    # Declared in the 1.12.1 header, not exported: never declared for binding here.
    assert "pmem2_err_to_errno" not in _ffi.FUNCTIONS
    assert not set(_ffi.NEVER_BOUND) & real.binding.bound
    assert real.binding.bound == set(_ffi.FUNCTIONS) & set(info.functions)
    assert real.capabilities == Capabilities.from_functions(info.functions)


def test_every_bound_function_resolves(real: RealBackend) -> None:
    for name in real.binding.bound:
        assert getattr(real.binding.lib, name) is not None


def test_capability_flags_follow_the_symbols() -> None:
    everything = set().union(*FEATURE_SYMBOLS.values())
    assert all(Capabilities.from_functions(everything).as_dict().values())
    for feature, symbols in FEATURE_SYMBOLS.items():
        for sym in symbols:
            flags = Capabilities.from_functions(everything - {sym}).as_dict()
            assert [f for f, have in flags.items() if not have] == [feature]


def test_not_a_library_is_reported(tmp_path: Path) -> None:
    junk = tmp_path / "libpmem2.so.1"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(LibraryNotFound, match="cannot be read as a shared library"):
        read_library(str(junk))
    with pytest.raises(_ffi.LibraryUnavailable):
        _ffi.open_binding(str(junk))


def test_another_library_lacks_the_core(real: RealBackend) -> None:
    libc = ctypes.util.find_library("c")
    path = next(
        (p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6") if Path(p).exists()),
        None,
    )
    if path is None:
        pytest.skip(f"no libc file to read (find_library says {libc})")
    with pytest.raises(_ffi.LibraryUnavailable, match=r"lacks .*pmem2_map_new"):
        _ffi.open_binding(path)


def test_missing_library_names_the_remedy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(capabilities.ENV_LIBRARY, raising=False)
    monkeypatch.setattr(capabilities, "_ldconfig_paths", list)
    monkeypatch.setattr(capabilities, "_LIB_DIRS", ())
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    with pytest.raises(LibraryNotFound, match=r"apt-get install libpmem2"):
        capabilities.find_library()


def test_hiding_a_core_function_makes_the_backend_unavailable(real: RealBackend) -> None:
    with pytest.raises(_ffi.LibraryUnavailable, match="pmem2_map_new"):
        _ffi.open_binding(real.library.path, hide={"pmem2_map_new"})


# -- a library without a feature: a clear error, never an AttributeError ----------------------


def _without(real: RealBackend, *names: str) -> RealBackend:
    return RealBackend(binding=_ffi.open_binding(real.library.path, hide=names))


def test_without_deep_flush(real: RealBackend, tmp_path: Path) -> None:
    b = _without(real, "pmem2_deep_flush")
    assert not b.capabilities.deep_flush and not b.binding.has("pmem2_deep_flush")
    src = pm.Source.from_file(tmp_path / "pool", pm.SourceFlag.CREATE_ALWAYS)
    with pm.Set(pm.Config(granularity=pm.Granularity.PAGE, backend=b)) as s:
        d = s.map(pm.Part(src, 0, PAGE))
        s.persist(d.address, 8)  # the rest still works
        with pytest.raises(pm.NotSupportedError, match="pmem2_deep_flush"):
            s.deep_flush(d.address, 8)


def test_without_reliability_features(real: RealBackend, tmp_path: Path) -> None:
    b = _without(real, "pmem2_badblock_next", "pmem2_source_device_id", "pmem2_source_pread_mcsafe")
    caps = b.capabilities
    assert (caps.badblocks, caps.device_id, caps.mcsafe_read) == (False,) * 3
    assert caps.unsafe_shutdown_count and caps.mcsafe_write
    src = pm.Source.from_file(tmp_path / "pool", pm.SourceFlag.CREATE_ALWAYS)
    src.badblock_detection = True
    s = pm.Set(pm.Config(granularity=pm.Granularity.PAGE, backend=b))
    with pytest.raises(pm.NotSupportedError, match="does not export") as info:
        s.map(pm.Part(src, 0, PAGE))
    assert info.value.code == pm.ErrorCode.BADBLOCK_NOSUPP
    src.badblock_detection = False
    src.set_sds()
    with pytest.raises(pm.NotSupportedError, match="does not export") as info:
        s.map(pm.Part(src, 0, PAGE))
    assert info.value.code == pm.ErrorCode.SDS_NOSUPP
    bsrc = b.open_source(src)
    with pytest.raises(pm.backend.Pmem2Failure, match="does not export"):
        bsrc.pread_mcsafe(0, 8)
    bsrc.close()


def test_without_vm_reservations_nothing_maps(real: RealBackend) -> None:
    b = _without(real, "pmem2_vm_reservation_extend")
    assert not b.capabilities.vm_reservations
    s = pm.Set(pm.Config(granularity=pm.Granularity.BYTE, backend=b))
    with pytest.raises(pm.NotSupportedError, match="vm reservations"):
        s.map(pm.Part(pm.Source.anonymous(PAGE)))
    with pytest.raises(pm.NotSupportedError):
        pm.Reservation(PAGE, backend=b)


# -- what happens where libpmem2 is missing (a child with the library pointed elsewhere) -------

_NO_LIBRARY = """
    import json, sys
    import pmemsim
    light = "cffi" not in sys.modules and "pmemsim_backends.real" not in sys.modules
    from pmemsim_backends.real import unavailable_reason
    reason = unavailable_reason()
    try:
        pmemsim.Set(pmemsim.Config(granularity=pmemsim.Granularity.PAGE, backend="real"))
        raised = None
    except pmemsim.PmemError as exc:
        raised = [type(exc).__name__, exc.code_name, str(exc)]
    try:
        from pmemsim_backends.real import RealBackend
        RealBackend()
        direct = None
    except pmemsim.BackendUnavailableError as exc:
        direct = exc.code_name
    print(json.dumps({"light": light, "reason": reason, "raised": raised, "direct": direct}))
"""


def test_without_libpmem2_the_backend_says_what_to_install(run_python: RunPython) -> None:
    proc = run_python(_NO_LIBRARY, PMEMSIM_LIBPMEM2="/nonexistent/libpmem2.so.1")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["light"]
    assert "apt-get install libpmem2" in out["reason"]
    name, code, text = out["raised"]
    assert (name, code) == ("BackendUnavailableError", "PMEMSET_E_NOSUPP")
    assert "apt-get install libpmem2" in text
    assert out["direct"] == "PMEMSET_E_NOSUPP"


def test_import_pmemsim_stays_light(run_python: RunPython) -> None:
    proc = run_python(
        "import sys, pmemsim; print(sorted(m for m in ('cffi', 'elftools') if m in sys.modules))"
    )
    assert proc.stdout.strip() == "[]", proc.stderr
    assert sys.modules.get("pmemsim") is not None
