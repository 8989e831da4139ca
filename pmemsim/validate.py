"""Validation runs: every scenario's workload on a real platform, verified by a new process.

For each check that expects a consistent verdict (the correct variants), in a directory of
the user's choice and without any crash injection:

1. this process runs the workload. A CrashCheck gets a fresh pool file, mapped by this
   module; the whole pool is then persisted and deep-flushed and a digest of its content
   noted before the file is closed. A FileCrashCheck (a program that opens its own files)
   gets a fresh subdirectory and a fresh backend, and a digest of every file the program
   left there (relative path and content) is noted once the workload returns;
2. a new Python process (``python -m pmemsim.validate``) checks that the pool, or every
   file of the directory, holds exactly what the writer saw, then runs the check's recovery
   on it (``recover(view)``, or ``recover(backend, directory)`` on a fresh backend), which
   must accept it.

This exercises the real store, flush and copy paths and the round trip through the file; it
cannot show durability across a power failure (that is what crash exploration on the
simulator is for). ``PMEM2_FORCE_GRANULARITY`` (``force=``) is set for both processes; with
it libpmem2 *pretends*: a file without DAX gets cache flush instructions and no msync, so its
data reaches the page cache only, which a new process still reads.

The simulator can stand in for libpmem2 (``backend="sim"``): it is then configured as a
machine without persistent memory (files PAGE unless forced, anonymous memory BYTE) and writes
the persisted image into the file when the source closes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .backend import Backend, BackendMap, load_backend
from .config import Config
from .digest import blake2b
from .enums import Granularity, SourceFlag
from .errors import ErrorCode, InvalidArgumentError, PmemError
from .part import Part
from .set import Set
from .source import Source

__all__ = [
    "FORCE_GRANULARITY",
    "ValidationResult",
    "filesystem_of",
    "make_backend",
    "parse_granularity",
    "validate",
]

#: libpmem2 reads it at every map; set for the writer and the verifier alike.
FORCE_GRANULARITY = "PMEM2_FORCE_GRANULARITY"
#: How long the verifying process may take before it counts as failed.
VERIFY_TIMEOUT = 300.0

Status = Literal["passed", "FAILED", "error", "skipped"]
#: What a check validates: a pool this module maps, or the files a program opens itself.
Kind = Literal["pool", "files"]


@dataclass(frozen=True)
class ValidationResult:
    """What one check's validation run found."""

    name: str
    status: Status
    #: Where the check is defined.
    origin: str
    #: The granularity the map got; for a program over files, the coarsest any of its maps
    #: got (None if it never mapped).
    granularity: str | None = None
    write_seconds: float = 0.0
    verify_seconds: float = 0.0
    #: Why it failed, errored or was skipped.
    detail: str = ""
    #: The pool file (or a program's directory), kept when the run did not pass.
    path: str | None = None
    kind: Kind = "pool"

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "skipped")


def parse_granularity(text: str | Granularity) -> Granularity:
    """``page``, ``cache_line``/``cache-line`` or ``byte`` (any case), as libpmem2 spells them."""
    if isinstance(text, Granularity):
        return text
    try:
        return Granularity[text.strip().upper().replace("-", "_")]
    except KeyError:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"granularity {text!r}: use page, cache_line or byte"
        ) from None


def _forced_now() -> Granularity | None:
    value = os.environ.get(FORCE_GRANULARITY, "").strip().upper()
    return Granularity[value] if value in Granularity.__members__ else None


def make_backend(name: str) -> Backend:
    """The backend to validate on; ``sim`` is a simulator shaped like this machine."""
    if name == "sim":
        from pmemsim_backends.sim import SimBackend

        forced = _forced_now()
        sim: Backend = SimBackend(
            Granularity.PAGE if forced is None else forced,
            anonymous_granularity=Granularity.BYTE,
        )
        return sim
    return load_backend(name)()


@contextmanager
def _forcing(force: Granularity | None) -> Any:
    """``PMEM2_FORCE_GRANULARITY`` set to ``force`` (left alone if None) for the block."""
    if force is None:
        yield
        return
    old = os.environ.get(FORCE_GRANULARITY)
    os.environ[FORCE_GRANULARITY] = force.name
    try:
        yield
    finally:
        if old is None:
            del os.environ[FORCE_GRANULARITY]
        else:
            os.environ[FORCE_GRANULARITY] = old


