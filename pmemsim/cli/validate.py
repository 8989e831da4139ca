"""``pmemsim validate``: run every scenario's workload on the real platform, verify it anew.

CrashChecks and FileCrashChecks (programs over files) alike; see pmemsim.validate."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, UsageProblem, writable_file, write_output

__all__ = ["register"]

#: What a file in a directory without DAX gets, for the header line.
_PRETEND = "pretending: cache flushes, no msync"


def _cmd_validate(args: argparse.Namespace) -> int:
    import os

    from ..errors import InvalidArgumentError
    from ..validate import FORCE_GRANULARITY, filesystem_of, parse_granularity, validate

    try:
        required = parse_granularity(args.granularity)
        force = parse_granularity(args.force_granularity) if args.force_granularity else None
    except InvalidArgumentError as exc:
        raise UsageProblem(exc.message) from None
    if not args.dir.strip():
        raise UsageProblem("an empty path: name a directory ('.' for this one)")
    if not Path(args.dir).is_dir():
        raise UsageProblem(f"{args.dir}: no such directory")
    if not os.path.exists(args.scenarios):
        default = " (the default: the scenarios/ folder of pmemsim's source tree)"
        raise UsageProblem(
            f"--scenarios {args.scenarios}: no such file or folder"
            f"{default if args.scenarios == 'scenarios' else ''}; name a scenario file or folder"
        )
    json_path = writable_file(args.json, "--json") if args.json else None
    # Not ``force or ...``: Granularity.BYTE is 0.
    forced = force.name if force is not None else os.environ.get(FORCE_GRANULARITY) or None
    where = f"{args.dir} ({filesystem_of(args.dir)})"
    pretend = f"{FORCE_GRANULARITY}={forced} ({_PRETEND})" if forced else "nothing forced"
    print(f"pmemsim validate {where}: backend {args.backend}, required {required.name}, {pretend}")
    results = validate(
        args.scenarios,
        args.dir,
        backend=args.backend,
        granularity=required,
        force=force,
        select=args.select,
        keep=args.keep,
    )
    width = max(len(r.name) for r in results)
    head = (
        f"{'check':<{width}}  {'result':<7}  {'granularity':<11}  {'write s':>7}  {'verify s':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r.name:<{width}}  {r.status:<7}  {r.granularity or '-':<11}  "
            f"{r.write_seconds:>7.3f}  {r.verify_seconds:>8.3f}"
        )
    for r in results:
        if r.status in ("FAILED", "error"):
            print(f"\n== {r.name} ({r.origin}): {r.status}\n  {r.detail}")
            if r.path:
                print(f"  kept at {r.path}")
    counts = {s: sum(r.status == s for r in results) for s in ("passed", "FAILED", "error")}
    skipped = sum(r.status == "skipped" for r in results)
    print(
        f"\n{counts['passed']} passed, {counts['FAILED']} failed, {counts['error']} errors, "
        f"{skipped} skipped (buggy variants)"
    )
    if json_path is not None:
        write_output(
            json_path,
            json.dumps(
                {
                    "dir": str(args.dir),
                    "filesystem": filesystem_of(args.dir),
                    "backend": args.backend,
                    "required": required.name,
                    "forced": forced,
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
            + "\n",
            "--json",
        )
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        help="run every scenario's workload on real libpmem2 in DIR and verify it in a new process",
        description=(
            "For every CrashCheck of the scenarios that expects a consistent verdict: create a "
            "pool file in DIR, run the workload on it (no crash injection), persist and "
            "deep-flush everything, close it. For every such FileCrashCheck (a program that "
            "opens its own files): run its workload in a fresh subdirectory of DIR and note "
            "every file it leaves. Then a new process checks that each pool or file holds "
            "what was written and runs the recovery, which must accept it. Buggy variants are "
            "listed as skipped. Exit status: 0 when every run passed, 1 otherwise, 2 for bad "
            "input or a platform that cannot run it."
        ),
    )
    p.add_argument(
        "dir", help="directory for the pool files and folders (e.g. a DAX mount, /dev/shm)"
    )
    p.add_argument(
        "--scenarios",
        default="scenarios",
        metavar="PATH",
        help="scenario file or folder (default: scenarios)",
    )
    p.add_argument(
        "--granularity",
        default="page",
        metavar="G",
        help=(
            "the coarsest granularity to accept: page (default), cache_line or byte; programs "
            "over files choose their own, and their maps must get one at least this fine"
        ),
    )
    p.add_argument(
        "--force-granularity",
        metavar="G",
        help=(
            "set PMEM2_FORCE_GRANULARITY=G for both processes: libpmem2 pretends the files "
            "have that granularity (cache flushes instead of msync)"
        ),
    )
    p.add_argument(
        "--backend",
        default="real",
        choices=["real", "sim"],
        help="real (libpmem2, the default) or sim (a simulator shaped like this machine)",
    )
    p.add_argument(
        "-k",
        "--select",
        action="append",
        metavar="EXPR",
        help="only matching checks (as for pmemsim check)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument(
        "--keep", action="store_true", help="keep the pool files and folders of passing runs"
    )
    p.set_defaults(func=_cmd_validate)
