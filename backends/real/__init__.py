"""The libpmem2 backend (through cffi). Not built yet: the registry reports it unavailable.

Issue 4 fills this package; until then :func:`unavailable_reason` explains why it cannot be
used, so that ``pmemsim.load_backend("real")`` raises a clear BackendUnavailableError instead
of an ImportError or AttributeError.
"""

from __future__ import annotations

__all__ = ["RealBackend", "unavailable_reason"]


def unavailable_reason() -> str | None:
    return "the libpmem2 backend is not implemented in this version of pmemsim yet"


class RealBackend:
    """Placeholder so the registry's import string resolves; never instantiated."""
