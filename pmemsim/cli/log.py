"""``pmemsim check-log`` and ``pmemsim export-log``: pmemcheck / pmreorder store logs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..explore.jobs import MAX_JOBS
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageProblem,
    count,
    finite_seconds,
    not_an_input,
    write_output,
)

__all__ = ["register"]


def _marker_engines(specs: list[str] | None) -> dict[str, str]:
    """``-x MARKER=ENGINE,...`` (repeatable), or a JSON file mapping markers to engines, as
    pmreorder takes them."""
    out: dict[str, str] = {}
    for spec in specs or ():
        if spec.endswith(".json") and os.path.isfile(spec):
            import json

            try:
                table = json.loads(Path(spec).read_text())
            except (OSError, ValueError) as exc:
                raise UsageProblem(f"{spec}: not a JSON object of MARKER: ENGINE: {exc}") from None
            if not isinstance(table, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in table.items()
            ):
                raise UsageProblem(f"{spec}: not a JSON object of MARKER: ENGINE")
            out.update(table)
            continue
        for item in filter(None, spec.split(",")):
            marker, sep, engine = item.partition("=")
            if not sep or not marker or not engine:
                raise UsageProblem(f"-x {spec!r}: expected MARKER=ENGINE[,MARKER=ENGINE...]")
            out[marker] = engine
    return out


def _unmatched_markers(engines: dict[str, str], markers: frozenset[str]) -> None:
    """Warn of each ``-x`` marker the log never begins: its engine would apply nowhere, and
    the check would go on with the default engine where the user meant another (a marker
    named as the log writes it, ``pmemobj_alloc.BEGIN``, or a typo). Not an error: one
    table of engines may serve several logs, as with pmreorder."""
    for name in engines:
        if name in markers:
            continue
        base = name.removesuffix(".BEGIN").removesuffix(".END")
        if base != name and base in markers:
            hint = f"; a marker is named without .BEGIN/.END: -x {base}={engines[name]}"
        else:
            shown = ", ".join(sorted(markers)[:12]) + (", ..." if len(markers) > 12 else "")
            hint = f"; the log's markers: {shown}" if markers else "; the log has no markers"
        print(
            f"check-log: warning: -x {name}: no marker {name!r} in the log, so its engine "
            f"applies nowhere{hint}",
            file=sys.stderr,
        )


def _inputs(args: argparse.Namespace, replay: Any) -> dict[str, str]:
    """What check-log reads, which no output of it may overwrite: the log, the registered
    files and base images, the checker's own file."""
    found = {"the log being checked": args.log}
    for p in replay.pools:
        found[f"the registered file {p.path}"] = p.path
        if p.source:
            found[f"the base image {p.source}"] = p.source
    checker = ""
    if args.checker_py:
        checker = args.checker_py.rpartition(":")[0]
    elif args.checker_lib:
        checker = args.checker_lib.rpartition(":")[0]
    elif args.recovery:
        checker = args.recovery.partition("::")[0]
    elif args.checker:
        import shutil

        checker = shutil.which(args.checker[0]) or args.checker[0]
    if checker:
        found[f"the checker {checker}"] = checker
    return found


def _checker(args: argparse.Namespace) -> Any:
    from ..pmlog.checkers import (
        FunctionChecker,
        LibChecker,
        ProgramChecker,
        load_function,
        recovery_checker,
    )

    given = [bool(args.checker), bool(args.checker_py), bool(args.recovery), bool(args.checker_lib)]
    if sum(given) != 1:
        raise UsageProblem(
            "name one checker: a program after '--', --checker-lib LIB.so:FUNCTION, "
            "--checker-py MODULE:FUNCTION or --recovery PATH::CHECK"
        )
    if args.lib_consistent != 1 and not args.checker_lib:
        raise UsageProblem("--lib-consistent: what a --checker-lib function returns; none given")
    if args.checker:
        return ProgramChecker(tuple(args.checker), _time_limit(args), args.all_files)
    if args.checker_lib:
        if args.all_files:
            raise UsageProblem("--all-files: a library checker takes one file (per call)")
        return LibChecker.parse(args.checker_lib, _time_limit(args), args.lib_consistent)
    if args.checker_py:
        fn = load_function(args.checker_py)
        return FunctionChecker(fn, args.checker_py, args.all_files, _time_limit(args))
    if args.all_files:
        raise UsageProblem("--all-files: a recovery judges one file")
    from .check import load_check

    c = load_check(args.recovery, "--recovery")
    if args.timeout is not None:
        import dataclasses

        # The limit of each recovery run, as the check's own run_timeout is otherwise.
        c = dataclasses.replace(c, run_timeout=_time_limit(args))
    # (Its limit is the check's run_timeout, which recovery_checker applies.)
    checker = FunctionChecker(recovery_checker(c), f"recovery of {args.recovery}", timeout=None)
    args._recovery_check = c  # lazy exploration runs the recovery itself, on the simulator
    return checker


