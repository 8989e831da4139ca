"""Crash exploration inline, with ``--jobs 2`` and on a 2-worker Dask LocalCluster, in one run.

Run from the repository root (pmemsim installed with its dask extra)::

    python bench/bench_dask.py            # about two minutes on a quiet 2-core machine
    python bench/bench_dask.py --quick    # a smaller check, fewer batch sizes
    python bench/bench_dask.py --json-out bench/results/dask.json

The check: EPOCHS epochs, each storing to six lines and persisting them (exhaustive: 64
images per epoch, 50,401 for 800 epochs), with a recovery that reads the six lines. It is
checked (1) inline, (2) with ``jobs=2`` (forked worker processes), (3) on a LocalCluster of
2 worker processes (one thread each) for several batch sizes: the least images per batch,
with up to 64 batches per worker so that the size is what is asked. The cluster is started
once, before timing (its start is reported apart). Every run must give the same report as
inline; the rate is images covered per second of the whole ``check()`` call (the client records
the workload, each worker records it again, the client merges), best of ``--repeat``.

The batch size the Dask executor uses (``pmemsim.distributed.executor.BATCH``) is the
least images per batch, with at most ``PER_WORKER`` batches per worker; the table says
which size was fastest here, and the last row runs the executor's defaults. The last line is
``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import pmemsim as pm
from pmemsim.explore import CheckResult, CrashCheck, check

SCHEMA = 1
LINES = 6


def the_check(epochs: int) -> CrashCheck:
    def workload(v: pm.View) -> None:
        for e in range(epochs):
            for i in range(LINES):
                v.u64[i * 8 + e % 8] = e * 10 + i + 1
            v.persist(0, LINES * 64)

    def recover(v: pm.View) -> bool:
        return all(v.u64[i * 8] >= 0 for i in range(LINES))

    return CrashCheck("bench_dask", workload, recover, strategy="exhaustive")


def timed(c: CrashCheck, repeat: int, **kw: Any) -> tuple[float, CheckResult]:
    best: tuple[float, CheckResult] | None = None
    for _ in range(repeat):
        start = time.perf_counter()
        r = check(c, progress=None, **kw)
        s = time.perf_counter() - start
        if best is None or s < best[0]:
            best = (s, r)
    assert best is not None
    return best


def row(name: str, seconds: float, r: CheckResult, **extra: Any) -> dict[str, Any]:
    out = {
        "how": name,
        "seconds": round(seconds, 3),
        "images": r.images_covered,
        "recovery_runs": r.recovery_runs,
        "images_per_s": round(r.images_covered / seconds, 1),
        **extra,
    }
    print(
        f"{name:<28} {seconds:8.2f} s  {r.images_covered:>8,} images  "
        f"{r.images_covered / seconds:>10,.0f} images/s"
        + "".join(f"  {k}={v}" for k, v in extra.items())
    )
    sys.stdout.flush()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 epochs, two batch sizes")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the check (default 800)")
    ap.add_argument("--repeat", type=int, default=None, help="best of N (default 2, quick 1)")
    ap.add_argument("--json-out", help="also write the JSON to this file")
    args = ap.parse_args(argv)
    epochs = args.epochs or (200 if args.quick else 800)
    repeat = args.repeat or (1 if args.quick else 2)
    sizes = [1000, 4000] if args.quick else [250, 1000, 4000, 16000]

    from pmemsim.distributed import Dask
    from pmemsim.distributed.executor import BATCH, PER_WORKER

    c = the_check(epochs)
    print(f"check: {epochs} epochs x {LINES} lines, exhaustive; {os.cpu_count()} CPU(s)\n")
    rows = []
    s, inline = timed(c, repeat)
    rows.append(row("inline", s, inline))
    s, r = timed(c, repeat, jobs=2)
    assert r.report() == inline.report()
    rows.append(row("jobs=2", s, r))

    start = time.perf_counter()
    with Dask("local:2", per_worker=64) as ex:
        started = time.perf_counter() - start
        print(f"(LocalCluster of 2 workers started in {started:.1f} s)")
        for size in sizes:
            ex.batch = size
            s, r = timed(c, repeat, executor=ex)
            assert r.report() == inline.report(), "the Dask report differs from inline"
            per = round(r.images_covered / max(ex.sent, 1))
            rows.append(row(f"dask local:2 batch={size}", s, r, batches=ex.sent, per_batch=per))
        ex.batch, ex.per_worker = BATCH, PER_WORKER
        s, r = timed(c, repeat, executor=ex)
        assert r.report() == inline.report(), "the Dask report differs from inline"
        per = round(r.images_covered / max(ex.sent, 1))
        rows.append(row("dask local:2 (defaults)", s, r, batches=ex.sent, per_batch=per))
    dask_rows = [x for x in rows if x["how"].startswith("dask local:2 batch")]
    best = max(dask_rows, key=lambda x: x["images_per_s"])
    print(f"\nfastest batch size here: {best['how'].rpartition('=')[2]} images")
    out = {
        "schema": SCHEMA,
        "bench": "dask",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "epochs": epochs,
        "images_possible": inline.images_possible,
        "cluster_start_seconds": round(started, 2),
        "rows": rows,
        "best_batch": int(best["how"].rpartition("=")[2]),
        "speedup_dask_vs_inline": round(best["images_per_s"] / rows[0]["images_per_s"], 2),
        "speedup_jobs2_vs_inline": round(rows[1]["images_per_s"] / rows[0]["images_per_s"], 2),
    }
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=1)
    print("BENCH_JSON " + json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
