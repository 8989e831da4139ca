"""Reports written whole or not at all.

A report (``--json``, ``--junit-xml``, ``--html``, an exported log) that fails halfway (a
full disk, a quota, a file-size limit) must not leave the previous report truncated: a CI
job would read half a JSON document, or the last good report would be gone. So a regular
file is written beside its final name, synced, and renamed over it; a device or a pipe
(``/dev/stdout``) is written in place, as there is nothing to replace.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = ["write_file"]


def write_file(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path``; returns its absolute path. OSError as the
    system gave it, with ``path`` unchanged where it was a regular file or nothing."""
    p = Path(path).absolute()
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(p, "wb") as f:
            f.write(raw)
        return p
    # A symbolic link stays one: the file it names is replaced.
    final = Path(os.path.realpath(p))
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        if st is not None:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, final)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return p
