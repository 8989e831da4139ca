"""Validation runs: every scenario's workload on a real platform, verified by a new process.

For each CrashCheck that expects a consistent verdict (the correct variants), in a directory
of the user's choice and without any crash injection:

1. this process creates a file, maps it, runs the workload, persists and deep-flushes the
   whole pool, notes a digest of its content, unmaps it and closes the file;
2. a new Python process (``python -m pmemsim.validate``) maps the file again, checks that
   it holds exactly what the writer saw, and runs the check's recovery on it, which must
   accept it.

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
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from .backend import Backend, load_backend
from .config import Config
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


@dataclass(frozen=True)
class ValidationResult:
    """What one check's validation run found."""

    name: str
    status: Status
    #: Where the check is defined.
    origin: str
    #: The granularity the map got (None if it never mapped).
    granularity: str | None = None
    write_seconds: float = 0.0
    verify_seconds: float = 0.0
    #: Why it failed, errored or was skipped.
    detail: str = ""
    #: The pool file, kept when the run did not pass.
    path: str | None = None

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
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _slug(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)
    return "-".join(p for p in keep.split("-") if p)[:60] or "check"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


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


@dataclass(frozen=True)
class _Job:
    """One pool for the verifying process: where it is and which check recovers it."""

    origin: str
    name: str
    occurrence: int
    path: str
    size: int
    digest: str


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

    ``granularity`` is the required (coarsest acceptable) granularity; ``force`` sets
    ``PMEM2_FORCE_GRANULARITY`` for both processes. Every pool is written first, then one
    new process verifies them all. Pool files are removed after a pass (kept, with their path
    in the result, otherwise, or always with ``keep``).

    Raises :class:`pmemsim.cli.UsageProblem` for bad input and ``BackendUnavailableError``
    when the backend cannot run here.
    """
    from .cli.check import load_checks
    from .cli.common import UsageProblem

    required = parse_granularity(granularity)
    forced = None if force is None else parse_granularity(force)
    folder = Path(directory)
    if not folder.is_dir():
        raise UsageProblem(f"{directory}: no such directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageProblem(f"{directory}: not writable")
    checks = load_checks(scenarios, select)
    env = dict(os.environ)
    if forced is not None:
        env[FORCE_GRANULARITY] = forced.name
    results: list[ValidationResult] = []
    jobs: dict[int, _Job] = {}
    seen: dict[tuple[str, str], int] = {}
    with _forcing(forced):
        be = make_backend(backend)
        for index, c in enumerate(checks):
            origin = str(getattr(c, "_pmemsim_origin", scenarios))
            occurrence = seen.get((origin, c.name), 0)
            seen[(origin, c.name)] = occurrence + 1
            if c.expect != "consistent":
                detail = "a buggy variant (expects inconsistent)"
                results.append(ValidationResult(c.name, "skipped", origin, detail=detail))
                continue
            path = folder / f"pmemsim-validate-{index:03d}-{_slug(c.name)}.pool"
            r, digest = _write_one(c, origin, path, be, required)
            if digest is not None:
                jobs[len(results)] = _Job(origin, c.name, occurrence, str(path), c.size, digest)
            results.append(r)
    if jobs:
        _verify_all(jobs, results, backend, required, env, timeout)
    for i, r in enumerate(results):
        if r.path is not None and r.status == "passed" and not keep:
            Path(r.path).unlink(missing_ok=True)
            results[i] = replace(r, path=None)
    return results


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


def verify(job: _Job, backend: Backend, granularity: Granularity) -> dict[str, Any]:
    """Map the job's pool again, compare its content with the digest, run recovery."""
    from .cli.check import load_checks

    matches = [c for c in load_checks(job.origin, [job.name]) if c.name == job.name]
    if job.occurrence >= len(matches):
        return {"passed": False, "stage": "load", "detail": f"no check {job.name!r}"}
    c = matches[job.occurrence]
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