def _seconds_or_none(text: str) -> float | str:
    """``--timeout``: seconds, or ``none`` (no limit)."""
    if text.strip().lower() == "none":
        return "none"
    try:
        return finite_seconds(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a positive, finite number of seconds, or none"
        ) from None


def _time_limit(args: argparse.Namespace) -> float | None:
    """The time limit per checker run: ``--timeout``, else the default (read now: tests
    lower it)."""
    from ..pmlog import checkers  # the module: tests lower its default

    if args.timeout is None:
        return checkers.DEFAULT_TIMEOUT
    return None if args.timeout == "none" else float(args.timeout)


#: Checker runs that timed out or crashed, told on stderr as they come (then only counted).
_NOTICES = 5


def _notice(term: Any) -> Any:
    """Tells stderr of a checker run that timed out or crashed, as it happens."""
    told = 0

    def notice(token: str, verdict: str) -> None:
        nonlocal told
        told += 1
        if told > _NOTICES + 1:
            return
        if told > _NOTICES:
            text = "more images timed out or crashed the checker: the report counts them"
        else:
            first = verdict.splitlines()[0] if verdict else ""
            if len(first) > 200:
                first = first[:197] + "..."
            text = f"[crash {token}] {first}; counted as inconsistent, going on"
        term.notice(f"check-log: {text}")

    return notice


def _waiting(args: argparse.Namespace, checker: Any, term: Any) -> Any:
    """Tells stderr of a long wait on one image's checker run (pmemsim.pmlog.waiting):
    which image, for how long, and how to stop the check or limit the runs."""
    recovery = getattr(args, "_recovery_check", None)
    limit = getattr(checker, "timeout", None) if recovery is None else recovery.run_timeout
    if limit is None:
        hint = "--timeout SECONDS limits each run"
    else:
        hint = "--timeout SECONDS changes the limit"
    bound = "no time limit" if limit is None else f"time limit {limit:g} s"

    def waiting(token: str, seconds: float) -> None:
        waited = f"{seconds:.{0 if seconds >= 10 else 1}f}"
        term.notice(
            f"check-log: [crash {token}] still waiting for the checker on this image after "
            f"{waited} s ({bound}); Ctrl-C stops the check and prints the failures found so "
            f"far; {hint}"
        )

    return waiting


def _base_images(specs: list[str] | str | None) -> dict[str, str]:
    """``--base-image FILE`` (the only registered file), ``REGISTERED=FILE``, or
    ``REGISTERED=`` (zeros, whatever the file holds now)."""
    out: dict[str, str] = {}
    for spec in [specs] if isinstance(specs, str) else specs or ():
        registered, sep, path = spec.rpartition("=")
        if not sep:
            registered, path = "", spec
            if not path:
                raise UsageProblem(
                    "--base-image: expected FILE, REGISTERED_PATH=FILE or REGISTERED_PATH="
                )
        if registered in out:
            raise UsageProblem(f"--base-image: {registered or 'the file'} given twice")
        out[registered] = path
    return out


def _command(args: argparse.Namespace, extra: list[str]) -> str:
    """The command line that reruns this check with ``extra`` options."""
    out = ["pmemsim", "check-log", args.log, *extra]
    if args.crash_points != "barriers":
        out += ["--crash-points", args.crash_points]
    given = args.base_image
    for spec in [given] if isinstance(given, str) else given or ():
        out += ["--base-image", spec]
    if args.all_files:
        out.append("--all-files")
    if args.timeout is not None:
        out += ["--timeout", "none" if args.timeout == "none" else f"{args.timeout:g}"]
    if args.checker_py:
        out += ["--checker-py", args.checker_py]
    elif args.checker_lib:
        out += ["--checker-lib", args.checker_lib]
        if args.lib_consistent != 1:
            out += ["--lib-consistent", str(args.lib_consistent)]
    elif args.recovery:
        out += ["--recovery", args.recovery]
    else:
        out += ["--", *args.checker]
    import shlex  # (a replay line is written only for a failure)

    return shlex.join(out)


