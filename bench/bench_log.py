"""Benchmarks of ``pmemsim check-log`` (pmemsim.pmlog).

Run from the repository root (with pmemsim installed)::

    python bench/bench_log.py               # best of 3
    python bench/bench_log.py --quick       # best of 2, smaller logs
    python bench/bench_log.py --json-out bench/results/log.json

What is measured (bench/README.md, section "check-log", explains how to read it); every
figure is parse to verdict, on logs of N epochs, each K 8-byte stores to K different lines of
the pool's first 4 KiB, a FLUSH of each line and a FENCE:

1. In-process Python checker (``lambda image: True``), 50 x 10 on a 4 KiB pool (about 51,000
   distinct images). Target (issue 10): >= 20,000 images/s.
2. C library checker (``int ok(const char *path) { return 1; }``, --checker-lib), the same
   log. Target (issue 10): >= 20,000 images/s.
3. Checker program ``true``, 1 and 2 threads, a 7-store epoch (128 images).
4. Checker program on a 4 KiB and on a 64 MiB pool (a file of that size, full of data), the
   same 3 x 7 log: an image costs what its crash point changes, not the pool. Target: the
   64 MiB rate within 2x of the 4 KiB rate.
5. In-process, 30,000 x 2 on a 64 MiB pool. Target (issue 16): >= 50,000 images/s.
6. Peak RSS of a whole check of 100,000 x 2 (a fresh process). Target (issue 16): < 200 MB.
7. A trivial log (one store) checked by a fresh ``pmemsim check-log`` process, wall time,
   best of 5 after a first run that writes the bytecode (as an installed package has it).
   Target (issue 16): < 0.1 s.
8. The exact verdict for 10 flushed stores in one epoch (1,024 images). Target: < 1 s.
9. Memory per image (tracemalloc) on a 4 KiB and a 64 MiB pool, 10 x 10: close.
10. Checks in a row from Python with one C library checker (its worker kept from one check
    to the next), 100 x 1 on a 4 KiB pool: the median check against the in-process Python
    checker's, the same checks alternating. Target: within 1.5x (a worker that made each
    check wait 15 ms for the kernel once took 16x).

pmreorder side by side over many shapes is bench/bench_scale.py. Timing is
``time.perf_counter``, best of N; memory the worst of N child runs. A missed target shows in
the table and the JSON, never as an exception. The last line is ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from pmemsim.pmlog import (
    FunctionChecker,
    LibChecker,
    ProgramChecker,
    Replay,
    check_log,
    parse_log,
    read_log,
)

BASE = 0x10000000
KIB = 1 << 10
MIB = 1 << 20
POOL = "/nonexistent-pmemsim-bench/pool.bin"  # absent: the base image is zeros

RATE_TARGET = 20_000.0  # images/s, in-process and library checker (issue 10)
SCALE_TARGET = 50_000.0  # images/s, 30,000 x 2 on 64 MiB (issue 16)
RSS_TARGET = 200 * MIB  # 100,000 x 2 (issue 16)
TRIVIAL_TARGET = 0.1  # seconds, a whole command on a trivial log (issue 16)
VERDICT_TARGET = 1.0  # seconds, less than

SCHEMA = 3
#: Image throughput is measured by plan: the default for an in-process checker, lazy
#: exploration, runs a checker that reads nothing once per log (row 10 measures it).
ENGINE = "exhaustive"


def epoch_log(
    epochs: int, stores: int, size: int = 4 * KIB, seed: int = 1, pool: str = POOL
) -> str:
    """``epochs`` times: ``stores`` 8-byte stores to distinct lines of the first 4 KiB, a
    FLUSH of each line, one FENCE."""
    rng = random.Random(seed)
    recs = ["START", f"REGISTER_FILE;{pool};0x{BASE:x};0x{size:x};0x0"]
    value = 1
    for _ in range(epochs):
        lines = rng.sample(range(64), stores)
        for line in lines:
            recs.append(f"STORE;0x{BASE + line * 64 + 8 * rng.randrange(8):x};0x{value:x};0x8")
            value += 1
        recs += [f"FLUSH;0x{BASE + line * 64:x};0x40" for line in lines]
        recs.append("FENCE")
    recs.append("STOP")
    return "|".join(recs)


def best_of(repeat: int, run: Callable[[], tuple[float, Any]]) -> tuple[float, Any]:
    best: tuple[float, Any] | None = None
    for _ in range(repeat):
        gc.collect()
        t, extra = run()
        if best is None or t < best[0]:
            best = (t, extra)
    assert best is not None
    return best


def _trivial(image: memoryview) -> bool:
    return True


def bench_in_process(repeat: int, epochs: int) -> dict[str, float]:
    text = epoch_log(epochs, 10)

    def once() -> tuple[float, Any]:
        t0 = time.perf_counter()
        r = check_log(
            Replay.of(parse_log(text)), FunctionChecker(_trivial, "trivial"), engine=ENGINE
        )
        return time.perf_counter() - t0, r

    seconds, r = best_of(repeat, once)
    return {
        "epochs": epochs,
        "images_checked": r.images_checked,
        "seconds": seconds,
        "images_per_s": r.images_checked / seconds,
    }


def bench_verdict(repeat: int) -> dict[str, float]:
    text = epoch_log(1, 10)

    def once() -> tuple[float, Any]:
        t0 = time.perf_counter()
        r = check_log(
            Replay.of(parse_log(text)), FunctionChecker(_trivial, "trivial"), engine=ENGINE
        )
        return time.perf_counter() - t0, r

    seconds, r = best_of(repeat, once)
    assert r.exact
    return {"images_checked": r.images_checked, "seconds": seconds}


def bench_program(repeat: int) -> dict[str, float]:
    true = shutil.which("true") or "/bin/true"
    text = epoch_log(1, 7)
    out: dict[str, float] = {}
    for jobs in (1, 2):

        def once(jobs: int = jobs) -> tuple[float, Any]:
            t0 = time.perf_counter()
            r = check_log(Replay.of(parse_log(text)), ProgramChecker((true,)), jobs=jobs)
            return time.perf_counter() - t0, r

        seconds, r = best_of(max(1, repeat // 2), once)
        out[f"jobs{jobs}_images_per_s"] = r.images_checked / seconds
        out["images_checked"] = r.images_checked
    return out


def _library(tmp: str) -> str | None:
    """A trivial C checker as a shared library (None without gcc)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    src, lib = os.path.join(tmp, "ok.c"), os.path.join(tmp, "libok.so")
    with open(src, "w") as f:
        f.write("int ok(const char *path) { (void)path; return 1; }\n")
    subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", lib, src], check=True)
    return lib


