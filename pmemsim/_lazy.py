"""A package's public names, imported on first use (PEP 562)."""

from __future__ import annotations

import _thread
import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["first_use"]


def first_use(
    package: str, table: Mapping[str, str], keep: dict[str, Any] | None = None
) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``table`` gives each public name the module
    (relative to the package) that defines it.

    The first use of any name, from whichever thread, imports every module of the table, in
    its order, in one thread under a lock: threads that each imported one module on first
    use deadlocked (tests/test_pmlog_startup.py). ``keep``: the package's globals, where the
    names are then kept (no call here after); None looks each one up in its module every
    time, so that a name agrees with its module in sys.modules (pytester drops and re-imports
    modules between inner sessions: a kept class would then be another class than the one
    the re-imported module uses)."""
    lock = _thread.RLock()
    loaded = False

    def __getattr__(name: str) -> object:
        nonlocal loaded
        where = table.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        with lock:
            if not loaded:
                loaded = True
                for public, module in table.items():
                    got = importlib.import_module(module, package)
                    if keep is not None:
                        keep[public] = getattr(got, public)
        value = None if keep is None else keep.get(name)
        if value is None:  # not kept, or asked for while the names are being imported
            value = getattr(importlib.import_module(where, package), name)
        return value

    return __getattr__