def _origin(pool: Any) -> str:
    if pool.source is None:  # chosen (--base-image PATH=), or the file is not there
        return "zeros" if os.path.exists(pool.resolved) else "zeros, no such file"
    if os.path.realpath(pool.source) == os.path.realpath(pool.resolved):
        return "the file's content"
    return f"from {pool.source}"


def _progress(term: Any, executor: Any = None) -> Any:
    """One live line on stderr: images judged so far and the rate (streamed: no total), and
    the workers of a Dask cluster judging them."""
    if not term.live:
        return None
    import time

    started = time.perf_counter()

    def show(done: int, _: int) -> None:
        rate = done / max(time.perf_counter() - started, 1e-9)
        on = f" on {executor.workers} workers" if executor is not None else ""
        term.status(f"check-log: {done:,} image(s) judged, {rate:,.0f}/s{on}")

    return show


def _cmd_check_log(args: argparse.Namespace) -> int:
    from .common import writable_file

    if not os.path.isfile(args.log):
        if args.log == "-" or os.path.exists(args.log):
            raise UsageProblem(
                f"{args.log}: not a regular file (check-log reads the log more than once: "
                "save it to a file first)"
            )
        raise UsageProblem(f"{args.log}: no such log file")
    # Where results go is checked before any work: the work is lost otherwise.
    for option, dest in (("--json", "json"), ("--html", "html")):
        if getattr(args, dest):
            setattr(args, dest, str(writable_file(getattr(args, dest), option)))
    if args.image_out and args.replay is None:
        raise UsageProblem("--image-out goes with --replay TOKEN")
    # The checker before the log: a library's worker loads it while the log is read.
    checker = _checker(args)
    from ..pmlog.check import replay_crash
    from ..pmlog.checkers import LibChecker
    from ..pmlog.grammar import read_log
    from ..pmlog.replay import Replay

    images = _base_images(args.base_image)
    log = read_log(args.log)
    given: dict[str, str] = {}
    for registered, path in images.items():
        if not registered:
            if len({f.path for f in log.files}) > 1:
                raise UsageProblem(
                    "the log registers several files: give --base-image REGISTERED_PATH=FILE"
                )
            registered = log.files[0].path if log.files else ""
        given[registered] = path
    replay = Replay.of(log, base_images=given)
    inputs = _inputs(args, replay)
    for option, path in (("--json", args.json), ("--html", args.html)):
        if path:
            not_an_input(path, option, inputs)
    if args.image_out and len(replay.pools) == 1:
        args.image_out = str(writable_file(args.image_out, "--image-out", inputs))
    if isinstance(checker, LibChecker):
        checker.loaded()  # a library that does not load is refused before any output
    if args.replay is not None:
        failure, _ = replay_crash(
            replay,
            checker,
            args.replay,
            crash_points=args.crash_points,
            image_out=args.image_out,
        )
        if args.image_out:
            print(f"wrote the image of crash {args.replay} to {args.image_out}")
        if args.html:
            from ..pmlog.check import LogCheckResult

            one = LogCheckResult(args.log, f"replay of {args.replay}", 0, checker.label, 1, 1, 1)
            one.inconsistent, one.minimal = int(failure is not None), failure
            _html(args, replay, one)
        if failure is None:
            print(f"the image of crash {args.replay} is consistent")
            return EXIT_OK
        print(f"the image of crash {args.replay} is inconsistent:\n{failure.describe()}")
        return EXIT_FAILED
    engines = _marker_engines(args.marker_engine)
    _unmatched_markers(engines, log.markers)
    # --jobs given is the CPUs the user grants: no twin replaying beside the check.
    args.twin, args.jobs = args.jobs is None, args.jobs or 1
    from ..distributed.options import cluster_for

    with cluster_for(args.scheduler, args.jobs) as executor:
        return _check_log(args, log, replay, checker, engines, executor)