def filesystem_of(path: str | os.PathLike[str]) -> str:
    """The type of the file system holding ``path`` (from /proc/self/mounts), or "unknown"."""
    real = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, fields[2]
    except OSError:
        pass
    return kind


def _digest(data: bytes) -> str:
    return blake2b(data, digest_size=16).hexdigest()


def _slug(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)
    return "-".join(p for p in keep.split("-") if p)[:60] or "check"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def file_digests(directory: str | os.PathLike[str]) -> dict[str, str]:
    """A digest of every regular file under ``directory``, by its path relative to it."""
    out: dict[str, str] = {}
    for dirpath, _, filenames in os.walk(directory):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not stat.S_ISREG(os.lstat(full).st_mode):
                continue
            h = blake2b(digest_size=16)
            with open(full, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            out[Path(os.path.relpath(full, directory)).as_posix()] = h.hexdigest()
    return dict(sorted(out.items()))


def _files_digest(files: dict[str, str]) -> str:
    return _digest(json.dumps(files, sort_keys=True).encode())


def _differences(expected: dict[str, str], found: dict[str, str]) -> str:
    """Which files changed, went or appeared, for a report."""
    changed = [p for p in expected if p in found and found[p] != expected[p]]
    gone = [p for p in expected if p not in found]
    new = [p for p in found if p not in expected]
    parts = [
        f"{what}: {', '.join(paths)}"
        for what, paths in (("changed", changed), ("missing", gone), ("new", new))
        if paths
    ]
    return "; ".join(parts)


def _watch_maps(backend: Backend) -> list[Granularity]:
    """The granularity of every map ``backend`` makes from now on (a program over files
    creates its own sets, so its maps are seen only where the backend makes them)."""
    seen: list[Granularity] = []
    inner = backend.map

    def map_and_note(*args: Any, **kwargs: Any) -> BackendMap:
        m = inner(*args, **kwargs)
        seen.append(Granularity(m.granularity))
        return m

    # On this one instance, which the program's sets call; setattr because mypy refuses
    # assigning to a method.
    setattr(backend, "map", map_and_note)  # noqa: B010
    return seen


class _WorkloadFailed(Exception):
    """The user's workload raised (a finding, not a problem of the run)."""


def _write(
    check: Any, path: Path, backend: Backend, granularity: Granularity
) -> tuple[str, Granularity]:
    """Run the workload on a fresh pool file; returns its content digest and granularity."""
    src = Source.from_file(path, SourceFlag.CREATE_ALWAYS)
    try:
        with Set(Config(granularity=granularity, backend=backend)) as s:
            d = s.map(Part(src, 0, check.size))
            try:
                check.workload(s.view(d))
            except Exception as exc:
                raise _WorkloadFailed(_describe(exc)) from exc
            s.persist(d.address, d.size)
            s.deep_flush(d.address, d.size)
            return _digest(s.read(d.address, d.size)), s.granularity
    finally:
        src.close()


class _PlatformLacks(Exception):
    """A program's own map asked for a granularity the directory cannot give."""


def _write_files(
    check: Any, folder: Path, backend: str
) -> tuple[dict[str, str], list[Granularity]]:
    """Run a program's workload in a fresh ``folder``; the digests of the files it left and
    the granularity of every map it made."""
    if folder.exists():  # left by an earlier run that did not pass (or --keep)
        shutil.rmtree(folder)
    folder.mkdir()
    be = make_backend(backend)
    seen = _watch_maps(be)
    try:
        check.workload(be, folder)
    except PmemError as exc:
        if exc.code == ErrorCode.GRANULARITY_NOT_SUPPORTED:
            raise _PlatformLacks(_describe(exc)) from exc
        raise _WorkloadFailed(_describe(exc)) from exc
    except Exception as exc:
        raise _WorkloadFailed(_describe(exc)) from exc
    del be
    # A source the program dropped in a reference cycle writes back when it is collected:
    # now, not after the digest.
    gc.collect()
    return file_digests(folder), seen


@dataclass(frozen=True)
class _Job:
    """One pool or directory for the verifying process: where it is, which check recovers
    it, and what it must hold."""

    origin: str
    name: str
    path: str
    size: int
    digest: str
    kind: Kind = "pool"
    #: For a program's directory: the digest of every file, by relative path.
    files: dict[str, str] = field(default_factory=dict)


def validate(
    scenarios: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    backend: str = "real",
    granularity: Granularity | str = Granularity.PAGE,
    force: Granularity | str | None = None,
    select: Sequence[str] | None = None,
    keep: bool = False,
    timeout: float = VERIFY_TIMEOUT,
) -> list[ValidationResult]:
    """Validate every check of ``scenarios`` (a file or folder) in ``directory``.

    CrashChecks get a pool file each, FileCrashChecks a subdirectory each (their program
    opens its own files there, on a fresh backend). ``granularity`` is the required
    (coarsest acceptable) granularity: a CrashCheck's pool is mapped with it, and a
    program's maps must have got a granularity at least that fine; ``force`` sets
    ``PMEM2_FORCE_GRANULARITY`` for both processes. Every pool and directory is written
    first, then one new process verifies them all. They are removed after a pass (kept, with
    their path in the result, otherwise, or always with ``keep``).

    Raises :class:`pmemsim.cli.UsageProblem` for bad input and ``BackendUnavailableError``
    when the backend cannot run here.
    """
    from .cli.common import UsageProblem
    from .cli.discover import Broken, discover, restored_imports
    from .explore import FileCrashCheck

    required = parse_granularity(granularity)
    forced = None if force is None else parse_granularity(force)
    folder = Path(directory)
    if not folder.is_dir():
        raise UsageProblem(f"{directory}: no such directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageProblem(f"{directory}: not writable")
    env = dict(os.environ)
    if forced is not None:
        env[FORCE_GRANULARITY] = forced.name
    results: list[ValidationResult] = []
    jobs: dict[int, _Job] = {}
    with restored_imports(), _forcing(forced), _cleaned_on(UsageProblem, results):
        entries = discover(scenarios, select, files=True)
        be = make_backend(backend)
        for index, entry in enumerate(entries):
            if isinstance(entry, Broken):
                results.append(_broken(entry))
                continue
            c, origin = entry.check, entry.origin
            kind: Kind = "files" if isinstance(c, FileCrashCheck) else "pool"
            if c.expect != "consistent":
                detail = "a buggy variant (expects inconsistent)"
                results.append(
                    ValidationResult(c.name, "skipped", origin, detail=detail, kind=kind)
                )
                continue
            stem = folder / f"pmemsim-validate-{index:03d}-{_slug(c.name)}"
            job: _Job | None
            if kind == "files":
                r, job = _write_program(c, origin, stem, backend, required)
            else:
                path = stem.with_name(stem.name + ".pool")
                r, digest = _write_one(c, origin, path, be, required)
                job = None
                if digest is not None:
                    job = _Job(origin, c.name, str(path), c.size, digest)
            if job is not None:
                jobs[len(results)] = job
            results.append(r)
    if jobs:
        _verify_all(jobs, results, backend, required, env, timeout)
    for i, r in enumerate(results):
        if r.path is not None and r.status == "passed" and not keep:
            _remove(r)
            results[i] = replace(r, path=None)
    return results


def _broken(b: Any) -> ValidationResult:
    """A file or check that cannot run (see pmemsim.cli.discover): an error row."""
    from .cli.common import describe_error, user_frame

    detail = b.what
    if b.error is not None:
        where = user_frame(b.error)
        detail += f": {describe_error(b.error)}" + (f" at {where}" if where else "")
    return ValidationResult(b.name, "error", b.origin, detail=detail)


@contextmanager
def _cleaned_on(problem: type[Exception], results: list[ValidationResult]) -> Any:
    """Remove what ``results`` wrote if the run stops with ``problem`` (a platform that
    cannot run it: nothing will verify them)."""
    try:
        yield
    except problem:
        for r in results:
            if r.path is not None:
                _remove(r)
        raise


def _remove(r: ValidationResult) -> None:
    assert r.path is not None
    if r.kind == "files":
        shutil.rmtree(r.path, ignore_errors=True)
    else:
        Path(r.path).unlink(missing_ok=True)


def _write_one(
    c: Any, origin: str, path: Path, be: Backend, required: Granularity
) -> tuple[ValidationResult, str | None]:
    """The writing half for one check: its result so far, and the digest to verify."""
    from .cli.common import UsageProblem

    started = time.perf_counter()
    try:
        digest, effective = _write(c, path, be, required)
    except _WorkloadFailed as exc:
        detail = f"the workload raised {exc}"
        return ValidationResult(c.name, "FAILED", origin, detail=detail, path=str(path)), None
    except PmemError as exc:
        if exc.code == ErrorCode.GRANULARITY_NOT_SUPPORTED:
            path.unlink(missing_ok=True)
            raise UsageProblem(
                f"{path.parent} ({filesystem_of(path.parent)}) cannot give {required.name} "
                f"granularity: {exc}. Require a coarser one (--granularity page) or make "
                "libpmem2 pretend (--force-granularity)"
            ) from None
        detail = f"writing: {_describe(exc)}"
        return ValidationResult(c.name, "error", origin, detail=detail, path=str(path)), None
    except OSError as exc:
        detail = f"writing: {_describe(exc)}"
        return ValidationResult(c.name, "error", origin, detail=detail, path=str(path)), None
    took = time.perf_counter() - started
    return ValidationResult(c.name, "passed", origin, effective.name, took, path=str(path)), digest


def _write_program(
    c: Any, origin: str, folder: Path, backend: str, required: Granularity
) -> tuple[ValidationResult, _Job | None]:
    """The writing half for a program over files: its result so far, and the job to verify."""
    from .cli.common import UsageProblem

    def result(status: Status, detail: str = "", **more: Any) -> ValidationResult:
        return ValidationResult(
            c.name, status, origin, detail=detail, path=str(folder), kind="files", **more
        )

    where = f"{folder.parent} ({filesystem_of(folder.parent)})"
    started = time.perf_counter()
    try:
        files, seen = _write_files(c, folder, backend)
    except _WorkloadFailed as exc:
        return result("FAILED", f"the workload raised {exc}"), None
    except _PlatformLacks as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise UsageProblem(
            f"{c.name} requires a granularity {where} cannot give: {exc}. Make libpmem2 "
            "pretend (--force-granularity)"
        ) from None
    except OSError as exc:
        return result("error", f"writing: {_describe(exc)}"), None
    took = time.perf_counter() - started
    coarsest = max(seen, default=None)
    if coarsest is not None and coarsest > required:
        # What a CrashCheck's map would have refused: the same answer.
        shutil.rmtree(folder, ignore_errors=True)
        raise UsageProblem(
            f"{where} gave the maps of {c.name} {coarsest.name} granularity, coarser than the "
            f"required {required.name}. Require a coarser one (--granularity page) or make "
            "libpmem2 pretend (--force-granularity)"
        )
    got = None if coarsest is None else coarsest.name
    digest = _files_digest(files)
    job = _Job(origin, c.name, str(folder), 0, digest, "files", files)
    return result("passed", granularity=got, write_seconds=took), job


def _verify_all(
    jobs: dict[int, _Job],
    results: list[ValidationResult],
    backend: str,
    required: Granularity,
    env: dict[str, str],
    timeout: float,
) -> None:
    """Run the verifying process over every job; fill in the verdicts in ``results``."""
    cmd = [
        sys.executable,
        "-m",
        "pmemsim.validate",
        "--backend",
        backend,
        "--granularity",
        required.name,
    ]
    payload = json.dumps([{"job": i, **asdict(j)} for i, j in jobs.items()])
    problem = ""
    try:
        proc = subprocess.run(
            cmd, input=payload, env=env, capture_output=True, text=True, timeout=timeout
        )
        stdout, code, stderr = proc.stdout, proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        code, stderr = None, ""
        problem = f"the verifying process ran over {timeout:g} s"
    verdicts: dict[int, dict[str, Any]] = {}
    for line in stdout.splitlines():
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict) and isinstance(v.get("job"), int):
            verdicts[v["job"]] = v
    if not problem:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        problem = f"the verifying process exited with {code} before this check: {tail}"
    for i in jobs:
        r, v = results[i], verdicts.get(i)
        if v is None:
            results[i] = replace(r, status="error", detail=problem)
            continue
        status: Status = "passed"
        if not v.get("passed"):
            # Not reaching recovery is an error of the run; recovery refusing is a failure.
            status = "FAILED" if v.get("stage") == "recover" else "error"
        results[i] = replace(
            r,
            status=status,
            detail=str(v.get("detail", "")),
            verify_seconds=float(v.get("seconds", 0.0)),
        )


# -- the verifying process -------------------------------------------------------------


def _check_of(job: _Job) -> Any:
    """The check the job came from (None if the scenario no longer defines it)."""
    from .cli.discover import Found, discover
    from .explore import FileCrashCheck

    for e in discover(job.origin, [job.name], files=True):
        if (
            isinstance(e, Found)
            and e.check.name == job.name
            and isinstance(e.check, FileCrashCheck) == (job.kind == "files")
        ):
            return e.check
    return None


def verify(job: _Job, backend: Backend, granularity: Granularity) -> dict[str, Any]:
    """Map the job's pool again, compare its content with the digest, run recovery; for a
    program's directory, see :func:`verify_files`."""
    c = _check_of(job)
    if c is None:
        return {"passed": False, "stage": "load", "detail": f"no check {job.name!r}"}
    if job.kind == "files":
        return verify_files(job, c, make_backend(backend.name))
    src = Source.from_file(job.path, SourceFlag.DO_NOT_GROW)
    try:
        with Set(Config(granularity=granularity, backend=backend)) as s:
            try:
                d = s.map(Part(src, 0, job.size))
            except PmemError as exc:
                return {"passed": False, "stage": "map", "detail": _describe(exc)}
            out: dict[str, Any] = {"granularity": s.granularity.name, "stage": "recover"}
            same = _digest(s.read(d.address, d.size)) == job.digest
            try:
                ok = c.recover(s.view(d))
            except Exception as exc:
                out.update(passed=False, detail=f"recovery raised {_describe(exc)}")
                return out
            out["passed"] = ok is not False and same
            if ok is False:
                out["detail"] = "recovery returned False"
            elif not same:
                out["detail"] = "the file does not hold what the writer persisted"
            return out
    finally:
        src.close()


def verify_files(job: _Job, c: Any, backend: Backend) -> dict[str, Any]:
    """Compare every file of the job's directory with the digests, then run the program's
    recovery there on ``backend`` (a fresh one)."""
    root = Path(job.path)
    if not root.is_dir():
        return {"passed": False, "stage": "load", "detail": f"{root}: no such directory"}
    # Before recovery, which may well write (a pool that opens saves its SDS record).
    found = file_digests(root)
    seen = _watch_maps(backend)
    out: dict[str, Any] = {"stage": "recover"}
    try:
        ok = c.recover(backend, root)
    except Exception as exc:
        out.update(passed=False, detail=f"recovery raised {_describe(exc)}")
        return out
    finally:
        coarsest = max(seen, default=None)
        out["granularity"] = None if coarsest is None else coarsest.name
    out["passed"] = ok is not False and found == job.files
    if ok is False:
        out["detail"] = "recovery returned False"
    elif found != job.files:
        out["detail"] = "the files do not hold what the writer left: " + _differences(
            job.files, found
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pmemsim.validate``: the verifying half of :func:`validate`.

    Reads a JSON list of jobs on stdin and prints one JSON line per job as it is done, so
    that the verdicts reached survive a process that dies later.
    """
    p = argparse.ArgumentParser(prog="python -m pmemsim.validate")
    p.add_argument("--backend", default="real")
    p.add_argument("--granularity", default="page")
    args = p.parse_args(argv)
    granularity = parse_granularity(args.granularity)
    backend = make_backend(args.backend)
    failed = 0
    for raw in json.load(sys.stdin):
        started = time.perf_counter()
        index = raw.pop("job")
        try:
            out = verify(_Job(**raw), backend, granularity)
        except Exception as exc:  # reported to the parent, which decides the verdict
            out = {"passed": False, "stage": "setup", "detail": _describe(exc)}
        out.update(job=index, seconds=round(time.perf_counter() - started, 6))
        failed += not out["passed"]
        print(json.dumps(out), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
