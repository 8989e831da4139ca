"""``pmemsim check`` and ``pmemsim replay``: run the checks of a file or folder, rerun a crash.

Every check runs, one row each, even when others fail: a check whose file does not import
or whose workload raises is an ERROR row with the exception and the user's line. Options
are checked (and output files opened for writing) before the header prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..distributed.options import add_scheduler_option, cluster_for
from ..explore.jobs import MAX_JOBS
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageProblem,
    count,
    describe_error,
    plural,
    user_frame,
    writable_file,
    write_output,
)
from .discover import Broken, Found, Selector, discover
from .reports import Outcome, write_json, write_junit
from .terminal import Terminal

__all__ = ["CheckFileError", "load_check", "load_checks", "register"]


class CheckFileError(Exception):
    """A check file that cannot give the check asked for (it raised on import, or defines
    two checks of that name): an error of the user's code, exit status 1."""


def _raise_broken(b: Broken) -> NoReturn:
    where = f" at {user_frame(b.error)}" if b.error is not None and user_frame(b.error) else ""
    err = f": {describe_error(b.error)}{where}" if b.error is not None else ""
    raise CheckFileError(f"{b.name} ({b.origin}): {b.what}{err}")


def load_checks(
    path: str | os.PathLike[str], select: Sequence[str] | None = None, *, files: bool = False
) -> list[Any]:
    """Every check of a file or folder (``select``: ``-k`` expressions); with ``files``,
    FileCrashChecks too. Raises UsageProblem for a path without checks, CheckFileError for
    a file that cannot be used."""
    checks = []
    for entry in discover(path, select, files=files):
        if isinstance(entry, Broken):
            _raise_broken(entry)
        else:
            checks.append(entry.check)
    return checks


def load_check(ref: str, what: str, *, files: bool = False) -> Any:
    """The one check that ``ref`` (``PATH::CHECK``, the exact name) names; ``what`` says where
    the reference came from, for messages."""
    where, sep, name = ref.partition("::")
    if not sep or not name:
        raise UsageProblem(f"{what} {ref!r}: expected PATH::CHECK")
    if not Path(where).is_file():
        raise UsageProblem(f"{what} {ref!r}: {where}: no such file")
    entries = discover(where, None, files=files)
    for e in entries:
        if isinstance(e, Broken) and e.name in (name, e.origin):
            _raise_broken(e)
    found = [e for e in entries if isinstance(e, Found) and e.check.name == name]
    if not found:
        names = ", ".join(repr(e.check.name) for e in entries if isinstance(e, Found))
        raise UsageProblem(f"{what} {ref!r}: {where} has no check named {name!r} (it has {names})")
    return found[0].check


# -- pmemsim check -------------------------------------------------------------------------


def _strategy(text: str | None) -> str | None:
    if text is None:
        return None
    from ..errors import InvalidArgumentError
    from ..explore import strategy_named

    try:
        strategy_named(text)
    except InvalidArgumentError as exc:
        raise UsageProblem(f"--strategy {text}: {exc.message}") from None
    return text


def _seed(text: str | None) -> int:
    from ..errors import InvalidArgumentError
    from ..explore.seeding import SEED_LIMIT, parse_seed

    if text is None:
        return 0
    try:
        return parse_seed(text)
    except InvalidArgumentError:
        raise UsageProblem(f"--seed {text}: expected an integer in [0, {SEED_LIMIT})") from None


def _override(c: Any, args: argparse.Namespace) -> Any:
    changes: dict[str, Any] = {}
    if args.crash_points is not None:
        changes["crash_points"] = args.crash_points
    if args.recovery_depth is not None and hasattr(c, "recovery_crash_depth"):
        changes["recovery_crash_depth"] = args.recovery_depth
    if args.max_images is not None:
        changes["max_images"] = args.max_images
    return dataclasses.replace(c, **changes) if changes else c


