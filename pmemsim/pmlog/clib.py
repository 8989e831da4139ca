"""A C library's functions, called through ctypes' C half.

A library checker's worker calls a C function per image, and libc's to watch and flush.
Importing the ctypes package, which builds some thirty classes, costs 16 million
instructions (the bare interpreter's start: 28 million), on every check with a library
checker, and on the check's path when the machine is busy. What the worker calls needs
two of those classes: a C ``int`` result, and functions of a loaded library. So they are
made here from ``_ctypes`` directly (the package's own primitives, as the package itself
makes them), with the package as the fallback wherever ``_ctypes`` lacks one.

Arguments go as ctypes gives them without declared types: a Python int as a C ``int``,
``bytes`` as ``const char *``, None as ``NULL``; every result is a C ``int``.

Such a call releases the interpreter's lock and takes it back, as ctypes' calls do, unless
the library is loaded with ``hold_gil``: in a process with one thread (a checker's worker)
no other thread waits for the lock, and a call that keeps it costs about half (ctypes'
``PyDLL`` calls, as used for Python's own C API).

This module imports nothing of pmemsim's and no more of Python's than it uses (see
:mod:`pmemsim.pmlog.serve`).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["Library", "c_errno"]


class Library:
    """A shared library loaded with dlopen (``None``: the program and libc); OSError if it
    cannot be. ``use_errno``: its functions keep C's errno for :func:`c_errno`; ``hold_gil``:
    they keep the interpreter's lock while they run (no other thread of this process runs
    Python meanwhile, a signal's Python handler included)."""

    def __init__(self, name: str | None, use_errno: bool = False, hold_gil: bool = False) -> None:
        try:
            import _ctypes

            c: Any = _ctypes  # (typeshed's view of the primitives is not the point here)
            flags = c.FUNCFLAG_CDECL
            if use_errno:
                flags |= c.FUNCFLAG_USE_ERRNO
            if hold_gil:
                flags |= c.FUNCFLAG_PYTHONAPI
            made = _FUNCTIONS.get(flags)
            if made is None:
                made = _FUNCTIONS[flags] = _function_class(c, flags)
            self._handle = c.dlopen(name, 0)  # (RTLD_NOW is added, as for ctypes)
            self._make: Any = made
            self._pointer: Any = None  # (made when first asked for: a class costs)
        except (ImportError, AttributeError):  # no such primitive here: the package's
            import ctypes

            lib = (ctypes.PyDLL if hold_gil else ctypes.CDLL)(name, use_errno=use_errno)
            self._handle = lib._handle
            self._make = lib._FuncPtr
            self._pointer = ctypes.c_void_p

    def function(self, name: str) -> Callable[..., int]:
        """The library's function ``name`` (AttributeError if it has none)."""
        # (ctypes looks the symbol up in the object's ``_handle``.)
        fn: Callable[..., int] = self._make((name, self))
        return fn

    def pointer(self, name: str) -> object:
        """The library's pointer variable ``name`` (libc's ``stdout``), as its functions
        take a pointer (ValueError if it has none)."""
        kind = self._pointer or _pointer_class()
        got: object = kind.in_dll(self, name)
        return got


#: The class of the functions of each kind made so far, by their flags (shared by the
#: libraries loaded alike: a worker loads three, and each class costs some 100,000
#: instructions to make).
_FUNCTIONS: dict[int, Any] = {}


#: The class of a C pointer, once made.
_POINTER: list[Any] = []


def _pointer_class() -> Any:
    if not _POINTER:
        import _ctypes

        c: Any = _ctypes

        class _Pointer(c._SimpleCData):  # type: ignore[misc]
            _type_ = "P"

        _POINTER.append(_Pointer)
    return _POINTER[0]


def _function_class(c: Any, flags: int) -> Any:
    """The class of C functions returning an ``int``, called as ``flags`` say."""

    class _Int(c._SimpleCData):  # type: ignore[misc]
        _type_ = "i"

    class _Function(c.CFuncPtr):  # type: ignore[misc]
        _flags_ = flags
        _restype_ = _Int

    return _Function


def c_errno() -> int:
    """C's errno as the last call of a ``use_errno`` library's function left it."""
    try:
        from _ctypes import get_errno
    except ImportError:
        from ctypes import get_errno
    got: int = get_errno()
    return got
