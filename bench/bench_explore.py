"""Benchmarks of crash exploration through the Python API (``pmemsim.explore.check``).

Run from the repository root (with pmemsim installed)::

    python bench/bench_explore.py             # every section, about two minutes
    python bench/bench_explore.py --quick     # smaller grid and sizes, about half a minute
    python bench/bench_explore.py --json-out bench/results/explore.json
    python bench/bench_explore.py --jobs-only --baseline /path/to/old/checkout

What is measured (bench/README.md, section "explore", explains how to read it):

1. Lazy exact exploration next to exhaustive enumeration, on one epoch that dirties L lines
   (L = 4 to 24; two 8-byte stores per line, so three contents per line) and publishes a
   flag in the same epoch (the bug), with a recovery that checks R of the lines (R = 1 to
   4) once the flag is set. For each: images possible, images recovery ran on, seconds,
   verdict, exact or not. Exhaustive runs get a time budget (``--exhaustive-budget``); past
   it their result is heuristic and says how much it covered. Target: L = 20, R = 3 reaches
   an exact verdict lazily in under 1 s.
2. The API's rate on the 1,024-image case (one epoch of 10 flushed stores to 10 lines, a
   trivial recovery): images covered per second lazily (the default: one run covers all
   1,025), the per-image rate exhaustively (every image run), and lazily with a recovery
   that reads all ten lines (every image its own read path, a run each). Target: >= 30,000
   images/s both lazily and exhaustively.
3. Linear in program length: N persisted 64-byte records (N = 1,000 and 10,000), a
   trivial recovery, lazily (the target) and exhaustively; seconds and peak RSS growth
   (fresh child processes). Target: the 10,000-record run takes at most 12 times the
   1,000-record run.
4. ``jobs``: ``jobs=1`` and ``jobs=2`` taking turns, each run in a fresh child process, on
   checks of growing work (80 to 800 epochs of six lines, one epoch of 12 to 16 lines,
   exhaustive; issue 16's 1,000 and 10,000 persisted records, exhaustively and lazily): wall
   seconds, the CPU seconds of the check's process and of its workers, whether both reports
   are the same, and what two free cores would give (from the CPU times: the parent's serial
   part, all but the chunks it explored after the fork, or half the work of both processes,
   whichever is more). With ``--baseline CHECKOUT`` the
   same runs of another checkout take turns with this one's (``--jobs-only``: only this
   section). Target: ``jobs=2`` faster from 8,000 images.

Timing is ``time.perf_counter``, best of ``--repeat``. A missed target shows in the table and
the JSON, never as an exception. The last line is ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pmemsim as pm
from pmemsim.explore import CheckResult, CrashCheck, check

FLAG_TARGET = 1.0  # seconds, less than: L = 20, R = 3, lazily
RATE_TARGET = 30_000.0  # images/s, at least
LINEAR_TARGET = 12.0  # 10x the records in at most this many times the time
JOBS_FROM = 8_000  # images: from here jobs=2 should be faster
SCHEMA = 3


# -- 1. lazy vs exhaustive -------------------------------------------------------------------


def epoch_check(lines: int, reads: int) -> CrashCheck:
    """``lines`` lines written in one epoch with the flag that publishes them (the bug)."""

    def workload(v: pm.View) -> None:
        for i in range(1, lines + 1):
            v.u64[i * 8] = i
            v.u64[i * 8 + 1] = i * 2
        v.u64[0] = 1  # published in the same epoch: may persist before the lines
        v.persist(0, (lines + 1) * 64)

    def recover(v: pm.View) -> bool:
        if v.u64[0] == 0:
            return True
        return all(v.u64[i * 8] == i for i in range(1, reads + 1))

    return CrashCheck(
        f"epoch L={lines} R={reads}", workload, recover, size=4096, expect="inconsistent"
    )


def _timed(c: CrashCheck, **kw: Any) -> tuple[CheckResult, float]:
    gc.collect()
    t = time.perf_counter()
    r = check(c, progress=None, **kw)
    return r, time.perf_counter() - t


def _row(r: CheckResult, seconds: float) -> dict[str, Any]:
    return {
        "images_run": r.recovery_runs,
        "seconds": round(seconds, 4),
        "verdict": r.verdict,
        "exact": r.exact,
        "covered_fraction": r.covered_fraction,
    }


# -- 2. the API's rate ---------------------------------------------------------------------


def _ten_lines(v: pm.View) -> None:
    for i in range(10):
        v.u64[i * 8] = i + 1
        v.flush(i * 64, 8)
    v.drain()


def api_rate(repeat: int) -> dict[str, Any]:
    """Three ways to check the 1,024 images: lazily with a trivial recovery (the default:
    one run covers them all, so the rate is images *covered* per second), exhaustively (one
    run per image: the per-image rate) and lazily with a recovery that reads every line
    (every image is its own read path: lazy exploration's worst case, a run per image)."""
    cases = (
        ("lazy_trivial", CrashCheck("1024", _ten_lines, lambda v: True)),
        (
            "exhaustive_trivial",
            CrashCheck("1024", _ten_lines, lambda v: True, strategy="exhaustive"),
        ),
        (
            "lazy_reading_all",
            CrashCheck("1024 read", _ten_lines, lambda v: v.read(0, 640) is not None),
        ),
    )
    best: dict[str, Any] = {}
    for label, c in cases:
        runs = []
        for _ in range(max(repeat, 5)):  # each run is milliseconds: best of a few more
            r, s = _timed(c)
            runs.append((s, r))
        s, r = min(runs, key=lambda x: x[0])
        best[label] = {
            "images_run": r.recovery_runs,
            "images_covered": r.images_covered,
            "images_possible": r.images_possible,
            "seconds": round(s, 4),
            "images_per_s": round(r.images_covered / s, 1),
            "runs_per_s": round(r.recovery_runs / s, 1),
        }
    return best


# -- 3. linear in program length -------------------------------------------------------------


def records_check(n: int, strategy: str = "lazy") -> CrashCheck:
    def workload(v: pm.View) -> None:
        for i in range(n):
            off = (i % 60) * 64 + 64
            v.write(off, i.to_bytes(8, "little") * 8)
            v.persist(off, 64)

    return CrashCheck(f"{n} records", workload, lambda v: True, size=4096, strategy=strategy)


def _child(n: int, strategy: str) -> dict[str, Any]:
    """Run the N-record check in a fresh interpreter: seconds and peak RSS growth."""
    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from bench_explore import records_check\n"
        "from peak_rss import peak_rss_bytes\n"
        "from pmemsim.explore import check\n"
        "before = peak_rss_bytes()\n"
        f"c = records_check({n}, {strategy!r})\n"
        "t, cpu = time.perf_counter(), time.process_time()\n"
        "r = check(c, progress=None)\n"
        "s, cpu = time.perf_counter() - t, time.process_time() - cpu\n"
        "after = peak_rss_bytes()\n"
        "print(s, (after - before) / 2**20, r.images_possible, r.recovery_runs, r.exact, cpu)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return {
        "records": n,
        "strategy": strategy,
        "seconds": round(float(out[0]), 3),
        "rss_growth_mib": round(float(out[1]), 1),
        "images_possible": int(out[2]),
        "recovery_runs": int(out[3]),
        "exact": out[4] == "True",
        "cpu_seconds": round(float(out[5]), 3),
    }


