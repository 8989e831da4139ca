"""The lean replay's durability self-check on a second core.

The self-check (:mod:`pmemsim.pmlog.selfcheck`) costs about as much as the replay it checks.
The replay is deterministic: the same log gives the same crash states, line for line, in any
process. So on a machine with a core to spare, a forked twin replays the log with the
self-check on and hands nothing to a judge, while this process replays it with the
self-check off and judges the images; the twin's verdict on its replay is the verdict on
this one's, for every crash point this process reached.

This process tells the twin, through a word of shared memory, how many crash points it
reached once it is done; the twin stops there (a crash point is verified before anything
hears of it), or at the end of the log, and answers once: no violation, or the first one
with the crash point it was found at. A violation at a point this process never reached
(it stopped early) is not one the in-process self-check would have found, so it is
dropped: the outcome is the same as with the self-check in process, whatever the timing.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import signal
import struct
from typing import TYPE_CHECKING, Any

from .forked import TWIN_NICE, fork

if TYPE_CHECKING:
    from ..explore.trace import CrashPoint
    from .replay import Replay

__all__ = ["Twin"]

_WORD = struct.Struct("<q")


class Twin:
    """A forked process replaying ``replay`` with the self-check on (see the module
    docstring). :meth:`verify` waits for its verdict; :meth:`close` ends it in any case."""

    def __init__(self, replay: Replay, crash_points: str) -> None:
        # Where this process stopped: -1 while it runs.
        self._upto = mmap.mmap(-1, _WORD.size)
        _WORD.pack_into(self._upto, 0, -1)
        rfd, wfd = os.pipe()

        parent = os.getpid()  # (here: the child may start after this process is gone)

        def run() -> None:
            os.close(rfd)
            # Second to the check it shadows: on a busy machine it runs in what the check
            # leaves (at worst after it, as the self-check in process would).
            with contextlib.suppress(OSError):
                os.nice(TWIN_NICE)
            _answer(wfd, _replay(replay, crash_points, self._upto, parent))

        pid = fork(run)
        os.close(wfd)
        self.pid = pid
        self._from = rfd

    def verify(self, points: int) -> None:
        """This process reached ``points`` crash points: raise the DurabilityViolation the
        twin found among them, if any."""
        _WORD.pack_into(self._upto, 0, points)
        data = bytearray()
        while chunk := os.read(self._from, 1 << 16):
            data += chunk
        self.close()
        if not data:
            raise RuntimeError("the durability self-check's process died (a pmemsim bug)")
        found: tuple[int, str] | None = pickle.loads(bytes(data))
        if found is not None and found[0] < points:
            from ..explore.durability import DurabilityViolation

            raise DurabilityViolation(found[1])

    def close(self) -> None:
        if not self.pid:
            return
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.pid = 0
        os.close(self._from)
        self._upto.close()


def _replay(
    replay: Replay, crash_points: str, upto: mmap.mmap, parent: int
) -> tuple[int, str] | None:
    """In the twin: the replay with the self-check, until the point the parent reached."""
    from ..explore.durability import DurabilityViolation
    from ..explore.trace import StopRecording
    from .fastreplay import record_log
    from .images import PoolImage

    seen = [0]
    read = _WORD.unpack_from

    def reached(point: CrashPoint) -> None:
        seen[0] = point.index + 1
        stop = read(upto, 0)[0]
        if 0 <= stop <= seen[0]:
            raise StopRecording
        if os.getppid() != parent:  # killed (SIGKILL: no close): nobody will ask
            os._exit(0)

    img = PoolImage([(p.size, p.source, p.source_size) for p in replay.pools])
    try:
        record_log(replay, img, crash_points, reached, twin=False)
    except DurabilityViolation as exc:
        # The point it was found at: the one after the last one heard of.
        return seen[0], str(exc)
    finally:
        img.close()
    return None


def _answer(fd: int, found: Any) -> None:
    view = memoryview(pickle.dumps(found))
    with contextlib.suppress(BrokenPipeError):  # the parent is gone: nobody to tell
        while view:
            view = view[os.write(fd, view) :]
    os.close(fd)
