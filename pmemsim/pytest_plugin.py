"""pytest plugin (entry point ``pytest11: pmemsim``): a set on the chosen backend, the seed,
and crash-consistency checks that fail with the minimal crash.

Options (group "pmemsim"):

* ``--pmemsim-backend {sim,real}``: the backend :func:`pmem_set` and :func:`pmemsim_backend`
  use. Precedence: the command line, then the ``pmemsim_backend`` ini key, then ``sim``.
* ``--pmemsim-seed N|last|random``: the seed of the session (default 0). ``random`` chooses
  one; every run saves its seed in the pytest cache and ``last`` reuses it. The report
  header says ``pmemsim: backend=NAME seed=N``.
* ``--pmemsim-replay TOKEN``: ``crash_check`` checks only the crash a failure printed
  (``pytest NODEID --pmemsim-replay=TOKEN`` is the replay line of every failure).

Fixtures: :func:`pmemsim_seed`, :func:`pmemsim_backend`, :func:`pmem_set`,
:func:`crash_check`. Marker: ``@pytest.mark.crash_consistency(**options)`` configures
``crash_check`` (see :data:`MARKER_OPTIONS`). docs/hypothesis-pytest.md has examples.

Loading the plugin imports only pytest and the light ``pmemsim`` package: the explorer,
the backends, cffi and Hypothesis are imported by the fixtures that need them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pmemsim import Backend, Set, View
    from pmemsim.explore import CheckResult

__all__ = ["BACKENDS", "MARKER_OPTIONS", "PMEM_SET_SIZE", "CrashChecker"]

BACKENDS = ("sim", "real")
#: Bytes of anonymous memory mapped in :func:`pmem_set`.
PMEM_SET_SIZE = 64 * 1024
#: What ``@pytest.mark.crash_consistency(...)`` and ``crash_check(...)`` accept: the fields
#: of :class:`pmemsim.explore.CrashCheck` (or, with ``files=True``, of
#: :class:`pmemsim.explore.FileCrashCheck`) a test may choose, plus ``jobs`` and ``files``.
#: (The fields are read from the classes when a check runs; this list is for the help.)
MARKER_OPTIONS = (
    "strategy",
    "size",
    "granularity",
    "crash_points",
    "max_images",
    "markers",
    "recovery_crash_depth",
    "expect",
    "seed",
    "faults",
    "badblock_policy",
    "jobs",
    "files",
)
#: Options that are not fields of the check.
_EXTRA = ("jobs", "files")

_CACHE_KEY = "pmemsim/seed"


@dataclass(frozen=True)
class _Session:
    backend: str
    seed: int
    replay: str | None = None
    #: --pmemsim-scheduler, parsed (a pmemsim.distributed.Scheduler), and the Dask
    #: executor opened for it at the first crash_check (closed with the session).
    scheduler: Any = None
    cluster: list[Any] = field(default_factory=list)


_SESSION = pytest.StashKey[_Session]()

Workload = Callable[["View"], object]
CrashChecker = Callable[..., "CheckResult"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pmemsim", "pmemsim: persistent-memory crash testing")
    group.addoption(
        "--pmemsim-backend",
        dest="pmemsim_backend",
        choices=BACKENDS,
        default=None,
        help="backend of the pmem_set and pmemsim_backend fixtures: sim (the simulator) or "
        "real (libpmem2). Overrides the pmemsim_backend ini key; default sim.",
    )
    group.addoption(
        "--pmemsim-seed",
        dest="pmemsim_seed",
        default=None,
        metavar="N|last|random",
        help="seed of pmemsim's random choices (default 0): an integer, 'random' to choose "
        "one, or 'last' for the seed of the previous run (kept in the pytest cache).",
    )
    group.addoption(
        "--pmemsim-html",
        dest="pmemsim_html",
        default=None,
        metavar="DIR|none",
        help="folder for the HTML report of each failing crash_check (default: "
        "pmemsim-html in the pytest cache folder); 'none' writes none.",
    )
    group.addoption(
        "--pmemsim-scheduler",
        dest="pmemsim_scheduler",
        default=None,
        metavar="ADDRESS",
        help="crash_check explores on a Dask cluster: tcp://HOST:PORT (a running scheduler), "
        "local (a LocalCluster of one worker process per core) or local:N; needs "
        "pip install 'pmemsim[dask]'. The report is the same as without.",
    )
    group.addoption(
        "--pmemsim-replay",
        dest="pmemsim_replay",
        default=None,
        metavar="TOKEN",
        help="crash_check checks only the crash TOKEN names (from a failure's replay line: "
        "pytest NODEID --pmemsim-replay=TOKEN).",
    )
    parser.addini(
        "pmemsim_backend",
        "backend of the pmem_set fixture when --pmemsim-backend is not given (sim, real)",
        default="sim",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "crash_consistency(**options): options of the crash_check fixture "
        f"({', '.join(MARKER_OPTIONS)})",
    )
    replay = config.getoption("pmemsim_replay")
    if replay is not None and not replay.strip():
        raise pytest.UsageError("--pmemsim-replay: give the crash token a failure printed")
    config.stash[_SESSION] = _Session(
        _backend_name(config), _session_seed(config), replay, _scheduler(config)
    )


def _scheduler(config: pytest.Config) -> Any:
    text = config.getoption("pmemsim_scheduler")
    if text is None:
        return None
    from pmemsim.distributed import scheduler_from
    from pmemsim.distributed.cluster import require_dask
    from pmemsim.errors import PmemError

    try:
        scheduler = scheduler_from(text, what="--pmemsim-scheduler")
        if scheduler is not None:
            require_dask()
    except PmemError as exc:
        raise pytest.UsageError(exc.message) from None
    return scheduler


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None:
        for executor in session.cluster:
            executor.close()
        session.cluster.clear()


def _cluster(session: _Session, module: Any) -> Any:
    """The session's Dask executor (opened at its first use), shipping the test's module
    by value (the workers cannot import a test module)."""
    if not session.cluster:
        from pmemsim.distributed import Dask

        session.cluster.append(Dask(session.scheduler))
    executor = session.cluster[0]
    executor.by_value = (module,) if module is not None else ()
    return executor


def _backend_name(config: pytest.Config) -> str:
    name = config.getoption("pmemsim_backend")
    if name is None:
        name = str(config.getini("pmemsim_backend")).strip() or "sim"
        if name not in BACKENDS:
            raise pytest.UsageError(
                f"pmemsim_backend = {name!r} in the ini file: expected one of {', '.join(BACKENDS)}"
            )
    return str(name)


def _session_seed(config: pytest.Config) -> int:
    text = config.getoption("pmemsim_seed")
    cache = getattr(config, "cache", None)
    if text is None:
        seed = 0
    elif text.strip() == "last":
        saved = cache.get(_CACHE_KEY, None) if cache is not None else None
        if not isinstance(saved, int):
            raise pytest.UsageError(
                "--pmemsim-seed=last: no seed saved yet"
                + ("" if cache is not None else " (the cacheprovider plugin is disabled)")
            )
        seed = saved
    elif text.strip() == "random":
        from pmemsim.explore.seeding import fresh_seed

        seed = fresh_seed()
    else:
        from pmemsim.errors import InvalidArgumentError
        from pmemsim.explore.seeding import SEED_LIMIT, parse_seed

        try:
            seed = parse_seed(text)
        except InvalidArgumentError:
            raise pytest.UsageError(
                f"--pmemsim-seed={text}: expected an integer in [0, {SEED_LIMIT}), "
                "'last' or 'random'"
            ) from None
    if cache is not None:
        cache.set(_CACHE_KEY, seed)
    return seed


def pytest_report_header(config: pytest.Config) -> str:
    s = config.stash[_SESSION]
    replay = f" replay={s.replay}" if s.replay else ""
    scheduler = f" scheduler={s.scheduler}" if s.scheduler is not None else ""
    return f"pmemsim: backend={s.backend} seed={s.seed}{replay}{scheduler}"


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pmemsim_seed(pytestconfig: pytest.Config) -> int:
    """The session's seed (``--pmemsim-seed``; printed in the report header)."""
    return pytestconfig.stash[_SESSION].seed


