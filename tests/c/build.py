"""Compile the corpus programs and their checkers with gcc.

``build(outdir)`` returns the paths it made, by name: ``PROG`` for each program, ``check_PROG``
for each checker program and ``libcheck_PROG.so`` for the same check as a shared library
(``int check(const char *path)``; two_files also has ``check_pair``). Programs are built at
-O0 so that every C assignment is its own store and keeps its source line in the stack traces
pmemcheck writes; with ``pmemcheck_include`` (a pmemcheck build's PREFIX/include) they carry
the client requests that register their files and emit their markers, otherwise those are
no-ops and the programs run only natively.

Run as a script: ``python3 tests/c/build.py OUTDIR [PMEMCHECK_INCLUDE]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: program name -> extra libraries it links
PROGRAMS: dict[str, tuple[str, ...]] = {
    "raw_tail": (),
    "raw_flag": (),
    "raw_deep": (),
    "undo_tx": (),
    "two_files": (),
    "hashtab": (),
    "pmem2_kv": ("-lpmem2",),
}

CFLAGS = ("-std=gnu11", "-O0", "-g", "-Wall", "-Wextra", "-mclwb", "-mclflushopt")


class BuildError(RuntimeError):
    """gcc failed; the message holds its output."""


def gcc() -> str | None:
    return shutil.which("gcc")


def libpmem2_dev() -> bool:
    """True when a program can be linked against libpmem2 (header and library)."""
    cc = gcc()
    if cc is None:
        return False
    probe = subprocess.run(
        [cc, "-x", "c", "-", "-o", "/dev/null", "-lpmem2"],
        input="#include <libpmem2.h>\nint main(void) { return pmem2_errormsg() == 0; }\n",
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(cmd)}\n{done.stdout}{done.stderr}")


def build(
    outdir: str | Path,
    pmemcheck_include: str | Path | None = None,
    programs: tuple[str, ...] | None = None,
) -> dict[str, Path]:
    """Build the named programs (all by default; pmem2_kv only where libpmem2 links) and
    every checker, into ``outdir``."""
    cc = gcc()
    if cc is None:
        raise BuildError("gcc not found")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    names = programs if programs is not None else tuple(PROGRAMS)
    inc = [f"-I{pmemcheck_include}"] if pmemcheck_include else []
    jobs: dict[str, list[str]] = {}
    made: dict[str, Path] = {}
    for name in names:
        if PROGRAMS[name] == ("-lpmem2",) and programs is None and not libpmem2_dev():
            continue
        made[name] = out / name
        src = str(HERE / f"{name}.c")
        jobs[name] = [cc, *CFLAGS, *inc, src, "-o", str(made[name]), *PROGRAMS[name]]
    for name in PROGRAMS:
        src = str(HERE / f"check_{name}.c")
        exe, lib = out / f"check_{name}", out / f"libcheck_{name}.so"
        made[exe.name], made[lib.name] = exe, lib
        jobs[exe.name] = [cc, *CFLAGS, "-O2", src, "-o", str(exe)]
        jobs[lib.name] = [
            cc,
            *CFLAGS,
            "-O2",
            "-DCHECKER_LIB",
            "-shared",
            "-fPIC",
            src,
            "-o",
            str(lib),
        ]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_run, jobs.values()))
    return made


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: build.py OUTDIR [PMEMCHECK_INCLUDE]")
    for key, path in build(*sys.argv[1:]).items():
        print(f"{key}: {path}")
