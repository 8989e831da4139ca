"""``pmemsim check``: run the CrashChecks (and FileCrashChecks) of a scenario file or folder."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import EXIT_FAILED, EXIT_OK, UsageProblem

__all__ = ["load_checks", "register"]


def load_checks(
    path: str | os.PathLike[str], select: Sequence[str] | None = None, *, files: bool = False
) -> list[Any]:
    """Every CrashCheck defined at module level in a scenario file, or in a folder's files
    (only those named in ``select``, if given); with ``files``, FileCrashChecks too."""
    from ..explore import CrashCheck, FileCrashCheck

    kinds: tuple[type[CrashCheck | FileCrashCheck], ...] = (
        (CrashCheck, FileCrashCheck) if files else (CrashCheck,)
    )

    p = Path(path)
    if p.is_dir():
        modules = sorted(f for f in p.glob("*.py") if not f.name.startswith("_"))
    elif p.is_file():
        modules = [p]
    else:
        raise UsageProblem(f"{path}: no such file or folder")
    checks: list[Any] = []
    for f in modules:
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
        for v in vars(module).values():
            if isinstance(v, kinds) and (not select or v.name in select):
                object.__setattr__(v, "_pmemsim_origin", str(f))
                checks.append(v)
    if not checks:
        what = f"no CrashCheck named {', '.join(select)}" if select else "no CrashCheck"
        raise UsageProblem(f"{path}: defines {what}")
    return checks


def load_check(ref: str, what: str, *, files: bool = False) -> Any:
    """The one check that ``ref`` (``PATH::CHECK``) names; ``what`` says where it came from."""
    where, sep, name = ref.partition("::")
    if not sep or not name:
        raise UsageProblem(f"{what} {ref!r}: expected PATH::CHECK")
    checks = load_checks(where, [name], files=files)
    if len(checks) != 1:
        raise UsageProblem(f"{what} {ref!r}: {len(checks)} checks of {where} have that name")
    return checks[0]


def _override(c: Any, args: argparse.Namespace) -> Any:
    changes: dict[str, Any] = {}
    if args.crash_points is not None:
        changes["crash_points"] = args.crash_points
    if args.recovery_depth is not None and hasattr(c, "recovery_crash_depth"):
        changes["recovery_crash_depth"] = args.recovery_depth
    if args.max_images is not None:
        changes["max_images"] = args.max_images
    return dataclasses.replace(c, **changes) if changes else c


def _cmd_check(args: argparse.Namespace) -> int:
    from ..explore import CheckResult, check

    found = load_checks(args.path, args.select, files=True)
    checks = [(_override(c, args), _origin(c)) for c in found]
    seed = args.seed if args.seed is not None else 0
    print(f"pmemsim check {args.path}: seed {seed}, strategy {args.strategy or 'per check'}")
    results: list[CheckResult] = []
    width = max(len(c.name) for c, _ in checks)
    head = (
        f"{'check':<{width}}  {'verdict':<12}  {'expected':<8}  {'points':>6}  "
        f"{'images':>7}  {'checked':>7}  {'seconds':>7}"
    )
    print(head)
    print("-" * len(head))
    for c, origin in checks:
        r = check(
            c,
            strategy=args.strategy,
            seed=seed,
            jobs=args.jobs,
            name=f"{origin}::{c.name}",
            progress="auto",
        )
        r.name = c.name
        results.append(r)
        ok = "yes" if r.as_expected else "NO"
        print(
            f"{r.name:<{width}}  {r.verdict:<12}  {ok:<8}  {r.crash_points:>6}  "
            f"{r.images_possible:>7}  {r.images_checked:>7}  {r.seconds:>7.3f}"
        )
    for r in results:
        if not r.failures and r.as_expected and not args.verbose:
            continue
        print(f"\n== {r.report(lint='all' if args.verbose else 'errors')}")
    matched = sum(r.as_expected for r in results)
    exact = all(r.exact for r in results)
    checked = sum(r.images_checked for r in results)
    seconds = sum(r.seconds for r in results)
    print(
        f"\n{len(results)} checks, {matched} with the expected verdict, {checked} distinct "
        f"images checked in {seconds:.2f} s, "
        f"{'every crash point exhaustively' if exact else 'some crash points heuristically'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    if args.html:
        from ..html import checks_report

        pairs = [(r, r.check) for r in results]
        write_html(args.html, checks_report(pairs, subtitle=f"pmemsim check {args.path}"))
    return EXIT_OK if matched == len(results) else EXIT_FAILED


def write_html(path: str, text: str) -> None:
    """Write an HTML report (``--html FILE``) and say where; a path that cannot be written
    is the user's mistake."""
    from ..html import write_report

    try:
        written = write_report(path, text)
    except OSError as exc:
        raise UsageProblem(f"--html {path}: {exc.strerror or exc}") from None
    print(f"HTML report: {written}")


def _origin(c: Any) -> str:
    return str(getattr(c, "_pmemsim_origin", "?"))


def _cmd_replay(args: argparse.Namespace) -> int:
    from ..explore import replay

    ref, at, crash = args.token.rpartition("@")
    if not at or "::" not in ref:
        raise UsageProblem(f"{args.token!r} is not a replay token (PATH::CHECK@CRASH)")
    c = load_check(ref, "replay token", files=True)
    name = c.name
    err = replay(c, crash)
    if args.html:
        from ..html import replay_report

        write_html(args.html, replay_report(c, args.token, err, name=name))
    if err is None:
        print(f"{name}: the image of crash {crash} is consistent now")
        return EXIT_OK
    import traceback

    traceback.print_exception(err)
    print(f"{name}: recovery on the image of crash {crash} failed", file=sys.stderr)
    return EXIT_FAILED


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..explore.strategy import STRATEGY_NAMES
    from ..explore.trace import CRASH_POINT_MODES

    p = sub.add_parser(
        "check",
        help="run the crash-consistency checks of a scenario file or folder on the simulator",
        description=(
            "Runs every CrashCheck and FileCrashCheck defined in PATH (a .py file, or a "
            "folder of them): the workload on the simulator, crashed before every barrier "
            "that follows a store and at the end; recovery on every distinct crash image. "
            "Exit status: 0 when every check has its expected verdict, 1 otherwise, 2 for "
            "bad input."
        ),
    )
    p.add_argument("path", help="scenario file or folder")
    p.add_argument("-k", "--select", action="append", metavar="NAME", help="only this check")
    p.add_argument(
        "--strategy", metavar="NAME", help=f"override every check's ({', '.join(STRATEGY_NAMES)})"
    )
    p.add_argument("--crash-points", choices=CRASH_POINT_MODES, help="override every check's")
    p.add_argument(
        "--recovery-depth", type=int, metavar="N", help="crash recovery too, N deep (CrashChecks)"
    )
    p.add_argument("--max-images", type=int, metavar="N", help="per crash point, for exact runs")
    p.add_argument("--seed", type=int, help="seed for random strategies (default 0)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes for recovery")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="report every check in full")
    p.add_argument(
        "--html", metavar="FILE", help="also write an HTML report with each failure's timeline"
    )
    p.set_defaults(func=_cmd_check)
    r = sub.add_parser(
        "replay",
        help="rerun one crash from its replay token",
        description=(
            "Rebuilds the crash image a report's replay token names (PATH::CHECK@CRASH) and "
            "runs the check's recovery on it; recovery's exception propagates."
        ),
    )
    r.add_argument("token")
    r.add_argument("--html", metavar="FILE", help="also write the crash's HTML report")
    r.set_defaults(func=_cmd_replay)
