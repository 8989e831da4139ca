"""The libpmem2 backend: the set layer on real libpmem2 maps, through cffi.

Nothing here imports cffi or opens libpmem2 until the backend is asked for:
:func:`unavailable_reason` says whether it can run and, if not, what to install, so that
``pmemsim.load_backend("real")`` raises a clear BackendUnavailableError on a machine without
libpmem2. docs/real.md describes the backend.
"""

from __future__ import annotations

from .backend import RealBackend

__all__ = ["RealBackend", "unavailable_reason"]


def unavailable_reason() -> str | None:
    """None when libpmem2 can be used here, else why not and the remedy."""
    from . import _ffi

    try:
        _ffi.binding()
    except _ffi.LibraryUnavailable as exc:
        return str(exc)
    return None