class _Table:
    """The table of rows, one per check, as they finish."""

    def __init__(self, out: Terminal, width: int, quiet: bool) -> None:
        self.out = out
        self.width = width
        self.quiet = quiet

    def head(self) -> None:
        if self.quiet:
            return
        head = (
            f"{'check':<{self.width}}  {'verdict':<12}  {'expected':<8}  {'points':>6}  "
            f"{'images':>7}  {'covered':>7}  {'runs':>6}  {'seconds':>7}"
        )
        self.out.print(head)
        self.out.print("-" * len(head))

    def row(self, o: Outcome) -> None:
        if self.quiet:
            self.out.clear()
            return
        r = o.result
        name = f"{o.name:<{self.width}}"
        if r is None:
            verdict = self.out.paint(f"{'ERROR':<12}", "red bold")
            dashes = f"{'-':>6}  {'-':>7}  {'-':>7}  {'-':>6}  {'-':>7}"
            self.out.print(f"{name}  {verdict}  {'-':<8}  {dashes}")
            return
        style = "green" if r.as_expected else "red bold"
        verdict = self.out.paint(f"{r.verdict:<12}", style)
        ok = self.out.paint(f"{'yes' if r.as_expected else 'NO':<8}", style)
        if not r.exact:
            verdict = self.out.paint(f"{r.verdict + '*':<12}", "yellow" if r.as_expected else style)
        covered = f"{r.covered_fraction:.0%}" if r.exact else f"{r.covered_fraction:.2%}"
        self.out.print(
            f"{name}  {verdict}  {ok}  {r.crash_points:>6}  {r.images_possible:>7}  "
            f"{covered:>7}  {r.images_checked:>6}  {r.seconds:>7.3f}"
        )


def _run_one(
    found: Found, args: argparse.Namespace, seed: int, out: Terminal, executor: Any = None
) -> Outcome:
    from ..explore import Progress, check

    c = found.check
    out.status(f"{c.name}: recording the workload", force=True)

    def progress(p: Progress) -> None:
        out.status(
            f"{c.name}: crash point {p.point:,}/{p.points:,}, {p.images:,}/{p.planned:,} "
            f"images covered, {p.rate:,.0f} images/s"
            + (f" on {p.workers} workers" if p.workers > 1 else "")
        )

    try:
        r = check(
            _override(c, args),
            strategy=args.strategy,
            seed=seed,
            jobs=args.jobs,
            name=found.ref,
            progress=progress,
            executor=executor,
        )
    except (Exception, SystemExit) as exc:
        return Outcome(c.name, found.origin, None, f"running `{found.variable}` raised", exc)
    r.name = c.name
    return Outcome(c.name, found.origin, r)


def _crash_points(text: str | None) -> str | None:
    from ..explore.trace import CRASH_POINT_MODES

    if text is not None and text not in CRASH_POINT_MODES:
        raise UsageProblem(f"--crash-points {text}: use one of {', '.join(CRASH_POINT_MODES)}")
    return text