def linear(quick: bool, repeat: int, strategy: str = "lazy") -> dict[str, Any]:
    small, big = (500, 5_000) if quick else (1_000, 10_000)
    a = min((_child(small, strategy) for _ in range(repeat)), key=lambda x: x["seconds"])
    b = min((_child(big, strategy) for _ in range(repeat)), key=lambda x: x["seconds"])
    return {
        "small": a,
        "big": b,
        "ratio": round(b["seconds"] / max(a["seconds"], 1e-9), 2),
        "cpu_ratio": round(b["cpu_seconds"] / max(a["cpu_seconds"], 1e-9), 2),
    }


# -- 4. jobs ---------------------------------------------------------------------------------


def jobs_check(epochs: int) -> CrashCheck:
    """``epochs`` epochs of six lines, exhaustive: 63 images per crash point."""

    def workload(v: pm.View) -> None:
        for e in range(epochs):
            for i in range(6):
                v.u64[i * 8 + e % 8] = e * 10 + i + 1
            v.persist(0, 6 * 64)

    return CrashCheck(f"jobs {epochs}x6", workload, lambda v: True, strategy="exhaustive")


def wide_check(lines: int) -> CrashCheck:
    """One epoch of ``lines`` flushed lines, exhaustive: 2**lines images at one point."""

    def workload(v: pm.View) -> None:
        for i in range(lines):
            v.u64[i * 8] = i + 1
        v.persist(0, lines * 64)

    return CrashCheck(f"wide {lines}", workload, lambda v: True, strategy="exhaustive")


