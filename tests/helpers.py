"""Small helpers shared by the simulator tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def lineno() -> int:
    """The caller's current line number."""
    return sys._getframe(1).f_lineno


def u64(x: int) -> bytes:
    return x.to_bytes(8, "little")


def log_lint(text: str, fast_path: bool) -> tuple[list[Any], list[Any]]:
    """A store log's lint: the simulator's findings and check-log's, from the lean replay
    (``fast_path``) or the whole simulator."""
    from pmemsim.pmlog import Replay, parse_log
    from pmemsim.pmlog import fastreplay as fast
    from pmemsim.pmlog.check import _image
    from pmemsim.pmlog.lint import log_findings

    replay = Replay.of(parse_log(text))
    img = _image(replay)
    try:
        if fast_path:
            trace = fast.record_log(replay, img, "barriers", lambda p: None, lint=True)
        else:
            trace = replay.record("barriers", on_point=lambda p: None, lint=True)
    finally:
        img.close()
    return trace.findings, log_findings(replay, trace.findings)


def check_log_cli(folder: str | os.PathLike[str], text: str, *args: str) -> tuple[int, str]:
    """``pmemsim check-log`` on the log ``text`` in ``folder`` with a Python checker that
    accepts every image (and ``args``): its exit status and what it printed."""
    import contextlib
    import io

    from pmemsim.cli import main

    log = os.path.join(folder, "t.log")
    with open(log, "w") as f:
        f.write(text)
    chk = os.path.join(folder, "chk.py")
    with open(chk, "w") as f:
        f.write("def check(image):\n    return True\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["check-log", log, "--checker-py", f"{chk}:check", *args])
    return code, out.getvalue()


#: A C checker that says which process judges (prints its command line); an image is
#: inconsistent when its first byte is 1.
SAYS_WHO = r"""
#include <stdio.h>
int check(const char *path) {
    FILE *f = fopen(path, "rb");
    int first = f ? fgetc(f) : -1;
    if (f) fclose(f);
    FILE *me = fopen("/proc/self/cmdline", "rb");
    int c;
    while (me && (c = fgetc(me)) != EOF) putchar(c ? c : ' ');
    if (me) fclose(me);
    return first != 1;
}
"""


def c_library(folder: Path, source: str, name: str = "check") -> Path:
    """``source`` built as ``folder/lib{name}.so`` (the test is skipped without gcc)."""
    import pytest

    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C checker cannot be built")
    src = folder / f"{name}.c"
    src.write_text(source)
    lib = folder / f"lib{name}.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


def epochs_workload(n: int, lines: int) -> Any:
    """A workload of ``n`` epochs, each storing to ``lines`` lines and persisting them."""

    def workload(v: Any) -> None:
        for e in range(n):
            for i in range(lines):
                v.u64[i * 8 + e % 8] = e * 10 + i + 1
            v.persist(0, lines * 64)

    return workload