@pytest.fixture
def pmemsim_backend(pytestconfig: pytest.Config) -> Backend:
    """A fresh backend of the chosen kind: a CACHE_LINE simulator, or libpmem2. The test is
    skipped, with the reason, when the backend cannot run here."""
    import pmemsim

    name = pytestconfig.stash[_SESSION].backend
    try:
        cls = pmemsim.load_backend(name)
    except pmemsim.BackendUnavailableError as exc:
        pytest.skip(str(exc))
    return cls()


@pytest.fixture
def pmem_set(pmemsim_backend: Backend) -> Iterator[Set]:
    """An open :class:`pmemsim.Set` on :func:`pmemsim_backend` with one part mapped:
    :data:`PMEM_SET_SIZE` bytes of zeroed anonymous memory (``pmem_set.view()`` is a View of
    it). The set requires PAGE granularity, so it maps on every platform; the granularity
    it got is ``pmem_set.granularity`` (CACHE_LINE on the simulator, BYTE for anonymous
    memory on libpmem2). Closed after the test."""
    import pmemsim

    s = pmemsim.Set(pmemsim.Config(granularity=pmemsim.Granularity.PAGE, backend=pmemsim_backend))
    source = pmemsim.Source.anonymous(PMEM_SET_SIZE)
    try:
        s.map(pmemsim.Part(source))
        yield s
    finally:
        s.close()
        source.close()


