"""HTML report: generation time and file size, for the largest catalogue failure and for a
synthetic run of about 10,000 operations.

A report records the check's workload again (with its operations) and draws it, so its
time is set beside the reference measured in the same run: the check itself (recording
plus recovery on every distinct image). Targets: a report costs less than its check would
take again for a large run, and stays under 1 MB however long the run.

    python bench/bench_html.py            # best of 3
    python bench/bench_html.py --quick    # best of 1

The last line is ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pmemsim as pm  # noqa: E402
from pmemsim.explore import CheckResult, CrashCheck, check  # noqa: E402
from pmemsim.html import check_report  # noqa: E402

SIZE_TARGET = 1_000_000


def synthetic(records: int) -> CrashCheck:
    """An append log of ``records`` records (a record and then the count, each persisted:
    7 operations per record), then one more whose count is persisted before the record
    (the bug): about ``7 * records`` operations, and a failure at the very end."""

    def append(v: pm.View, i: int, *, buggy: bool = False) -> None:
        off = 64 + (i % 600) * 64
        v.u64[off // 8] = i + 1
        v.u64[off // 8 + 1] = ~i & 0xFFFF
        if not buggy:
            v.persist(off, 16)
        v.u64[0] = i + 1
        v.persist(0, 8)

    def workload(v: pm.View) -> None:
        for i in range(records):
            append(v, i)
        append(v, records, buggy=True)

    def recover(v: pm.View) -> bool:
        n = v.u64[0]
        off = 64 + ((n - 1) % 600) * 64
        return n == 0 or v.u64[off // 8] == n

    return CrashCheck("synthetic log", workload, recover, size=64 * 1024, expect="inconsistent")


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    out = None
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def measure(c: Any, repeat: int) -> dict[str, Any]:
    from pmemsim.html.explore import recorded

    check_s, result = best(lambda: check(c, progress=None), repeat)
    assert isinstance(result, CheckResult) and result.failures, c.name

    def record_only() -> int:
        with recorded(c, False) as (_, run):
            return len(run.ops)

    record_s, ops = best(record_only, repeat)
    report_s, text = best(lambda: check_report(result, c), repeat)
    return {
        "check": c.name,
        "operations": ops,
        "failures": len(result.distinct()),
        "report_s": round(report_s, 4),
        "record_s": round(record_s, 4),
        "check_s": round(check_s, 4),
        "report_bytes": len(text.encode()),
    }


def catalogue() -> list[Any]:
    from test_scenarios import CHECKS

    return [c for _, _, c in CHECKS if c.expect == "inconsistent"]


def operations(c: Any) -> int:
    from pmemsim.html.explore import recorded

    with recorded(c, False) as (_, run):
        return len(run.ops)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="best of 1 instead of 3")
    args = ap.parse_args(argv)
    repeat = 1 if args.quick else 3
    largest = max(catalogue(), key=operations)
    big = synthetic(1428)  # 7 operations per record, 5 for the last: 10,001 operations
    rows = [measure(c, repeat) for c in (largest, big)]
    print("report s: the whole report (recording the workload again included); record s: that")
    print("recording alone; check s: the check itself (the reference, measured in this run)")
    print(f"{'check':<40} {'ops':>7} {'report s':>9} {'record s':>9} {'check s':>9} {'bytes':>10}")
    for m in rows:
        print(
            f"{m['check']:<40} {m['operations']:>7,} {m['report_s']:>9.3f} {m['record_s']:>9.3f} "
            f"{m['check_s']:>9.3f} {m['report_bytes']:>10,}"
        )
    ok = all(m["report_bytes"] < SIZE_TARGET for m in rows)
    print(f"file size target (< {SIZE_TARGET:,} bytes): {'met' if ok else 'MISSED'}")
    print("BENCH_JSON " + json.dumps({"bench": "html", "runs": rows, "size_target_met": ok}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
