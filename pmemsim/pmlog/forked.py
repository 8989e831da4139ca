"""Child processes of check-log (checker workers, the self-check's twin), forked alike."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

__all__ = ["fork"]


def fork(run: Callable[[], None]) -> int:
    """Fork a child that runs ``run()`` and exits (70, with a traceback, if it raised:
    pmemsim's own bug); returns the child's pid here."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        # A profiler or tracer (coverage, cProfile) of this process does not survive into
        # a forked child: stop it there.
        sys.setprofile(None)
        sys.settrace(None)
        # A crash in the child (a checker's) is reported by this process: no Python
        # traceback for it.
        import faulthandler

        faulthandler.disable()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # this process decides
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        run()
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)