def _invalid(message: str) -> Exception:
    from pmemsim.errors import ErrorCode, InvalidArgumentError

    return InvalidArgumentError(ErrorCode.EINVAL, message)


def _options(where: str, options: dict[str, Any], kind: type | None = None) -> dict[str, Any]:
    """``options`` checked against what ``kind`` (CrashCheck or FileCrashCheck; None: either)
    accepts, with a granularity name turned into a Granularity."""
    import dataclasses

    from pmemsim.enums import Granularity
    from pmemsim.explore import CrashCheck, FileCrashCheck

    kinds = (kind,) if kind is not None else (CrashCheck, FileCrashCheck)
    fixed = {"name", "workload", "recover", "description"}
    known = {f.name for k in kinds for f in dataclasses.fields(k)} - fixed | set(_EXTRA)
    unknown = sorted(set(options) - known)
    if unknown:
        shown = [o for o in MARKER_OPTIONS if o in known] + sorted(known - set(MARKER_OPTIONS))
        what = "" if kind is None else f" for a {kind.__name__}"
        raise _invalid(
            f"{where}: unknown option(s) {', '.join(unknown)}{what}; known: {', '.join(shown)}"
        )
    gran = options.get("granularity")
    if isinstance(gran, str):
        try:
            options["granularity"] = Granularity[gran.strip().upper().replace("-", "_")]
        except KeyError:
            raise _invalid(
                f"{where}: granularity {gran!r} is not one of "
                f"{', '.join(g.name for g in Granularity)}"
            ) from None
    return options


def _build(name: str, args: tuple[Any, ...], options: dict[str, Any], seed: int) -> Any:
    """The check ``crash_check(*args, **options)`` means."""
    import dataclasses

    from pmemsim.explore import CrashCheck, FileCrashCheck

    files = options.pop("files", False)
    if len(args) == 1 and isinstance(args[0], (CrashCheck, FileCrashCheck)):
        c = args[0]
        _options("crash_check()", dict(options), type(c))
        return dataclasses.replace(c, **options) if options else c
    if len(args) != 2 or not all(callable(a) for a in args):
        raise _invalid(
            "crash_check(workload, recover, **options) or crash_check(check, **options), "
            f"not crash_check{args!r}"
        )
    kind = FileCrashCheck if files else CrashCheck
    _options("crash_check()", dict(options), kind)
    options.setdefault("seed", seed)
    return kind(name, *args, **options)


def _quoted(text: str) -> str:
    import shlex

    return shlex.quote(text)