#: The checks of section 4, by name: (quick, full).
JOB_CHECKS = {
    "epochs 80x6": (False, lambda: jobs_check(80)),
    "epochs 160x6": (True, lambda: jobs_check(160)),
    "epochs 800x6": (False, lambda: jobs_check(800)),
    "wide 12": (False, lambda: wide_check(12)),
    "wide 13": (True, lambda: wide_check(13)),
    "wide 15": (True, lambda: wide_check(15)),
    "wide 16": (False, lambda: wide_check(16)),
    "records 1000 exhaustive": (True, lambda: records_check(1_000, "exhaustive")),
    "records 10000 exhaustive": (False, lambda: records_check(10_000, "exhaustive")),
    "records 10000 lazy": (False, lambda: records_check(10_000, "lazy")),
}


def _cpu() -> tuple[float, float]:
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def jobs_child(name: str, n: int) -> dict[str, Any]:
    """In a fresh interpreter (whichever pmemsim PYTHONPATH names): one check with ``jobs``
    = n, its wall and CPU seconds, and a digest of its report."""
    import hashlib

    import pmemsim

    # The CPU time the parent spends exploring chunks after the fork (this checkout's
    # design): the rest of its time is the serial part, the recording.
    exploring = [0.0]
    try:
        from pmemsim.explore import shares
    except ImportError:  # (a baseline from before it)
        pass
    else:
        real = shares.Shares._explore

        def timed(self: Any, ch: Any) -> None:
            t = time.process_time()
            real(self, ch)
            exploring[0] += time.process_time() - t

        shares.Shares._explore = timed  # type: ignore[method-assign]
    c = JOB_CHECKS[name][1]()
    gc.collect()
    me, kids = _cpu()
    t = time.perf_counter()
    r = check(c, progress=None, jobs=n)
    wall = time.perf_counter() - t
    me2, kids2 = _cpu()
    return {
        "seconds": wall,
        "cpu_parent": me2 - me,
        "cpu_workers": kids2 - kids,
        "cpu_parent_exploring": exploring[0],
        "images_run": r.recovery_runs,
        "images_possible": r.images_possible,
        "report": hashlib.sha256(r.report().encode()).hexdigest()[:16],
        "pmemsim": os.path.dirname(os.path.realpath(pmemsim.__file__)),
    }


def jobs(quick: bool, repeat: int, baseline: str | None = None) -> list[dict[str, Any]]:
    """jobs=1 next to jobs=2 on checks of growing work, each run a child process, taking
    turns (and with this checkout's, ``baseline``'s) so that all see the same load."""
    import tempfile

    from bench_scale import baseline_path

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = {"this": here} | ({"baseline": os.path.abspath(baseline)} if baseline else {})
    names = [name for name, (in_quick, _) in JOB_CHECKS.items() if in_quick or not quick]
    rows = []
    print(
        f"{'check':<25} {'images':>7} | {'jobs=1 s':>8} {'cpu':>6} | {'jobs=2 s':>8} "
        f"{'parent':>6} {'workers':>7} | {'speedup':>7} {'2 free':>6} same"
    )
    with tempfile.TemporaryDirectory(prefix="bench-explore-") as tmp:
        paths = {"this": ""}
        if baseline:
            (Path(tmp) / "baseline").mkdir()
            paths["baseline"] = baseline_path(sides["baseline"], Path(tmp) / "baseline")
        for name in names:
            runs: dict[str, list[dict[str, Any]]] = {}
            for _ in range(repeat):
                for side, root in sides.items():
                    for n in (1, 2):
                        env = dict(os.environ)
                        if paths[side]:
                            env["PYTHONPATH"] = paths[side]
                        # cwd: a folder holding no pmemsim (bench/ comes first on the path)
                        proc = subprocess.run(
                            [
                                sys.executable,
                                os.path.abspath(__file__),
                                "--jobs-child",
                                name,
                                str(n),
                            ],
                            capture_output=True,
                            text=True,
                            check=False,
                            cwd=tmp,
                            env=env,
                        )
                        if proc.returncode != 0:
                            raise RuntimeError(f"jobs child ({side}) failed:\n{proc.stderr}")
                        got = json.loads(proc.stdout.strip().splitlines()[-1])
                        want = os.path.realpath(os.path.join(root, "pmemsim"))
                        if got.pop("pmemsim") != want:
                            raise RuntimeError(f"{side}: imported another pmemsim than {want}")
                        runs.setdefault(f"{side}_jobs{n}", []).append(got)
            row: dict[str, Any] = {"check": name}
            for key, got in runs.items():
                best = min(got, key=lambda x: x["seconds"])
                row[key] = {k: round(v, 3) if isinstance(v, float) else v for k, v in best.items()}
            for side in sides:
                j1, j2 = row[f"{side}_jobs1"], row[f"{side}_jobs2"]
                pre = "" if side == "this" else "baseline_"
                row[f"{pre}speedup"] = round(j1["seconds"] / max(j2["seconds"], 1e-9), 2)
                # On two free cores: the parent's serial part (all but the chunks it
                # explored after the fork), or half of all the work, whichever is more
                # (the baseline's workers started after the parent's recording: its CPU,
                # then the workers' shared between two).
                if side == "this":
                    serial = j2["cpu_parent"] - j2["cpu_parent_exploring"]
                    two_free = max(serial, (j2["cpu_parent"] + j2["cpu_workers"]) / 2)
                else:
                    two_free = j2["cpu_parent"] + j2["cpu_workers"] / 2
                row[f"{pre}speedup_two_free_cores"] = round(
                    j1["cpu_parent"] / max(two_free, 1e-9), 2
                )
                row[f"{pre}same_report"] = all(
                    r["report"] == runs[f"{side}_jobs1"][0]["report"]
                    for n in (1, 2)
                    for r in runs[f"{side}_jobs{n}"]
                )
            if baseline:
                row["jobs1_this_over_baseline"] = round(
                    row["this_jobs1"]["seconds"] / max(row["baseline_jobs1"]["seconds"], 1e-9), 2
                )
                row["jobs1_cpu_this_over_baseline"] = round(
                    row["this_jobs1"]["cpu_parent"]
                    / max(row["baseline_jobs1"]["cpu_parent"], 1e-9),
                    2,
                )
            rows.append(row)
            _print_jobs_row(row, baseline is not None)
    return rows