def _check_log(
    args: argparse.Namespace, log: Any, replay: Any, checker: Any, engines: Any, executor: Any
) -> int:
    from ..pmlog.check import check_log
    from ..pmlog.checkers import FunctionChecker
    from .terminal import Terminal

    inline = isinstance(checker, FunctionChecker) and args.jobs == 1 and executor is None
    engine = args.engine or ("lazy" if inline else "exhaustive")
    files = "; ".join(
        f"file {p.path} ({p.size} bytes, base image: {_origin(p)})" for p in replay.pools
    )
    print(
        f"pmemsim check-log {args.log}: {log.records} records, {len(log)} operations; {files}; "
        f"engine {engine}"
        f"{' with ' + str(len(engines)) + ' marker engine(s)' if engines else ''}"
        f"; seed {args.seed}; checker {checker.label}"
        f"{'; on ' + executor.describe() if executor is not None else ''}"
    )
    if args.timeout == "none":
        # Nothing will say so later: a checker that never returns stops the check silently.
        print(
            "check-log: no time limit per checker run (--timeout none): a checker that never "
            "returns on an image stops the check there (Ctrl-C ends it)",
            file=sys.stderr,
        )
    term = Terminal()
    partial: list[Any] = []
    try:
        result = check_log(
            replay,
            checker,
            engine=engine,
            markers=engines,
            seed=args.seed,
            jobs=args.jobs,
            crash_points=args.crash_points,
            max_images=args.max_images,
            progress=_progress(term, executor),
            name=args.log,
            lint=not args.no_lint,
            check=getattr(args, "_recovery_check", None),
            executor=executor,
            notice=_notice(term),
            interrupted=partial.append,
            waiting=_waiting(args, checker, term),
            twin=args.twin,
        )
    except KeyboardInterrupt:
        term.clear()
        if partial:
            _interrupted(args, partial[0])
        raise
    finally:
        term.clear()
    print(result.report(lint=False))
    if result.minimal is not None:
        print(f"  replay: {_command(args, ['--replay', result.minimal.token])}")
    if result.timed_out and not args.recovery:
        print("(--timeout SECONDS changes the time limit per checker run; none removes it)")
    elif result.timed_out and args.recovery and args.timeout is not None:
        print(f"(--timeout replaced the run_timeout of {args.recovery}; none removes the limit)")
    elif result.timed_out and args.recovery:
        print(
            f"(the time limit of a recovery run is the run_timeout of {args.recovery}; "
            "--timeout SECONDS replaces it)"
        )
    if (
        args.checker_lib
        and args.lib_consistent == 1
        and result.minimal is not None
        and result.minimal.verdict == "returned 0"
        and result.inconsistent == result.images_checked
    ):
        print(
            "(every image returned 0: a function written for pmreorder's lib mode, whose "
            "manual takes 0 as consistent, needs --lib-consistent 0)"
        )
    if result.findings:
        print(result.lint_report())
    if result.read_paths:
        covered = result.images_possible / result.seconds if result.seconds > 0 else 0.0
        print(
            f"{result.images_possible} image(s) covered by {result.images_checked} checker "
            f"run(s) in {result.seconds:.2f} s ({covered:,.0f} images/s)"
        )
    else:
        print(
            f"{result.images_checked} distinct image(s) checked in {result.seconds:.2f} s "
            f"({result.images_per_second:,.0f} images/s)"
        )
    if args.json:
        import json

        write_output(args.json, json.dumps(result.as_dict(), indent=2) + "\n", "--json")
    if args.html:
        _html(args, replay, result)
    return EXIT_FAILED if result.inconsistent else EXIT_OK


def _interrupted(args: argparse.Namespace, result: Any) -> None:
    """What a stopped check had found: the minimal failure so far is worth its replay line
    (a check stopped because its checker loops on image after image, say)."""
    print(
        f"INTERRUPTED: {result.inconsistent} inconsistent image(s) found so far (the replay "
        f"had reached {result.crash_points} crash point(s); not every image was judged)"
    )
    if result.minimal is not None:
        print("the minimal inconsistent crash so far:")
        print(result.minimal.describe())
        print(f"  replay: {_command(args, ['--replay', result.minimal.token])}")
    sys.stdout.flush()