@pytest.fixture
def crash_check(request: pytest.FixtureRequest, pmemsim_seed: int) -> CrashChecker:
    """``crash_check(workload, recover, **options) -> CheckResult``: explore every crash of
    ``workload`` (on the simulator, whatever the backend option) with ``recover`` as the
    check, through :func:`pmemsim.explore.check`. ``files=True`` makes it a program over
    files (:class:`pmemsim.explore.FileCrashCheck`: ``workload(backend, directory)``);
    ``crash_check(check, **options)`` runs a CrashCheck or FileCrashCheck as it is.

    Options come from the call, then ``@pytest.mark.crash_consistency(...)``, then the
    defaults of the check; the seed is the session's unless one of them sets it. With
    ``expect="consistent"`` (the default) an inconsistent result raises the user's exception
    of the minimal crash of each distinct failure, with the crash, the lost stores and the
    command that replays it as notes (several: an ExceptionGroup). With
    ``expect="inconsistent"`` a consistent result fails the test instead. With
    ``--pmemsim-replay=TOKEN`` only that crash is checked.
    """
    marker = request.node.get_closest_marker("crash_consistency")
    where = "@pytest.mark.crash_consistency"
    from_marker: dict[str, Any] = {}
    if marker is not None:
        if marker.args:
            raise _invalid(f"{where} takes keyword options only, not {marker.args!r}")
        from_marker = _options(where, dict(marker.kwargs))
    nodeid = request.node.nodeid
    session = request.config.stash[_SESSION]

    def run(*args: Any, **options: Any) -> CheckResult:
        from pmemsim.explore import check

        chosen = {**from_marker, **_options("crash_check()", options)}
        jobs = chosen.pop("jobs", 1)
        c = _build(request.node.name, args, chosen, pmemsim_seed)
        if session.replay is not None:
            return _replayed(c, session.replay, nodeid)
        executor = None
        if session.scheduler is not None and jobs == 1:
            executor = _cluster(session, getattr(request, "module", None))
        result = check(c, jobs=jobs, progress=None, executor=executor)
        rerun = f"pmemsim: rerun the test with: pytest {_quoted(nodeid)} --pmemsim-seed={c.seed}"
        if c.expect == "inconsistent":
            if not result.failures:
                raise AssertionError(
                    f"expected an inconsistent crash, found none: {result.summary()}"
                )
            return result
        # The command line cannot find a check defined in a test: pytest replays it.
        try:
            result.raise_failures(replay=lambda f: _replay_line(nodeid, f.crash_token))
        except Exception as exc:
            exc.add_note(rerun)
            _html_report(request, result, exc)
            raise
        return result

    return run


_HTML = pytest.StashKey[str]()


def _html_report(request: pytest.FixtureRequest, result: CheckResult, exc: BaseException) -> None:
    """Write the failing check's HTML report, name it in the failure, and keep its path for
    pytest-html (see :func:`pytest_runtest_makereport`)."""
    import re
    from pathlib import Path

    config = request.config
    folder = config.getoption("pmemsim_html")
    if folder is not None and folder.strip().lower() == "none":
        return
    try:
        if folder is not None:
            where = Path(folder)
            where.mkdir(parents=True, exist_ok=True)
        elif getattr(config, "cache", None) is not None:
            where = config.cache.mkdir("pmemsim-html")
        else:
            import tempfile

            where = Path(tempfile.gettempdir()) / "pmemsim-html"
            where.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.nodeid).strip("_")[:150] or "check"
        path = where.absolute() / f"{name}.html"
        nodeid = request.node.nodeid
        result.to_html(
            str(path), replay=lambda f: _replay_line(nodeid, f.crash_token).removeprefix("replay: ")
        )
    except Exception as err:  # the user's failure matters more than its picture
        exc.add_note(f"pmemsim: the HTML report could not be written: {err}")
        return
    exc.add_note(f"pmemsim: HTML report: {path}")
    request.node.stash[_HTML] = str(path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """With pytest-html: a failing crash check's HTML report is linked from its report."""
    report = yield
    path = item.stash.get(_HTML, None)
    plugin = item.config.pluginmanager.getplugin("html")
    if path is not None and report.when == "call" and plugin is not None:
        extras = getattr(plugin, "extras", None)
        if extras is not None:
            from pathlib import Path

            link = extras.url(Path(path).as_uri(), name="pmemsim crash report")
            report.extras = [*getattr(report, "extras", []), link]
    return report


def _replay_line(nodeid: str, token: str) -> str:
    return f"replay: pytest {_quoted(nodeid)} --pmemsim-replay={_quoted(token)}"


def _replayed(c: Any, token: str, nodeid: str) -> CheckResult:
    """``--pmemsim-replay``: recovery on the one image ``token`` names."""
    from pmemsim.explore import check

    result = check(c, replay=token, progress=None)
    if c.expect == "inconsistent":
        if not result.failures:
            raise AssertionError(f"{c.name}: the image of crash {token} is consistent now")
        return result
    result.raise_failures(replay=lambda f: _replay_line(nodeid, f.crash_token))
    return result
