"""Run PMDK's pmreorder and ``pmemsim check-log`` on the same log and checker, for benchmarks.

Import it from a benchmark (``sys.path.insert(0, "bench")``; ``import pmreorder_runner``)::

    log = synthetic_log(tmp / "x.log", tmp / "pool", epochs=1000, stores=4, size=64 << 20)
    ours = run_pmemsim(log, ["true"], engine="accumulative")
    theirs = run_pmreorder(log, ["true"], engine="ReorderAccumulative", timeout=120)
    print(ours.seconds, theirs.seconds, ours.verdict, theirs.verdict)

Both are run as a user would, each in its own process (interpreter start-up included), and
timed from start to verdict with ``time.perf_counter``.

pmreorder writes the crash states into the registered file itself, so :func:`run_pmreorder`
runs it on a copy of the log whose REGISTER_FILE paths point at fresh files in a temporary
folder (zeros, or the content given), never at the program's own file. It exits 1 both for
an inconsistent state and for its own failures; only an inconsistent state leaves
"File ... inconsistent" in its report (``-o``), which tells them apart. pmreorder is found
at ``$PMREORDER``, ``../shared/tools/pmreorder/pmreorder.py`` beside the clone, or
``/work/shared/tools/pmreorder/pmreorder.py``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = 0x10000000

__all__ = [
    "Run",
    "find_pmreorder",
    "run_pmemsim",
    "run_pmreorder",
    "synthetic_log",
]


@dataclass(frozen=True)
class Run:
    """One tool's run: ``verdict`` is "consistent", "inconsistent", "failed: ..." (it
    crashed or refused) or "timeout"; ``images`` how many images it judged (pmemsim only)."""

    tool: str
    verdict: str
    seconds: float
    images: int | None = None


def find_pmreorder() -> Path | None:
    for candidate in (
        os.environ.get("PMREORDER"),
        ROOT.parent / "shared" / "tools" / "pmreorder" / "pmreorder.py",
        "/work/shared/tools/pmreorder/pmreorder.py",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def synthetic_log(
    path: str | Path,
    pool: str | Path,
    *,
    epochs: int,
    stores: int,
    size: int,
    seed: int = 1,
) -> Path:
    """``epochs`` times: ``stores`` 8-byte stores, each to its own line among the pool's
    first 1,024 lines (64 KiB; all 64 of a 4 KiB pool), a FLUSH of each line and one FENCE;
    one file of ``size`` bytes registered at ``pool`` (which need not exist)."""
    import random

    rng = random.Random(seed)
    lines_available = min(size // 64, 1024)
    recs = ["START", f"REGISTER_FILE;{Path(pool).resolve()};0x{BASE:x};0x{size:x};0x0"]
    value = 1
    for _ in range(epochs):
        lines = rng.sample(range(lines_available), stores)
        for line in lines:
            recs.append(f"STORE;0x{BASE + line * 64 + 8 * rng.randrange(8):x};0x{value:x};0x8")
            value += 1
        recs += [f"FLUSH;0x{BASE + line * 64:x};0x40" for line in lines]
        recs.append("FENCE")
    recs.append("STOP")
    out = Path(path)
    out.write_text("|".join(recs) + "\n")
    return out


_REGISTER = re.compile(
    r"REGISTER_FILE;([^;|\n]+);0x([0-9a-fA-F]+);0x([0-9a-fA-F]+);0x([0-9a-fA-F]+)"
)


def _relocated(log: Path, folder: Path, bases: dict[str, Path] | None) -> Path:
    """A copy of ``log`` whose registered files are fresh files in ``folder``."""
    text = log.read_text(errors="replace")
    moved: dict[str, Path] = {}
    for match in _REGISTER.finditer(text):
        path, size, offset = match[1], int(match[3], 16), int(match[4], 16)
        if path not in moved:
            moved[path] = folder / f"file{len(moved)}"
            with open(moved[path], "wb") as f:
                source = (bases or {}).get(path)
                if source is not None:
                    f.write(Path(source).read_bytes())
                f.truncate(max(f.tell(), size + offset))
    for old, new in moved.items():
        text = text.replace(f"REGISTER_FILE;{old};", f"REGISTER_FILE;{new};")
    out = folder / "relocated.log"
    out.write_text(text)
    return out


def run_pmreorder(
    log: str | Path,
    checker: list[str] | None = None,
    *,
    library: tuple[str, str] | None = None,
    engine: str = "ReorderFull",
    timeout: float = 120.0,
    bases: dict[str, Path] | None = None,
    pmreorder: Path | None = None,
) -> Run:
    """pmreorder's verdict on ``log`` with a checker program (``checker``: argv, the image
    path appended) or a library checker (``library``: (path.so, function))."""
    tool = pmreorder or find_pmreorder()
    if tool is None:
        return Run("pmreorder", "not found", 0.0)
    with tempfile.TemporaryDirectory(prefix="pmreorder-run-") as tmp:
        copy = _relocated(Path(log), Path(tmp), bases)
        report = Path(tmp) / "out"
        cmd = [sys.executable, str(tool), "-l", str(copy), "-r", engine, "-o", str(report)]
        if library is not None:
            cmd += ["-c", "lib", "-p", library[0], "-n", library[1]]
        else:
            # pmreorder wants the checker as a path ("Invalid path: true" otherwise)
            argv = list(checker or ["true"])
            argv[0] = shutil.which(argv[0]) or argv[0]
            cmd += ["-c", "prog", "-p", shlex.join(argv)]
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Run("pmreorder", "timeout", time.perf_counter() - start)
        seconds = time.perf_counter() - start
        said = report.read_text(errors="replace") if report.exists() else ""
    # It exits 1 for an inconsistent state and for its own failures alike; only the first
    # leaves "File ... inconsistent" in its report.
    if done.returncode == 0:
        return Run("pmreorder", "consistent", seconds)
    if re.search(r"File .* inconsistent", said):
        return Run("pmreorder", "inconsistent", seconds)
    why = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()
    return Run("pmreorder", f"failed: {why[-1][:120]}", seconds)


def run_pmemsim(
    log: str | Path,
    checker: list[str] | None = None,
    *,
    options: list[str] | None = None,
    engine: str = "exhaustive",
    timeout: float = 600.0,
) -> Run:
    """``pmemsim check-log`` on ``log`` with a checker program (``checker``, after ``--``)
    or the checker ``options`` (e.g. ``["--checker-lib", "lib.so:check"]``)."""
    exe = Path(sys.executable).with_name("pmemsim")
    with tempfile.TemporaryDirectory(prefix="pmemsim-run-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [str(exe), "check-log", str(log), "--engine", engine, "--json", str(out)]
        cmd += options or []
        if checker is not None:
            cmd += ["--", *checker]
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Run("pmemsim", "timeout", time.perf_counter() - start)
        seconds = time.perf_counter() - start
        if done.returncode not in (0, 1) or not out.exists():
            return Run("pmemsim", f"failed: {done.stderr.strip()[-200:]}", seconds)
        result = json.loads(out.read_text())
    return Run("pmemsim", result["verdict"], seconds, result.get("images_checked"))
