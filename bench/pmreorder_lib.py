"""pmreorder's own command line, with its ``-c lib`` mode made to work on Python 3.

    python bench/pmreorder_lib.py PATH/pmreorder.py -l LOG -r ReorderFull -o OUT \\
        -c lib -p LIB.so -n FUNCTION

pmreorder declares its library checker's argument as ``c_char_p`` and then calls it with the
image's path as a ``str``, which ctypes refuses on Python 3 (ArgumentError at the first
check), so ``-c lib`` cannot run as shipped. :func:`patch_lib_checker` changes that one call:
pmreorder's own ``LibChecker.check_consistency`` still runs (its logging included), given the
path encoded with ``os.fsencode``. The script then runs ``pmreorder.py`` as its command line
would (as ``__main__``, its folder first on ``sys.path``, the arguments after it unchanged).
Nothing else of pmreorder changes; the wrapper adds about 0.1 ms of imports (``runpy``).
bench_scale.py times ``-c lib`` runs through this script and its in-process runs with the
same patch.
"""

from __future__ import annotations

import os
import runpy
import sys
from types import ModuleType
from typing import Any


def patch_lib_checker(consistencycheckwrap: ModuleType) -> None:
    """Hand pmreorder's library checker the path as bytes (the one Python 3 fix)."""
    checker = consistencycheckwrap.LibChecker
    original = checker.check_consistency

    def check_consistency(self: Any, filename: str) -> Any:
        return original(self, os.fsencode(filename))

    checker.check_consistency = check_consistency


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: pmreorder_lib.py PATH/pmreorder.py PMREORDER-ARGS...")
    tool = os.path.abspath(sys.argv[1])
    sys.path.insert(0, os.path.dirname(tool))  # what `python pmreorder.py` puts first
    import consistencycheckwrap  # type: ignore[import-not-found]

    patch_lib_checker(consistencycheckwrap)
    sys.argv = [tool, *sys.argv[2:]]
    runpy.run_path(tool, run_name="__main__")


if __name__ == "__main__":
    main()
