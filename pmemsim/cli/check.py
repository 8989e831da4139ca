"""``pmemsim check``: run the CrashChecks of a scenario file or folder."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, UsageProblem

__all__ = ["load_checks", "register"]


def load_checks(path: str | os.PathLike[str]) -> list[object]:
    """Every CrashCheck defined at module level in a scenario file, or in a folder's files."""
    from ..explore import CrashCheck

    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.glob("*.py") if not f.name.startswith("_"))
    elif p.is_file():
        files = [p]
    else:
        raise UsageProblem(f"{path}: no such file or folder")
    checks: list[object] = []
    for f in files:
        name = f"pmemsim_scenario_{f.stem}"
        spec = importlib.util.spec_from_file_location(name, f)
        if spec is None or spec.loader is None:
            raise UsageProblem(f"{f}: cannot be loaded as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise UsageProblem(f"{f}: importing it failed: {type(exc).__name__}: {exc}") from exc
        checks += [v for v in vars(module).values() if isinstance(v, CrashCheck)]
    if not checks:
        raise UsageProblem(f"{path}: defines no pmemsim.explore.CrashCheck")
    return checks


def _cmd_check(args: argparse.Namespace) -> int:
    from ..explore import CheckResult, check

    checks = load_checks(args.path)
    results: list[CheckResult] = []
    width = max(len(c.name) for c in checks)  # type: ignore[attr-defined]
    head = (
        f"{'check':<{width}}  {'verdict':<12}  {'expected':<8}  {'points':>6}  "
        f"{'images':>7}  {'checked':>7}  {'seconds':>7}"
    )
    print(head)
    print("-" * len(head))
    for c in checks:
        r = check(c)  # type: ignore[arg-type]
        results.append(r)
        ok = "yes" if r.as_expected else "NO"
        print(
            f"{r.name:<{width}}  {r.verdict:<12}  {ok:<8}  {r.crash_points:>6}  "
            f"{r.images_possible:>7}  {r.images_checked:>7}  {r.seconds:>7.3f}"
        )
    for r in results:
        if r.minimal is None and r.as_expected and not args.verbose:
            continue
        print(f"\n== {r.name} ({'exact' if r.exact else f'partial: {r.images_skipped} skipped'})")
        if r.minimal is not None:
            print(f"{len(r.failures)} inconsistent image(s); the minimal one:")
            print(r.minimal.describe())
        else:
            print("no inconsistent image")
        errors = [f for f in r.findings if f.kind.severity == "error"]
        for finding in errors if not args.verbose else r.findings:
            print(f"  lint: {finding}")
    matched = sum(r.as_expected for r in results)
    exact = all(r.exact for r in results)
    print(
        f"\n{len(results)} checks, {matched} with the expected verdict, "
        f"{sum(r.images_checked for r in results)} distinct images checked, "
        f"{'every crash point exhaustively' if exact else 'some crash points partially'}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "verdict": r.verdict,
                        "expected": r.expect,
                        "exact": r.exact,
                        "crash_points": r.crash_points,
                        "images_possible": r.images_possible,
                        "images_checked": r.images_checked,
                        "inconsistent": len(r.failures),
                        "seconds": round(r.seconds, 4),
                    }
                    for r in results
                ],
                indent=2,
            )
            + "\n"
        )
    return EXIT_OK if matched == len(results) else EXIT_FAILED


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        help="run the crash-consistency checks of a scenario file or folder on the simulator",
        description=(
            "Runs every CrashCheck defined in PATH (a .py file, or a folder of them): the "
            "workload on the simulator, crashed before every barrier that follows a store "
            "and at the end; recovery on every distinct crash image. Exit status: 0 when "
            "every check has its expected verdict, 1 otherwise, 2 for bad input."
        ),
    )
    p.add_argument("path", help="scenario file or folder")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="show every lint finding")
    p.set_defaults(func=_cmd_check)