def bench_library(repeat: int, epochs: int, tmp: str) -> dict[str, float] | None:
    lib = _library(tmp)
    if lib is None:
        return None
    text = epoch_log(epochs, 10)
    checker = LibChecker.parse(f"{lib}:ok")

    def once() -> tuple[float, Any]:
        t0 = time.perf_counter()
        r = check_log(Replay.of(parse_log(text)), checker)
        return time.perf_counter() - t0, r

    seconds, r = best_of(repeat, once)
    return {
        "images_checked": r.images_checked,
        "seconds": seconds,
        "images_per_s": r.images_checked / seconds,
    }


def bench_in_a_row(checks: int, tmp: str) -> dict[str, float] | None:
    """``checks`` checks of one log with one parsed C library checker (its worker kept),
    alternating with the same check by an in-process Python checker: the median of each."""
    lib = _library(tmp)
    if lib is None:
        return None
    text = epoch_log(100, 1)
    checkers: dict[str, Any] = {
        "library": LibChecker.parse(f"{lib}:ok"),
        "python": FunctionChecker(_trivial, "trivial"),
    }
    times: dict[str, list[float]] = {name: [] for name in checkers}
    for k in range(checks + 1):
        for name, checker in checkers.items():
            t0 = time.perf_counter()
            check_log(Replay.of(parse_log(text)), checker, engine="accumulative")
            if k:  # (the first: the worker's start and first-use work)
                times[name].append(time.perf_counter() - t0)
    checkers["library"].close()
    lib_s, py_s = (sorted(times[n])[len(times[n]) // 2] for n in ("library", "python"))
    return {"checks": checks, "library_median_s": lib_s, "python_median_s": py_s}


def bench_pool_size(repeat: int, tmp: str) -> dict[str, float]:
    """The checker program ``true`` on a 4 KiB and a 64 MiB pool file full of data."""
    true = shutil.which("true") or "/bin/true"
    out: dict[str, float] = {}
    for label, size in (("4KiB", 4 * KIB), ("64MiB", 64 * MIB)):
        pool = os.path.join(tmp, f"pool-{label}.bin")
        with open(pool, "wb") as f:
            for _ in range(0, size, MIB):
                f.write(os.urandom(min(MIB, size)))
        text = epoch_log(3, 7, size=size, pool=pool)

        def once(text: str = text) -> tuple[float, Any]:
            t0 = time.perf_counter()
            r = check_log(Replay.of(parse_log(text)), ProgramChecker((true,)))
            return time.perf_counter() - t0, r

        seconds, r = best_of(max(1, repeat // 2), once)
        out[f"{label}_images_per_s"] = r.images_checked / seconds
        out["images_checked"] = r.images_checked
    return out


def bench_scale(repeat: int, epochs: int, tmp: str) -> dict[str, float]:
    path = os.path.join(tmp, "scale.log")
    with open(path, "w") as f:
        f.write(epoch_log(epochs, 2, size=64 * MIB) + "\n")

    def once() -> tuple[float, Any]:
        t0 = time.perf_counter()
        r = check_log(
            Replay.of(read_log(path)), FunctionChecker(_trivial, "trivial"), engine=ENGINE
        )
        return time.perf_counter() - t0, r

    seconds, r = best_of(max(1, repeat // 2), once)
    return {
        "epochs": epochs,
        "images_checked": r.images_checked,
        "seconds": seconds,
        "images_per_s": r.images_checked / seconds,
    }


def bench_lazy(repeat: int, epochs: int, tmp: str) -> dict[str, float]:
    """The default in-process exploration (lazy, by read path) with a checker that reads one
    line, 30,000 x 2 on 64 MiB: images covered per second."""
    path = os.path.join(tmp, "scale.log")

    def reads_line_0(image: Any) -> bool:
        return image[0:8] is not None

    def once() -> tuple[float, Any]:
        t0 = time.perf_counter()
        r = check_log(Replay.of(read_log(path)), FunctionChecker(reads_line_0, "line 0"))
        return time.perf_counter() - t0, r

    seconds, r = best_of(max(1, repeat // 2), once)
    return {
        "epochs": epochs,
        "images_possible": r.images_possible,
        "runs": r.images_checked,
        "seconds": seconds,
        "images_per_s": r.images_possible / seconds,
    }


def rss_child(path: str) -> dict[str, float]:
    import resource

    from peak_rss import peak_rss_bytes

    r = check_log(Replay.of(read_log(path)), FunctionChecker(_trivial, "trivial"), engine=ENGINE)
    peak = peak_rss_bytes()
    # The self-check's twin (a fork, reaped by now): its peak counts the pages it shares
    # with this process, so the sum of the two is an upper bound of the memory used.
    twin = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {
        "images_checked": r.images_checked,
        "peak_rss": peak,
        "children_peak_rss": twin,
        "seconds": r.seconds,
    }


def bench_rss(epochs: int, tmp: str) -> dict[str, float]:
    path = os.path.join(tmp, "rss.log")
    with open(path, "w") as f:
        f.write(epoch_log(epochs, 2, size=64 * MIB) + "\n")
    done = subprocess.run(
        [sys.executable, __file__, "--rss-child", path], check=True, capture_output=True, text=True
    )
    got: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    got["epochs"] = epochs
    return got


def bench_trivial(repeat: int, tmp: str) -> dict[str, float]:
    log = os.path.join(tmp, "trivial.log")
    with open(log, "w") as f:
        f.write(epoch_log(1, 1) + "\n")
    with open(os.path.join(tmp, "trivialcheck.py"), "w") as f:
        f.write("def ok(image):\n    return True\n")

    # Bytecode as an installed package has it: written by a first run (this environment may
    # set PYTHONDONTWRITEBYTECODE, and compiling every module costs more than importing it).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def once(argv: list[str]) -> tuple[float, Any]:
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=tmp, check=True, capture_output=True, env=env)
        return time.perf_counter() - t0, None

    cmd = [sys.executable, "-m", "pmemsim", "check-log", log, "--checker-py", "trivialcheck:ok"]
    once(cmd)
    seconds, _ = best_of(max(repeat, 5), lambda: once(cmd))
    python, _ = best_of(repeat, lambda: once([sys.executable, "-c", "pass"]))
    return {"seconds": seconds, "python_startup": python}


# -- memory, in child processes ----------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_child(pool: int, epochs: int) -> dict[str, float]:
    import tracemalloc

    text = epoch_log(epochs, 10, size=pool)
    replay = Replay.of(parse_log(text))
    gc.collect()
    _trim()
    rss0 = _rss()
    tracemalloc.start()
    r = check_log(replay, FunctionChecker(_trivial, "trivial"), engine=ENGINE)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = _rss() - rss0
    return {
        "images_checked": r.images_checked,
        "tracemalloc_peak": peak,
        "rss_growth": max(rss, 0),
        "tracemalloc_per_image": peak / r.images_checked,
        "rss_per_image": max(rss, 0) / r.images_checked,
    }


def bench_memory(repeat: int, epochs: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for label, pool in (("4KiB", 4 * KIB), ("64MiB", 64 * MIB)):
        worst: dict[str, float] | None = None
        for _ in range(max(1, repeat // 2)):
            done = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(pool), str(epochs)],
                check=True,
                capture_output=True,
                text=True,
            )
            got = json.loads(done.stdout.strip().splitlines()[-1])
            if worst is None or got["tracemalloc_peak"] > worst["tracemalloc_peak"]:
                worst = got
        assert worst is not None
        out[label] = worst
    return out


# -- report ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="best of 2, smaller logs")
    ap.add_argument("--json-out", metavar="FILE", help="also write the results here")
    ap.add_argument("--memory-child", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return 0
    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child)))
        return 0
    repeat = 2 if args.quick else 3
    epochs = 20 if args.quick else 50
    scale_epochs = 3_000 if args.quick else 30_000
    rss_epochs = 10_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory(prefix="pmemsim-bench-log-") as tmp:
        rate = bench_in_process(repeat, epochs)
        library = bench_library(repeat, epochs, tmp)
        program = bench_program(repeat)
        sizes = bench_pool_size(repeat, tmp)
        scale = bench_scale(repeat, scale_epochs, tmp)
        lazy = bench_lazy(repeat, scale_epochs, tmp)
        rss = bench_rss(rss_epochs, tmp)
        trivial = bench_trivial(repeat, tmp)
        in_a_row = bench_in_a_row(10 if args.quick else 30, tmp)
    verdict = bench_verdict(repeat)
    memory = bench_memory(repeat, 10)
    small, large = memory["4KiB"], memory["64MiB"]
    mem_ratio = large["tracemalloc_per_image"] / small["tracemalloc_per_image"]
    size_ratio = sizes["64MiB_images_per_s"] / sizes["4KiB_images_per_s"]

    def status(ok: bool) -> str:
        return "pass" if ok else "MISS"

    rows = [
        [
            "in-process Python checker, 4 KiB pool",
            f"{rate['images_per_s']:,.0f} images/s ({rate['images_checked']:,})",
            f">= {RATE_TARGET:,.0f}",
            status(rate["images_per_s"] >= RATE_TARGET),
        ],
        [
            "C library checker (--checker-lib), 4 KiB pool",
            "no gcc"
            if library is None
            else f"{library['images_per_s']:,.0f} images/s ({library['images_checked']:,})",
            f">= {RATE_TARGET:,.0f}",
            "skip" if library is None else status(library["images_per_s"] >= RATE_TARGET),
        ],
        [
            "checker program `true`, 1 thread",
            f"{program['jobs1_images_per_s']:,.0f} images/s",
            "-",
            "info",
        ],
        [
            "checker program `true`, 2 threads",
            f"{program['jobs2_images_per_s']:,.0f} images/s",
            "-",
            "info",
        ],
        [
            "checker program, 64 MiB pool vs 4 KiB (file of data)",
            f"{sizes['64MiB_images_per_s']:,.0f} vs {sizes['4KiB_images_per_s']:,.0f} images/s",
            "within 2x",
            status(size_ratio >= 0.5),
        ],
        [
            f"in-process, {scale['epochs']:,} x 2 stores, 64 MiB pool",
            f"{scale['images_per_s']:,.0f} images/s ({scale['images_checked']:,} in "
            f"{scale['seconds']:.1f} s)",
            f">= {SCALE_TARGET:,.0f}",
            status(scale["images_per_s"] >= SCALE_TARGET),
        ],
        [
            f"lazy (default), checker reading one line, {lazy['epochs']:,} x 2, 64 MiB",
            f"{lazy['images_per_s']:,.0f} images covered/s ({lazy['runs']:,} runs, "
            f"{lazy['seconds']:.1f} s)",
            "-",
            "info",
        ],
        [
            f"peak RSS, {rss['epochs']:,} x 2 stores (whole process)",
            f"{rss['peak_rss'] / MIB:,.0f} MiB",
            f"< {RSS_TARGET // MIB} MiB",
            status(rss["peak_rss"] < RSS_TARGET),
        ],
        [
            "... and its forked children's peak (the self-check's twin, shared pages counted)",
            f"{rss['children_peak_rss'] / MIB:,.0f} MiB",
            "-",
            "info",
        ],
        [
            "trivial log, a fresh `pmemsim check-log`",
            f"{trivial['seconds']:.3f} s (python alone {trivial['python_startup']:.3f} s)",
            f"< {TRIVIAL_TARGET:g} s",
            status(trivial["seconds"] < TRIVIAL_TARGET),
        ],
        [
            "10 flushed stores, one epoch: exact verdict",
            f"{verdict['seconds']:.3f} s ({verdict['images_checked']:,} images)",
            f"< {VERDICT_TARGET:g} s",
            status(verdict["seconds"] < VERDICT_TARGET),
        ],
        [
            "memory per image, 4 KiB / 64 MiB pool (tracemalloc)",
            f"{small['tracemalloc_per_image']:,.0f} / {large['tracemalloc_per_image']:,.0f} B",
            "close",
            status(mem_ratio < 1.5),
        ],
        [
            "checks in a row, C library checker (kept worker) vs Python, 100 x 1",
            "no gcc"
            if in_a_row is None
            else f"{in_a_row['library_median_s'] * 1e3:.2f} vs "
            f"{in_a_row['python_median_s'] * 1e3:.2f} ms a check (median)",
            "within 1.5x",
            "skip"
            if in_a_row is None
            else status(in_a_row["library_median_s"] <= 1.5 * in_a_row["python_median_s"]),
        ],
    ]
    head = ["benchmark", "measured", "target", "status"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    met = sum(1 for r in rows if r[3] == "pass")
    targets = sum(1 for r in rows if r[3] in ("pass", "MISS"))
    print(f"\n{met} of {targets} targets met")
    result = {
        "schema": SCHEMA,
        "in_process": rate,
        "library": library,
        "program": program,
        "pool_size": sizes,
        "scale": scale,
        "lazy": lazy,
        "rss": rss,
        "trivial": trivial,
        "verdict_10_stores": verdict,
        "memory": memory,
        "in_a_row": in_a_row,
        "memory_ratio_64MiB_to_4KiB": mem_ratio,
        "rows": rows,
        "targets": targets,
        "missed": targets - met,
        "all_targets_met": met == targets,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load": os.getloadavg()[0],
        "quick": args.quick,
    }
    text = json.dumps(result, sort_keys=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
    print("BENCH_JSON " + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