def _print_jobs_row(row: dict[str, Any], baseline: bool) -> None:
    sides = ("this", "baseline") if baseline else ("this",)
    for side in sides:
        a, b = row[f"{side}_jobs1"], row[f"{side}_jobs2"]
        pre = "" if side == "this" else "baseline_"
        label = row["check"] if side == "this" else "  (baseline)"
        print(
            f"{label:<25} {a['images_possible']:>7,} | {a['seconds']:>8.3f} "
            f"{a['cpu_parent']:>6.3f} | {b['seconds']:>8.3f} {b['cpu_parent']:>6.3f} "
            f"{b['cpu_workers']:>7.3f} | {row[pre + 'speedup']:>7.2f} "
            f"{row[pre + 'speedup_two_free_cores']:>6.2f} "
            f"{'yes' if row[pre + 'same_report'] else 'NO'}",
            flush=True,
        )
    if baseline:
        print(
            f"{'':25} jobs=1 this/baseline: {row['jobs1_this_over_baseline']} wall, "
            f"{row['jobs1_cpu_this_over_baseline']} CPU",
            flush=True,
        )


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller grid and sizes")
    ap.add_argument("--repeat", type=int, default=None, help="best of N (default 3, quick 1)")
    ap.add_argument(
        "--exhaustive-budget",
        type=float,
        default=5.0,
        help="seconds an exhaustive run may take before it stops (default 5)",
    )
    ap.add_argument("--json-out", help="also write the JSON to this file")
    ap.add_argument(
        "--baseline", metavar="CHECKOUT", help="section 4 also with another checkout's pmemsim"
    )
    ap.add_argument("--jobs-only", action="store_true", help="only section 4 (jobs)")
    ap.add_argument("--jobs-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.jobs_child:
        print(json.dumps(jobs_child(args.jobs_child[0], int(args.jobs_child[1]))))
        return 0
    repeat = args.repeat or (1 if args.quick else 3)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if args.baseline and not os.path.isdir(os.path.join(args.baseline, "pmemsim")):
        ap.error(f"--baseline {args.baseline}: not a pmemsim checkout (no pmemsim/)")
    if args.jobs_only:
        print(f"== 4. jobs (load average {_load()} at the start)")
        jb = jobs(args.quick, repeat, args.baseline)
        print(f"load average {_load()} at the end")
        doc = {"schema": SCHEMA, "quick": args.quick, "repeat": repeat, "jobs": jb}
        print("BENCH_JSON " + json.dumps(doc))
        return 0

    print("== 1. lazy vs exhaustive, one epoch of L lines, recovery reading R of them")
    grid = lazy_vs_exhaustive_budgeted(args.quick, args.exhaustive_budget)
    head = (
        f"{'L':>3} {'R':>2} {'images':>18} | {'lazy: run':>9} {'s':>7} {'verdict':>12} "
        f"{'exact':>5} | {'exhaustive: run':>15} {'s':>7} {'verdict':>12} {'covered':>9}"
    )
    print(head)
    print("-" * len(head))
    for row in grid:
        lz, ex = row["lazy"], row["exhaustive"]
        print(
            f"{row['lines']:>3} {row['reads']:>2} {row['images_possible']:>18,} | "
            f"{lz['images_run']:>9,} {lz['seconds']:>7.3f} {lz['verdict']:>12} "
            f"{'yes' if lz['exact'] else 'NO':>5} | {ex['images_run']:>15,} "
            f"{ex['seconds']:>7.3f} {ex['verdict']:>12} {ex['covered_fraction']:>8.2%}"
        )
    target = next(r for r in grid if r["lines"] == 20 and r["reads"] == 3)
    flag_ok = target["lazy"]["exact"] and target["lazy"]["seconds"] < FLAG_TARGET

    print("\n== 2. the API's rate on the 1,024-image case")
    rate = api_rate(repeat)
    for label, r in rate.items():
        print(
            f"{label:<20} {r['images_covered']:>6,} images covered by {r['images_run']:>5,} "
            f"runs in {r['seconds']:.4f} s: {r['images_per_s']:>10,.0f} images/s "
            f"({r['runs_per_s']:,.0f} runs/s)"
        )
    rate_ok = (
        rate["lazy_trivial"]["images_per_s"] >= RATE_TARGET
        and rate["exhaustive_trivial"]["images_per_s"] >= RATE_TARGET
    )

    print("\n== 3. linear in program length (fresh processes)")
    lin = linear(args.quick, repeat)
    lin_exhaustive = linear(args.quick, repeat, "exhaustive")
    for label, result in (("lazy (default)", lin), ("exhaustive", lin_exhaustive)):
        for k in ("small", "big"):
            r = result[k]
            print(
                f"{label:<15} {r['records']:>6,} records: {r['seconds']:>7.3f} s "
                f"({r['cpu_seconds']:.3f} s CPU), RSS "
                f"+{r['rss_growth_mib']} MiB, {r['images_possible']:,} images possible, "
                f"{r['recovery_runs']:,} runs"
            )
        print(
            f"{label:<15} ratio {result['ratio']} in wall seconds, {result['cpu_ratio']} in CPU "
            f"seconds (target <= {LINEAR_TARGET})"
        )
    linear_ok = lin["ratio"] <= LINEAR_TARGET

    print(f"\n== 4. jobs (load average {_load()} at the start)")
    jb = jobs(args.quick, repeat, args.baseline)
    print(f"load average {_load()} at the end; target: speedup > 1 from {JOBS_FROM:,} images")
    big = [row for row in jb if row["this_jobs1"]["images_possible"] >= JOBS_FROM]
    jobs_ok = all(row["speedup"] > 1.0 for row in big)

    targets = {
        "lazy_L20_R3_under_1s": flag_ok,
        "api_rate_30k": rate_ok,
        "linear_12x": linear_ok,
        "jobs2_faster": jobs_ok,
    }
    print(f"\ntargets met: {sum(targets.values())} of {len(targets)}: {targets}")
    doc = {
        "schema": SCHEMA,
        "quick": args.quick,
        "repeat": repeat,
        "grid": grid,
        "rate": rate,
        "linear": lin,
        "linear_exhaustive": lin_exhaustive,
        "jobs": jb,
        "targets": targets,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    text = json.dumps(doc)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(doc, f, indent=2)
    print("BENCH_JSON " + text)
    return 0


def lazy_vs_exhaustive_budgeted(quick: bool, budget: float) -> list[dict[str, Any]]:
    """Section 1, the exhaustive runs limited to ``budget`` seconds each."""
    sizes = (4, 8, 12, 20) if quick else (4, 8, 12, 16, 20, 24)
    reads = (1, 3) if quick else (1, 2, 3, 4)
    rows = []
    for lines in sizes:
        for r in reads:
            c = epoch_check(lines, r)
            lazy, lazy_s = _timed(c)
            capped = dataclasses.replace(c, strategy="exhaustive", time_budget=budget)
            full, full_s = _timed(capped)
            rows.append(
                {
                    "lines": lines,
                    "reads": r,
                    "images_possible": lazy.images_possible,
                    "lazy": _row(lazy, lazy_s),
                    "exhaustive": _row(full, full_s),
                }
            )
    return rows


if __name__ == "__main__":
    sys.exit(main())
