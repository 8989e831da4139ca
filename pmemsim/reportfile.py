"""Output files written whole or not at all.

A report (``--json``, ``--junit-xml``, ``--html``, an exported log) or a crash image
(``--image-out``) that fails halfway (a full disk, a quota, a file-size limit) must not
leave the previous file truncated: a CI job would read half a JSON document, or the last
good report would be gone. And an image written over a file it is made from (the pool a log
registered) must read that file's old content to the end. So a regular file is written
beside its final name, synced, and renamed over it; a device or a pipe (``/dev/stdout``) is
written in place, as there is nothing to replace.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["replacing", "write_file"]


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[int]:
    """A descriptor to write ``path``'s new content to: a new file beside it, renamed over
    it (keeping its mode) when the block ends, removed if the block raises; a device or a
    pipe itself. OSError as the system gave it."""
    p = Path(path).absolute()
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        fd = os.open(p, os.O_WRONLY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)
        return
    # A symbolic link stays one: the file it names is replaced.
    final = Path(os.path.realpath(p))
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        if st is not None:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
        yield fd
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


def write_file(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` (see :func:`replacing`); returns its
    absolute path."""
    view = memoryview(data.encode("utf-8") if isinstance(data, str) else data)
    with replacing(path) as fd:
        while view:
            view = view[os.write(fd, view) :]
    return Path(path).absolute()