def _cmd_check(args: argparse.Namespace) -> int:
    args.strategy = _strategy(args.strategy)
    args.crash_points = _crash_points(args.crash_points)
    seed = _seed(args.seed)
    inputs = {f"the check file {args.path}": args.path}  # (a folder is no file)
    json_path = writable_file(args.json, "--json", inputs) if args.json else None
    junit_path = writable_file(args.junit_xml, "--junit-xml", inputs) if args.junit_xml else None
    html_path = writable_file(args.html, "--html", inputs) if args.html else None
    entries = discover(args.path, Selector(args.select), files=True)
    out = Terminal(args.color, live=None if not args.quiet else False)
    strategy = args.strategy or "per check"
    with cluster_for(args.scheduler, args.jobs) as executor:
        if not args.quiet:
            files = len({e.origin for e in entries})
            on = f"; on {executor.describe()}" if executor is not None else ""
            out.print(
                f"pmemsim check {args.path}: {plural(len(entries), 'check')} in "
                f"{plural(files, 'file')}; seed {seed}, strategy {strategy}{on}"
            )
        table = _Table(out, max(len(e.name) for e in entries), args.quiet)
        table.head()
        outcomes: list[Outcome] = []
        for e in entries:
            if isinstance(e, Broken):
                o = Outcome(e.name, e.origin, None, e.what, e.error)
            else:
                o = _run_one(e, args, seed, out, executor)
            outcomes.append(o)
            table.row(o)
    lint = "all" if args.verbose else "errors"
    for o in outcomes:
        if o.result is None:
            out.print(f"\n== {out.paint('ERROR', 'red bold')} {o.problem(verbose=args.verbose)}")
        elif o.result.failures or not o.result.as_expected or args.verbose:
            if args.quiet and o.status == "passed":
                continue
            out.print(f"\n== {o.result.report(lint=lint)}")
    out.print(_summary(outcomes, out))
    header = {
        "path": str(args.path),
        "seed": seed,
        "strategy": args.strategy,
    }
    if json_path is not None:
        write_json(json_path, outcomes, header)
    if junit_path is not None:
        write_junit(
            junit_path,
            outcomes,
            f"pmemsim check {args.path}",
            {"seed": str(seed), "strategy": strategy},
            lambda r: r.report(lint="errors"),
        )
    if html_path is not None:
        from ..html import checks_report

        pairs = [(o.result, o.result.check) for o in outcomes if o.result is not None]
        write_html(html_path, checks_report(pairs, subtitle=f"pmemsim check {args.path}"))
    return EXIT_OK if all(o.status == "passed" for o in outcomes) else EXIT_FAILED


def _summary(outcomes: list[Outcome], out: Terminal) -> str:
    passed = sum(o.status == "passed" for o in outcomes)
    failed = sum(o.status == "failed" for o in outcomes)
    errored = sum(o.status == "error" for o in outcomes)
    results = [o.result for o in outcomes if o.result is not None]
    possible = sum(r.images_possible for r in results)
    covered = sum(r.images_covered for r in results)
    runs = sum(r.images_checked for r in results)
    seconds = sum(r.seconds for r in results)
    heuristic = sum(not r.exact for r in results)
    counts = (
        f"{plural(len(outcomes), 'check')}: {passed} passed, {failed} failed, {errored} errored"
    )
    style = "green" if passed == len(outcomes) else "red bold"
    how = "every one exact" if not heuristic else f"{heuristic} heuristic (*)"
    return (
        f"\n{out.paint(counts, style)}; {covered:,} of {possible:,} crash images covered by "
        f"{runs:,} recovery runs in {seconds:.2f} s, {how}"
    )


def write_html(path: str | Path, text: str) -> None:
    """Write an HTML report (``--html FILE``) and say where; a path that cannot be written
    is the user's mistake."""
    print(f"HTML report: {write_output(path, text, '--html')}")


# -- pmemsim replay ------------------------------------------------------------------------


