"""Crash exploration and check-log inline and on a 2-worker Dask LocalCluster, in one run.

Run from the repository root (pmemsim installed with its dask extra)::

    python bench/bench_dask.py            # about three minutes on a quiet 2-core machine
    python bench/bench_dask.py --quick    # a smaller check and log, fewer batch sizes
    python bench/bench_dask.py --only log # check-log only
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
which size was fastest here, and the last row runs the executor's defaults.

check-log: a long log (LOG_EPOCHS epochs of four 8-byte stores to distinct lines, each line
flushed, one fence: 9 operations and 15 images an epoch, 36,000 operations for 4,000 epochs)
with a checker that reads a word, judged inline and on the same cluster at two batch sizes,
each twice: with every batch replaying the log from its start on its worker (``log_resume =
False``, the way before each worker kept its replay: the reference) and with the workers
going on from where their last batch stopped (the default). Each row gives the seconds, the
batches, and the log operations the workers replayed (counted by the workers, not timed)
against the log's length. Every result must equal inline's. The last line is
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

SCHEMA = 2
LINES = 6
LOG_POOL = "/nonexistent-pmemsim-bench/pool"
LOG_STORES = 4


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


def epoch_log(epochs: int, seed: int = 1) -> str:
    """``epochs`` times: LOG_STORES 8-byte stores to distinct lines of a 4 KiB pool, a FLUSH
    of each line, one FENCE (bench_log's shape)."""
    import bench_log  # (beside this file: the folder of the script run is on sys.path)

    return bench_log.epoch_log(epochs, LOG_STORES, seed=seed, pool=LOG_POOL)


def first_word(img: memoryview) -> bool:
    return int.from_bytes(img[:8], "little") >= 0


def check_rows(ex: Any, epochs: int, sizes: list[int], repeat: int) -> dict[str, Any]:
    """``pmemsim check`` inline, with ``jobs=2`` and on ``ex`` at each batch size."""
    from pmemsim.distributed.executor import BATCH, PER_WORKER

    c = the_check(epochs)
    print(f"check: {epochs} epochs x {LINES} lines, exhaustive\n")
    rows = []
    s, inline = timed(c, repeat)
    rows.append(row("inline", s, inline))
    s, r = timed(c, repeat, jobs=2)
    assert r.report() == inline.report()
    rows.append(row("jobs=2", s, r))
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
    return {
        "epochs": epochs,
        "images_possible": inline.images_possible,
        "rows": rows,
        "best_batch": int(best["how"].rpartition("=")[2]),
        "speedup_dask_vs_inline": round(best["images_per_s"] / rows[0]["images_per_s"], 2),
        "speedup_jobs2_vs_inline": round(rows[1]["images_per_s"] / rows[0]["images_per_s"], 2),
    }


def log_rows(ex: Any, epochs: int, sizes: list[int], repeat: int) -> dict[str, Any]:
    """check-log of a long log inline and on ``ex``, each batch size without and with the
    workers keeping their replay."""
    from pmemsim.pmlog import FunctionChecker, Replay, check_log, parse_log

    replay = Replay.of(parse_log(epoch_log(epochs)))
    checker = FunctionChecker(first_word, "first_word")

    def run(**kw: Any) -> tuple[float, Any]:
        best: tuple[float, Any] | None = None
        for _ in range(repeat):
            start = time.perf_counter()
            r = check_log(replay, checker, engine="exhaustive", **kw)
            s = time.perf_counter() - start
            if best is None or s < best[0]:
                best = (s, r)
        assert best is not None
        return best

    s, inline = run()
    ops = replay.operations
    print(
        f"\ncheck-log: {epochs} epochs x {LOG_STORES} stores, {ops:,} operations, "
        f"{inline.images_checked:,} images, exhaustive\n"
    )
    rows = [{"how": "inline", "seconds": round(s, 3), "images": inline.images_checked}]
    print(f"{'inline':<36} {s:8.2f} s")
    for size in sizes:
        for resume in (False, True):
            ex.log_batch, ex.log_resume = size, resume
            s, r = run(executor=ex)
            assert r.report() == inline.report(), "the Dask report differs from inline"
            how = f"dask batch={size} {'resumed' if resume else 'from the start'}"
            rows.append(
                {
                    "how": how,
                    "batch": size,
                    "resume": resume,
                    "seconds": round(s, 3),
                    "batches": ex.sent,
                    "replays": ex.log_replays,
                    "operations_replayed": ex.log_replayed,
                    "log_lengths_replayed": round(ex.log_replayed / ops, 2),
                }
            )
            print(
                f"{how:<36} {s:8.2f} s  {ex.sent:>4} batches  {ex.log_replays:>4} replays  "
                f"{ex.log_replayed:>11,} operations replayed ({ex.log_replayed / ops:.1f}x the log)"
            )
            sys.stdout.flush()
    from pmemsim.distributed.logs import LOG_BATCH

    ex.log_batch, ex.log_resume = LOG_BATCH, True
    by = {(x.get("batch"), x.get("resume")): x for x in rows}
    return {
        "epochs": epochs,
        "operations": ops,
        "images": inline.images_checked,
        "rows": rows,
        "speedup_resume": {
            str(size): round(by[(size, False)]["seconds"] / by[(size, True)]["seconds"], 2)
            for size in sizes
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 epochs, two batch sizes")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the check (default 800)")
    ap.add_argument("--repeat", type=int, default=None, help="best of N (default 2, quick 1)")
    ap.add_argument(
        "--log-epochs", type=int, default=None, help="epochs of the log (default 4000, quick 2500)"
    )
    ap.add_argument("--only", choices=["check", "log"], help="only crash exploration / check-log")
    ap.add_argument("--json-out", help="also write the JSON to this file")
    args = ap.parse_args(argv)
    epochs = args.epochs or (200 if args.quick else 800)
    log_epochs = args.log_epochs or (2500 if args.quick else 4000)
    repeat = args.repeat or (1 if args.quick else 2)
    sizes = [1000, 4000] if args.quick else [250, 1000, 4000, 16000]
    log_sizes = [2048] if args.quick else [512, 2048]

    from pmemsim.distributed import Dask

    out: dict[str, Any] = {
        "schema": SCHEMA,
        "bench": "dask",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print(f"{os.cpu_count()} CPU(s)")
    start = time.perf_counter()
    with Dask("local:2", per_worker=64) as ex:
        started = time.perf_counter() - start
        print(f"(LocalCluster of 2 workers started in {started:.1f} s)")
        out["cluster_start_seconds"] = round(started, 2)
        if args.only != "log":
            out.update(check_rows(ex, epochs, sizes, repeat))
        if args.only != "check":
            out["log"] = log_rows(ex, log_epochs, log_sizes, repeat)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=1)
    print("BENCH_JSON " + json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