def _html(args: argparse.Namespace, replay: Any, result: Any) -> None:
    """``--html FILE``: the report, with C source found beside the log or here."""
    from ..html import log_report
    from .check import write_html

    token = result.minimal.token if result.minimal is not None else ""
    text = log_report(
        result,
        replay,
        command=_command(args, ["--replay", token]) if token else "",
        search=[os.path.dirname(os.path.abspath(args.log)), os.getcwd()],
        crash_points=args.crash_points,
    )
    write_html(args.html, text)


def _cmd_export_log(args: argparse.Namespace) -> int:
    from ..pmlog.export import export_log
    from .check import load_check, load_checks
    from .common import writable_file

    # Before recording: a path that cannot be written would lose the work.
    scenario = args.scenario.partition("::")[0] if args.scenario else args.path or ""
    args.output = str(writable_file(args.output, "-o", {f"the check file {scenario}": scenario}))
    if args.write_pool and not os.path.exists(args.pool):
        writable_file(args.pool, "--pool")
    if args.scenario:
        if args.path or args.select:
            raise UsageProblem("give --scenario PATH::CHECK or PATH [-k NAME], not both")
        checks = [load_check(args.scenario, "--scenario")]
    elif args.path:
        checks = load_checks(args.path, [args.select] if args.select else None)
    else:
        raise UsageProblem("name a check: --scenario PATH::CHECK or PATH -k NAME")
    if len(checks) != 1:
        names = ", ".join(c.name for c in checks)
        raise UsageProblem(f"{len(checks)} checks match ({names}); pick one with -k NAME")
    (c,) = checks
    text = export_log(c, args.pool, base=args.base, frames=not args.no_frames)
    write_output(args.output, text, "-o")
    records = text.count("|") + 1
    pool = os.path.abspath(args.pool)
    print(f"{c.name}: {records} records written to {args.output} (pool {pool}, {c.size} bytes)")
    if args.write_pool:
        if os.path.exists(pool):
            print(f"{pool} exists; left as it is", file=sys.stderr)
        else:
            with open(pool, "xb") as f:
                f.truncate(c.size)
            print(f"wrote {c.size} zero bytes to {pool}")
    elif os.path.exists(pool):
        print(
            f"note: {pool} exists; check-log and pmreorder start from its content",
            file=sys.stderr,
        )
    return EXIT_OK


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..explore.strategy import STRATEGY_NAMES
    from ..explore.trace import CRASH_POINT_MODES

    p = sub.add_parser(
        "check-log",
        help="check every crash image a pmemcheck / pmreorder store log allows",
        usage="pmemsim check-log LOG [options] (-- CHECKER [ARGS...] | --checker-lib "
        "LIB.so:FUNCTION | --checker-py MODULE:FUNCTION | --recovery PATH::CHECK)",
        description=(
            "Replays a pmemcheck / pmreorder store log (as valgrind writes it) on the "
            "simulator, crashes it before every barrier that follows a store and at the end, "
            "and judges every distinct crash image the x86 rules allow (a dirty line may be "
            "evicted at any time, a line's stores persist in order, stores tear at 8-byte "
            "boundaries) over every registered file. The base image is each registered "
            "file's content (zeros if it does not exist); the files are never modified. A "
            "checker program gets an image file's path as its last argument and "
            "PMREORDER_MARKERS in its environment, and exits 0 for consistent. Exit status: "
            "0 when every image is consistent, 1 when one is not, 2 for bad input."
        ),
    )
    p.add_argument("log", help="the store log")
    # "+" rather than "*": a "*" positional would be matched (empty) together with LOG, and
    # the program after "--" would then be left over. Not required: --checker-py may stand
    # in for it.
    checker = p.add_argument("checker", nargs="+", default=[], help=argparse.SUPPRESS)
    checker.required = False
    p.add_argument(
        "--checker-py",
        metavar="MODULE:FUNCTION",
        help="judge images in this process: FUNCTION(image) gets a read-only memoryview; "
        "False or an exception means inconsistent (MODULE may be FILE.py)",
    )
    p.add_argument(
        "--checker-lib",
        metavar="LIB.so:FUNCTION",
        help="judge images with int FUNCTION(const char *path) from a shared library (1: "
        "consistent, or --lib-consistent's value), called in a worker process, no process "
        "per image",
    )
    p.add_argument(
        "--lib-consistent",
        type=int,
        default=1,
        metavar="N",
        help="what the --checker-lib function returns for a consistent image (default 1; "
        "0 for a function written to pmreorder's manual)",
    )
    p.add_argument(
        "--recovery",
        metavar="PATH::CHECK",
        help="judge images with a scenario CrashCheck's recovery (run on the simulator)",
    )
    p.add_argument(
        "--all-files",
        action="store_true",
        help="several registered files: hand the checker all files of an image at once "
        "(a program gets every path; a Python function a dict of them) instead of one by one",
    )
    p.add_argument(
        "--engine",
        default=None,
        metavar="NAME",
        help="strategy per crash point (default: lazy, exact by read path, for a Python "
        f"checker or a recovery with --jobs 1; exhaustive otherwise): {', '.join(STRATEGY_NAMES)}",
    )
    p.add_argument(
        "-x",
        "--marker-engine",
        action="append",
        metavar="MARKER=ENGINE,...",
        help="strategy for crash points inside a marker (the innermost marker with one "
        "wins; 'none' or NoReorderNoCheck skips them); or a JSON file of them",
    )
    jobs = count(1, MAX_JOBS)
    p.add_argument(
        "--jobs",
        type=jobs,
        default=None,
        metavar="N",
        help="checkers at once (default 1); given, also keeps the durability self-check of a "
        "long log in this process instead of a twin process on a free CPU",
    )
    from ..distributed.options import add_scheduler_option

    add_scheduler_option(p)
    p.add_argument("--seed", type=int, default=0, help="seed for random strategies (0)")
    p.add_argument(
        "--crash-points",
        choices=CRASH_POINT_MODES,
        default="barriers",
        help="where to crash (default barriers: exact)",
    )
    p.add_argument(
        "--max-images",
        type=count(2),
        default=4096,
        metavar="N",
        help="per crash point; above it an exact engine falls back and says so (4096)",
    )
    p.add_argument(
        "--base-image",
        action="append",
        metavar="[REGISTERED=]FILE",
        help="initial content of a registered file instead of the file's own (repeatable; "
        "REGISTERED= names the file when the log registers several; REGISTERED= alone: zeros)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds_or_none,
        metavar="SECONDS|none",
        help="time limit per checker run (default 10 s; none: no limit): an image whose run "
        "takes longer is inconsistent, counted as timed out; with --recovery it replaces the "
        "check's run_timeout",
    )
    p.add_argument(
        "--no-lint",
        action="store_true",
        help="leave out the lint findings (stores never flushed or fenced, useless flushes)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p.add_argument(
        "--html", metavar="FILE", help="also write an HTML report (the minimal crash's timeline)"
    )
    p.add_argument("--replay", metavar="TOKEN", help="judge only the image of this crash")
    p.add_argument(
        "--image-out",
        metavar="FILE",
        help="with --replay: write the image here (a folder of them for several files)",
    )
    p.set_defaults(func=_cmd_check_log)

    e = sub.add_parser(
        "export-log",
        help="write a scenario check's workload as a pmemcheck / pmreorder store log",
        description=(
            "Records the workload of one CrashCheck on the simulator and writes its stores "
            "(cut into parts of at most 8 bytes at 8-byte boundaries), flushes, fences, deep "
            "flushes and markers as a store log, with the pool registered as one file, so "
            "that check-log or pmreorder can check it."
        ),
    )
    e.add_argument("path", nargs="?", help="scenario file or folder")
    e.add_argument("-k", "--select", metavar="NAME", help="the check to export")
    e.add_argument("--scenario", metavar="PATH::CHECK", help="the check to export")
    e.add_argument("-o", "--output", required=True, metavar="LOG", help="where to write the log")
    e.add_argument(
        "--pool", default="pool.bin", metavar="PATH", help="the file to register (pool.bin)"
    )
    e.add_argument(
        "--base",
        type=_int,
        default=0x10000000,
        metavar="ADDRESS",
        help="address the file is registered at (0x10000000)",
    )
    e.add_argument("--no-frames", action="store_true", help="no stack frame on STORE records")
    e.add_argument(
        "--write-pool", action="store_true", help="create the pool file (zeros) if missing"
    )
    e.set_defaults(func=_cmd_export_log)
