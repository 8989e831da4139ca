"""Benchmarks of ``pmemsim check-log`` (pmemsim.pmlog) next to pmreorder's published figures.

Run from the repository root (with pmemsim installed)::

    python bench/bench_log.py               # best of 5
    python bench/bench_log.py --quick       # best of 2, fewer images
    python bench/bench_log.py --json-out bench/results/log.json

What is measured (bench/README.md, section "check-log", explains how to read it):

1. In-process throughput: distinct crash images judged per second by a trivial Python checker
   (``lambda image: True``) on a 4 KiB pool, for a log of 50 epochs, each 10 stores to 10
   different lines, flushed and fenced (about 51,000 distinct images). The time includes
   parsing, the replay on the simulator and every image. Target: >= 20,000 images/s.
2. The exact verdict for 10 flushed stores in one epoch (10 lines: 1,024 distinct images),
   parse to verdict. Target: < 1 s. pmreorder's ReorderFull runs its checker 9,864,100 times
   for the same epoch (every ordered non-empty subset).
3. Checker programs: images/s with ``true`` as the checker (the cost of writing an image file
   and running a process), with 1 and 2 threads, on a 7-store epoch (128 images).
4. Memory per image: tracemalloc peak and RSS growth of a whole check (in a fresh child
   process) for the same 10-epoch log on a 4 KiB and on a 64 MiB pool. An image costs the
   lines it changes, so the two must be close; the 64 MiB pool buffer is an anonymous mmap
   whose untouched pages are never resident.

Timing is ``time.perf_counter``, best of N; memory the worst of N child runs. A missed target
shows in the table and the JSON, never as an exception. The last line is ``BENCH_JSON {...}``.
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
import time
from collections.abc import Callable
from typing import Any

from pmemsim.pmlog import FunctionChecker, ProgramChecker, Replay, check_log, parse_log

BASE = 0x10000000
KIB = 1 << 10
MIB = 1 << 20
POOL = "/nonexistent-pmemsim-bench/pool.bin"  # absent: the base image is zeros

RATE_TARGET = 20_000.0  # images/s, at least
VERDICT_TARGET = 1.0  # seconds, less than

#: pmreorder's figures (persistency.md, pmreorder-log.md): states/s and sequences.
PMREORDER_PROCESS = (35.0, 190.0)
PMREORDER_IN_PROCESS = 1_000.0
#: ReorderFull tries every ordered non-empty subset of 10 stores: sum over k of 10!/(10-k)!.
PMREORDER_FULL_10 = 9_864_100

SCHEMA = 1


def epoch_log(epochs: int, stores: int, size: int = 4 * KIB, seed: int = 1) -> str:
    """``epochs`` times: ``stores`` 8-byte stores to distinct lines of the first 4 KiB, a
    FLUSH of each line, one FENCE."""
    rng = random.Random(seed)
    recs = ["START", f"REGISTER_FILE;{POOL};0x{BASE:x};0x{size:x};0x0"]
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
        r = check_log(Replay.of(parse_log(text)), FunctionChecker(_trivial, "trivial"))
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
        r = check_log(Replay.of(parse_log(text)), FunctionChecker(_trivial, "trivial"))
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
    r = check_log(replay, FunctionChecker(_trivial, "trivial"))
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


def _row(name: str, value: str, target: str, status: str, pmreorder: str) -> list[str]:
    return [name, value, target, status, pmreorder]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="best of 2, fewer images")
    ap.add_argument("--json-out", metavar="FILE", help="also write the results here")
    ap.add_argument("--memory-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return 0
    repeat = 2 if args.quick else 5
    epochs = 20 if args.quick else 50
    rate = bench_in_process(repeat, epochs)
    verdict = bench_verdict(repeat)
    program = bench_program(repeat)
    memory = bench_memory(repeat, 10)
    small, large = memory["4KiB"], memory["64MiB"]
    mem_ratio = large["tracemalloc_per_image"] / small["tracemalloc_per_image"]
    rss_mib = large["rss_growth"] / MIB
    rows = [
        _row(
            "in-process, trivial checker, 4 KiB pool",
            f"{rate['images_per_s']:,.0f} images/s",
            f">= {RATE_TARGET:,.0f}",
            "pass" if rate["images_per_s"] >= RATE_TARGET else "MISS",
            f"~{PMREORDER_IN_PROCESS:,.0f} states/s (patched)",
        ),
        _row(
            "10 flushed stores, one epoch: exact verdict",
            f"{verdict['seconds']:.3f} s ({verdict['images_checked']:,} images)",
            f"< {VERDICT_TARGET:g} s",
            "pass" if verdict["seconds"] < VERDICT_TARGET else "MISS",
            f"ReorderFull: {PMREORDER_FULL_10:,} runs",
        ),
        _row(
            "checker program `true`, 1 thread",
            f"{program['jobs1_images_per_s']:,.0f} images/s",
            "-",
            "info",
            f"{PMREORDER_PROCESS[0]:.0f}-{PMREORDER_PROCESS[1]:.0f} states/s",
        ),
        _row(
            "checker program `true`, 2 threads",
            f"{program['jobs2_images_per_s']:,.0f} images/s",
            "-",
            "info",
            "one process at a time",
        ),
        _row(
            "memory per image, 4 KiB pool (tracemalloc)",
            f"{small['tracemalloc_per_image']:,.0f} B",
            "-",
            "info",
            "a file copy per state",
        ),
        _row(
            "memory per image, 64 MiB pool (tracemalloc)",
            f"{large['tracemalloc_per_image']:,.0f} B",
            "~ 4 KiB pool",
            "pass" if mem_ratio < 1.5 else "MISS",
            "-",
        ),
        _row(
            "64 MiB pool: RSS growth of the whole check",
            f"{rss_mib:.1f} MiB ({large['images_checked']:,} images)",
            "< 64 MiB",
            "pass" if rss_mib < 64 else "MISS",
            "-",
        ),
    ]
    head = ["benchmark", "measured", "target", "status", "pmreorder"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    met = sum(1 for r in rows if r[3] == "pass")
    targets = sum(1 for r in rows if r[3] in ("pass", "MISS"))
    print(f"\n{met} of {targets} targets met")
    result = {
        "schema": SCHEMA,
        "in_process": rate,
        "verdict_10_stores": verdict,
        "program": program,
        "memory": memory,
        "memory_ratio_64MiB_to_4KiB": mem_ratio,
        "pmreorder": {
            "process_states_per_s": list(PMREORDER_PROCESS),
            "in_process_states_per_s": PMREORDER_IN_PROCESS,
            "reorder_full_10_stores": PMREORDER_FULL_10,
        },
        "rows": rows,
        "targets": targets,
        "missed": targets - met,
        "all_targets_met": met == targets,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
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
