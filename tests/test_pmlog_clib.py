"""C functions called through ctypes' C half (:mod:`pmemsim.pmlog.clib`), and the package
as the fallback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from pmemsim.pmlog import clib
from pmemsim.pmlog.clib import Library, c_errno


@pytest.fixture(params=["_ctypes", "ctypes"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The primitives, or the package where a primitive is missing."""
    if request.param == "ctypes":
        import _ctypes
        import ctypes  # (the package, loaded before its primitive goes)

        assert ctypes.CDLL is not None
        monkeypatch.delattr(_ctypes, "FUNCFLAG_CDECL")
    return str(request.param)


def test_a_function_gets_ints_bytes_and_none_and_gives_an_int(way: str) -> None:
    libc = Library(None)
    assert ("CDLL" in libc._make.__qualname__) == (way == "ctypes")  # (the way taken)
    assert libc.function("getpid")() == os.getpid()
    assert libc.function("strlen")(b"pmemsim") == 7
    assert libc.function("atoi")(b"-42") == -42
    assert libc.function("fflush")(None) == 0


def test_errno_is_kept_when_asked(way: str) -> None:
    close = Library(None, use_errno=True).function("close")
    assert close(-1) == -1
    assert c_errno() == errno.EBADF


def test_a_call_can_keep_the_interpreters_lock(way: str) -> None:
    # (Python's own PyGILState_Check, found among the program's symbols.)
    assert Library(None).function("PyGILState_Check")() == 0
    assert Library(None, hold_gil=True).function("PyGILState_Check")() == 1


def test_libraries_loaded_alike_share_their_function_class() -> None:
    # (Each class costs some 100,000 instructions to make; a worker loads three libraries.)
    plain, errno_kept = Library(None), Library(None, use_errno=True)
    assert Library("libc.so.6")._make is plain._make
    assert errno_kept._make is not plain._make
    assert Library(None, hold_gil=True)._make not in (plain._make, errno_kept._make)
    assert Library(None, use_errno=True)._make is errno_kept._make


def test_what_cannot_be_loaded_is_refused(way: str) -> None:
    with pytest.raises(OSError):
        Library("/nonexistent/libpmemsim-none.so")
    with pytest.raises(AttributeError):
        Library(None).function("pmemsim_no_such_function")


def test_the_worker_loads_a_library_without_the_ctypes_package(tmp_path: object) -> None:
    # A library checker's worker: serve.py as the new interpreter imports it, then a
    # library's function loaded and called (libc's strlen, through c_judge's loader).
    from pmemsim.pmlog import serve

    package = os.path.dirname(os.path.dirname(os.path.abspath(serve.__file__)))
    boot = serve.BOOT.replace("spawned(sys.argv[2:])", "")
    code = (
        boot
        + "from pmemsim.pmlog.clib import Library\n"
        + "assert Library('libc.so.6').function('strlen')(b'abc') == 3\n"
        + "print('ctypes' in sys.modules, '_ctypes' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-E", "-S", "-B", "-c", code, package],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.split() == ["False", "True"]
    assert clib.__name__ == "pmemsim.pmlog.clib"


def test_a_pointer_variable_is_passed_as_a_pointer(way: str) -> None:
    libc = Library(None)
    stdout = libc.pointer("stdout")
    assert libc.function("fileno")(stdout) == 1
    with pytest.raises(ValueError):
        libc.pointer("pmemsim_no_such_variable")
