"""pmemsim check-log next to PMDK's pmreorder, on the same logs and the same checkers.

Run from the repository root (with pmemsim installed and gcc for the C checkers)::

    python bench/bench_pmreorder.py            # 30 minutes or more (pmreorder's time limits)
    python bench/bench_pmreorder.py --quick    # shorter limits, one run each

What is measured (bench/README.md, section "pmemsim vs pmreorder", has the figures):

1. The real logs of tests/data/pmemcheck (pmemcheck recorded them from the C programs in
   tests/c), every ``-q`` log of one file: time to verdict of ``pmemsim check-log`` (exact
   engine) and of pmreorder's ReorderFull, each with the program's checker program, and the
   verdict each gives next to the one the x86 rules give (the manifest's).
2. An in-process C checker (``--checker-lib LIB.so:check``, pmreorder's ``-c lib``) on a
   4 KiB pool: distinct images per second, for a checker that returns at once and for one
   that reads the whole image. Target: >= 20,000 images/s.
3. A checker program (``true``) on a 64 MiB and on a 4 KiB pool, same log: images per
   second on each; the 64 MiB run should cost what the images change, not the pool size.
4. The issue's cases, with ``true`` as the checker for both tools: 1,000 epochs x 4 stores
   on 64 MiB (pmemsim accumulative vs ReorderAccumulative); 4 stores in one epoch on 64 MiB
   and 20 stores in one epoch on 4 KiB (exhaustive vs ReorderFull).

Both tools run as separate processes, timed from start to verdict (interpreter start-up
included, as a user waits for it): pmemsim best of 3 on the real logs (1 with --quick), once
elsewhere; pmreorder once (it is slow), each under a time limit. A loss shows as
"pmreorder" in the "faster" column, never as an exception. The last line is ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pmreorder_runner import Run, find_pmreorder, run_pmemsim, run_pmreorder, synthetic_log

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "pmemcheck"
KIB, MIB = 1 << 10, 1 << 20
RATE_TARGET = 20_000.0
SCHEMA = 1

TRIVIAL_C = "int check(const char *path) { (void)path; return 1; }\n"
READING_C = r"""
#include <fcntl.h>
#include <unistd.h>
int check(const char *path)
{
	static char buf[1 << 16];
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t n;
	long sum = 0;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		sum += n;
	close(fd);
	return sum > 0;
}
"""


def _build(tmp: Path) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("build", ROOT / "tests" / "c" / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    made: dict[str, Path] = build.build(tmp / "c", programs=())
    for name, src in (("trivial", TRIVIAL_C), ("reading", READING_C)):
        c = tmp / f"{name}.c"
        c.write_text(src)
        lib = tmp / f"lib{name}.so"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", str(c), "-o", str(lib)], check=True)
        made[f"lib{name}.so"] = lib
    return made


def _has_checker_lib() -> bool:
    exe = Path(sys.executable).with_name("pmemsim")
    out = subprocess.run([str(exe), "check-log", "--help"], capture_output=True, text=True)
    return "--checker-lib" in out.stdout


def _best(repeat: int, run: Any) -> Run:
    runs = [run() for _ in range(repeat)]
    return min(runs, key=lambda r: r.seconds)


def bench_real_logs(made: dict[str, Path], repeat: int, timeout: float) -> list[dict[str, Any]]:
    manifest = json.loads((CORPUS / "MANIFEST.json").read_text())
    rows = []
    for e in manifest["logs"]:
        if "-q" not in e["pmemcheck_flags"] or len(e["files"]) != 1:
            continue
        checker = [str(made[f"check_{e['program']}"])]
        log = CORPUS / e["log"]
        ours = _best(repeat, lambda log=log, checker=checker: run_pmemsim(log, checker))
        theirs = run_pmreorder(log, checker, engine="ReorderFull", timeout=timeout)
        rows.append(_pair(e["log"], ours, theirs, e["verdict"].lower()))
        print(_line(rows[-1]), flush=True)
    return rows


def bench_checker_lib(made: dict[str, Path], tmp: Path, repeat: int) -> dict[str, Any]:
    log = synthetic_log(
        tmp / "lib.log", tmp / "absent" / "pool", epochs=40, stores=10, size=4 * KIB
    )
    out: dict[str, Any] = {}
    for name in ("trivial", "reading"):
        lib = f"{made[f'lib{name}.so']}:check"
        run = _best(repeat, lambda lib=lib: run_pmemsim(log, options=["--checker-lib", lib]))
        rate = (run.images or 0) / run.seconds if run.seconds else 0.0
        out[name] = {
            "seconds": run.seconds,
            "images": run.images,
            "images_per_s": rate,
            "verdict": run.verdict,
        }
        print(
            f"  --checker-lib {name}: {run.images} images in {run.seconds:.2f} s = "
            f"{rate:,.0f} images/s",
            flush=True,
        )
    theirs = run_pmreorder(log, library=(str(made["libtrivial.so"]), "check"), timeout=60)
    out["pmreorder_lib"] = {"verdict": theirs.verdict, "seconds": theirs.seconds}
    return out


def bench_pool_size(tmp: Path, timeout: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, size in (("4KiB", 4 * KIB), ("64MiB", 64 * MIB)):
        log = synthetic_log(
            tmp / f"p{label}.log", tmp / "absent" / label, epochs=3, stores=7, size=size
        )
        run = run_pmemsim(log, ["true"], timeout=timeout)
        rate = (run.images or 0) / run.seconds if run.seconds else 0.0
        out[label] = {"seconds": run.seconds, "images": run.images, "images_per_s": rate}
        print(
            f"  checker `true`, {label} pool: {run.images} images in {run.seconds:.2f} s = "
            f"{rate:,.0f} images/s",
            flush=True,
        )
    out["ratio_64MiB_to_4KiB_seconds"] = out["64MiB"]["seconds"] / out["4KiB"]["seconds"]
    return out


#: (name, epochs, stores per epoch, pool size, pmemsim engine, pmreorder engine)
ISSUE_CASES = [
    ("1,000 epochs x 4 stores, 64 MiB", 1000, 4, 64 * MIB, "accumulative", "ReorderAccumulative"),
    ("4 stores, one epoch, 64 MiB", 1, 4, 64 * MIB, "exhaustive", "ReorderFull"),
    ("20 stores, one epoch, 4 KiB", 1, 20, 4 * KIB, "exhaustive", "ReorderFull"),
]


def bench_issue_cases(tmp: Path, timeout: float) -> list[dict[str, Any]]:
    rows = []
    for i, (name, epochs, stores, size, ours_engine, their_engine) in enumerate(ISSUE_CASES):
        log = synthetic_log(
            tmp / f"case{i}.log",
            tmp / "absent" / f"case{i}",
            epochs=epochs,
            stores=stores,
            size=size,
        )
        ours = run_pmemsim(log, ["true"], engine=ours_engine, timeout=timeout)
        theirs = run_pmreorder(log, ["true"], engine=their_engine, timeout=timeout)
        rows.append(_pair(name, ours, theirs, "consistent"))
        print(_line(rows[-1]), flush=True)
    return rows


def _pair(name: str, ours: Run, theirs: Run, expected: str) -> dict[str, Any]:
    if theirs.verdict in ("consistent", "inconsistent"):
        faster = "pmemsim" if ours.seconds < theirs.seconds else "pmreorder"
    else:
        faster = "pmemsim (pmreorder gave no verdict)"
    return {
        "name": name,
        "expected": expected,
        "pmemsim": {"verdict": ours.verdict, "seconds": ours.seconds, "images": ours.images},
        "pmreorder": {"verdict": theirs.verdict, "seconds": theirs.seconds},
        "faster": faster,
    }


def _line(row: dict[str, Any]) -> str:
    o, t = row["pmemsim"], row["pmreorder"]
    ok = "" if o["verdict"] == row["expected"] else "  (pmemsim WRONG)"
    tr = "" if t["verdict"] == row["expected"] else "  (pmreorder wrong or none)"
    return (
        f"  {row['name']}: expected {row['expected']}; pmemsim {o['verdict']} in "
        f"{o['seconds']:.2f} s{ok}; pmreorder {t['verdict']} in {t['seconds']:.2f} s{tr}; "
        f"faster: {row['faster']}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one run each, shorter time limits")
    ap.add_argument(
        "--timeout", type=float, help="pmreorder's time limit per real log (60 s; quick 20 s)"
    )
    ap.add_argument(
        "--case-timeout",
        type=float,
        help="either tool's time limit per synthetic case (600 s; quick 120 s)",
    )
    ap.add_argument("--json-out", metavar="FILE", help="also write the results here")
    args = ap.parse_args(argv)
    repeat = 1 if args.quick else 3
    timeout = args.timeout or (20.0 if args.quick else 60.0)
    case_timeout = args.case_timeout or (120.0 if args.quick else 600.0)
    if shutil.which("gcc") is None:
        print("gcc is needed to build the C checkers", file=sys.stderr)
        return 2
    pmreorder = find_pmreorder()
    print(
        f"pmreorder: {pmreorder or 'not found (its columns stay empty)'}; "
        f"time limit per pmreorder run {timeout:.0f} s"
    )
    with tempfile.TemporaryDirectory(prefix="bench-pmreorder-") as name:
        tmp = Path(name)
        made = _build(tmp)
        print("1. real logs (tests/data/pmemcheck), checker programs, exact engine vs ReorderFull")
        real = bench_real_logs(made, repeat, timeout)
        print("2. in-process C checker, 4 KiB pool")
        lib = bench_checker_lib(made, tmp, repeat) if _has_checker_lib() else None
        if lib is None:
            print("  check-log has no --checker-lib here: not measured")
        print("3. checker program on a 64 MiB and a 4 KiB pool")
        pool = bench_pool_size(tmp, case_timeout)
        print("4. the issue's cases, checker `true`")
        cases = bench_issue_cases(tmp, case_timeout)
    rate = lib["reading"]["images_per_s"] if lib else None
    lost = [r["name"] for r in real + cases if r["faster"] == "pmreorder"]
    wrong = [r["name"] for r in real + cases if r["pmemsim"]["verdict"] != r["expected"]]
    print()
    print(
        f"in-process C checker: {rate:,.0f} images/s (target >= {RATE_TARGET:,.0f})"
        if rate is not None
        else "in-process C checker: not available"
    )
    print(f"64 MiB / 4 KiB pool time: {pool['ratio_64MiB_to_4KiB_seconds']:.2f}x")
    print(f"pmemsim slower than pmreorder on: {', '.join(lost) or 'none'}")
    print(f"pmemsim verdict differs from the x86 rules on: {', '.join(wrong) or 'none'}")
    result = {
        "schema": SCHEMA,
        "python": platform.python_version(),
        "quick": args.quick,
        "pmreorder_timeout": timeout,
        "case_timeout": case_timeout,
        "real_logs": real,
        "checker_lib": lib,
        "pool_size": pool,
        "issue_cases": cases,
        "targets": {
            "checker_lib_images_per_s": {
                "target": RATE_TARGET,
                "value": rate,
                "met": rate is not None and rate >= RATE_TARGET,
            },
            "faster_everywhere": {"met": not lost, "lost": lost},
        },
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print("BENCH_JSON " + json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