def _cmd_replay(args: argparse.Namespace) -> int:
    from ..errors import InvalidArgumentError
    from ..explore import check

    ref, at, crash = args.token.rpartition("@")
    if not at or not crash:
        raise UsageProblem(f"{args.token!r} is not a replay token (FILE::CHECK@CRASH)")
    if "::" not in ref:
        raise UsageProblem(
            f"{args.token!r} names no file: `pmemsim replay` finds checks defined in files "
            "(FILE::CHECK@CRASH). A check made in Python replays there: "
            f"pmemsim.explore.check(CHECK, replay={args.token!r})"
        )
    html_path = writable_file(args.html, "--html") if args.html else None
    try:
        c = load_check(ref, "replay token", files=True)
    except CheckFileError as exc:
        print(f"pmemsim: ERROR {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        r = check(c, replay=crash, name=ref, progress=None)
    except InvalidArgumentError as exc:
        raise UsageProblem(f"replay token {args.token!r}: {exc.message}") from None
    except (Exception, SystemExit) as exc:
        o = Outcome(c.name, ref.partition("::")[0], None, "running it raised", exc)
        print(f"pmemsim: ERROR {o.problem(verbose=True)}", file=sys.stderr)
        return EXIT_FAILED
    err = r.failures[0].error if r.failures else None
    if html_path is not None:
        from ..html import replay_report

        write_html(html_path, replay_report(c, args.token, err, name=c.name))
    if err is None:
        print(f"{c.name}: the image of crash {crash} is consistent now")
        return EXIT_OK
    import traceback

    # Where recovery failed, as Python shows it; then what the crash lost.
    traceback.print_exception(err)
    print(r.failures[0].describe())
    print(f"{c.name}: recovery on the image of crash {crash} failed", file=sys.stderr)
    return EXIT_FAILED


# -- arguments -----------------------------------------------------------------------------


def _output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour verdicts (auto: on a terminal, unless NO_COLOR is set)",
    )
    level = p.add_mutually_exclusive_group()
    level.add_argument("-q", "--quiet", action="store_true", help="only problems and the summary")
    level.add_argument(
        "-v", "--verbose", action="store_true", help="every check in full, tracebacks of errors"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Nothing from the explorer here: building the parser must stay cheap for every command
    # (names are checked, with the valid ones listed, when the command runs).
    p = sub.add_parser(
        "check",
        help="run the crash-consistency checks of a scenario file or folder on the simulator",
        description=(
            "Runs every CrashCheck and FileCrashCheck defined in PATH (a .py file, or a "
            "folder searched recursively): the workload on the simulator, crashed before every "
            "barrier that follows a store and at the end; recovery on every distinct crash "
            "image. A check file can import modules next to it, in the project's rootdir or "
            "in the current folder. Exit status: 0 when every check has its expected "
            "verdict, 1 when a verdict differs or a check errored, 2 for bad input."
        ),
    )
    p.add_argument("path", help="scenario file or folder")
    p.add_argument(
        "-k",
        "--select",
        action="append",
        metavar="EXPR",
        help="only matching checks: an exact name, or substrings of names and files with "
        "and/or/not, e.g. -k 'cmap and not byte' (repeatable: any of them)",
    )
    p.add_argument(
        "--strategy",
        metavar="NAME",
        help="override every check's: lazy, exhaustive, extremes, bounded:K, random:N, "
        "read-guided, ... (docs/explore.md)",
    )
    p.add_argument(
        "--crash-points",
        metavar="MODE",
        help="override every check's: barriers, operations, markers",
    )
    p.add_argument(
        "--recovery-depth",
        type=count(0),
        metavar="N",
        help="crash recovery too, N deep (CrashChecks)",
    )
    p.add_argument(
        "--max-images", type=count(2), metavar="N", help="per crash point, for exact runs"
    )
    p.add_argument("--seed", metavar="N", help="seed for random strategies (default 0)")
    p.add_argument(
        "--jobs",
        type=count(1, MAX_JOBS),
        default=1,
        metavar="N",
        help="worker processes for recovery",
    )
    add_scheduler_option(p)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument(
        "--junit-xml", metavar="FILE", help="also write JUnit XML, one test case per check"
    )
    p.add_argument(
        "--html", metavar="FILE", help="also write an HTML report with each failure's timeline"
    )
    _output_options(p)
    p.set_defaults(func=_cmd_check)
    r = sub.add_parser(
        "replay",
        help="rerun one crash from its replay token",
        description=(
            "Rebuilds the crash image a report's replay token names (FILE::CHECK@CRASH) and "
            "runs the check's recovery on it, showing recovery's exception. Exit status: 0 "
            "when recovery accepts the image, 1 when it fails (or the check cannot run), 2 "
            "for a token that names no such file, check or crash."
        ),
    )
    r.add_argument("token", help="FILE::CHECK@CRASH, as a report prints it")
    r.add_argument("--html", metavar="FILE", help="also write the crash's HTML report")
    r.set_defaults(func=_cmd_replay)
