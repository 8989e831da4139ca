"""Finding pmemcheck (valgrind's persistent-memory tool) and the flags that make a full log.

pmemcheck is not in any package registry: it lives in a fork of valgrind (github.com/pmem/
valgrind) that has to be built. A valgrind without the tool is of no use here, so a
candidate counts only if ``VALGRIND --tool=pmemcheck --version`` succeeds.

Lookup order: the path given explicitly (``--valgrind``), then ``$PMEMSIM_VALGRIND``, then
``valgrind`` on ``PATH``. Each may name the valgrind binary or a build's prefix folder
(``PREFIX/bin/valgrind``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailableError, ErrorCode
from .grammar import Log, Store

__all__ = [
    "ENV_VAR",
    "GRANULARITY_ENV",
    "PMEM_FORCE_ENV",
    "RECORD_DEPTH",
    "PmemcheckNotFound",
    "Recording",
    "RecordingFailed",
    "find_pmemcheck",
    "include_dir",
    "pmemcheck_available",
    "record",
    "record_argv",
    "record_env",
    "unexplained_offset",
]

ENV_VAR = "PMEMSIM_VALGRIND"

HOW_TO_GET_IT = (
    "pmemcheck is a valgrind tool from PMDK's fork of valgrind (github.com/pmem/valgrind) "
    "and is in no package registry: build it from source (autogen.sh, configure "
    "--prefix=PREFIX, make, make install; a few minutes), or with this project's "
    "../shared/tools/build-pmemcheck PREFIX where that folder exists, then pass "
    "--valgrind PREFIX/bin/valgrind or set PMEMSIM_VALGRIND to it. A distribution's "
    "valgrind package does not include pmemcheck."
)


class PmemcheckNotFound(BackendUnavailableError):
    """No valgrind with the pmemcheck tool; the message says where it looked and how to get
    one."""

    def __init__(self, looked: list[str]) -> None:
        where = "; ".join(looked) if looked else "nowhere"
        super().__init__(
            ErrorCode.NOSUPP, f"no valgrind with pmemcheck found (tried: {where}). {HOW_TO_GET_IT}"
        )


def _binary(candidate: str) -> Path:
    path = Path(candidate).expanduser()
    return path / "bin" / "valgrind" if path.is_dir() else path


def _has_pmemcheck(valgrind: Path) -> str | None:
    """None when ``valgrind`` runs pmemcheck, else why not."""
    if not valgrind.is_file():
        return "no such file"
    if not os.access(valgrind, os.X_OK):
        return "not executable"
    try:
        probe = subprocess.run(
            [str(valgrind), "--tool=pmemcheck", "--version"],
            capture_output=True,
            timeout=60,
            env={**os.environ, "VALGRIND_OPTS": ""},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"does not run ({exc})"
    return None if probe.returncode == 0 else "a valgrind without the pmemcheck tool"


def find_pmemcheck(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The path of a valgrind that runs pmemcheck, or :class:`PmemcheckNotFound`.

    An explicit path that does not qualify is not passed over for another: the user asked
    for that one.
    """
    env = os.environ if env is None else env
    looked: list[str] = []
    candidates: list[tuple[str, str]] = []
    if explicit:
        candidates.append(("--valgrind", explicit))
    elif env.get(ENV_VAR):
        candidates.append((ENV_VAR, env[ENV_VAR]))
    else:
        on_path = shutil.which("valgrind", path=env.get("PATH"))
        if on_path:
            candidates.append(("PATH", on_path))
        else:
            looked.append("PATH: no valgrind")
    for source, candidate in candidates:
        binary = _binary(candidate)
        why = _has_pmemcheck(binary)
        if why is None:
            return str(binary)
        looked.append(f"{source} {binary}: {why}")
    raise PmemcheckNotFound(looked)


def pmemcheck_available(env: Mapping[str, str] | None = None) -> str | None:
    """The valgrind ``find_pmemcheck`` would use, or None (for skipping tests)."""
    try:
        return find_pmemcheck(None, env)
    except PmemcheckNotFound:
        return None


def include_dir(valgrind: str) -> Path | None:
    """The folder holding ``valgrind/pmemcheck.h`` for a build's valgrind, if it has one."""
    inc = Path(valgrind).resolve().parent.parent / "include"
    return inc if (inc / "valgrind" / "pmemcheck.h").is_file() else None


# --- recording ------------------------------------------------------------------------------

#: Frames per STORE: enough to get out of libpmem2 (3-4 frames of its own) and memcpy to
#: the program's function and its caller; a log's stack ends at main anyway.
RECORD_DEPTH = 12


def record_argv(
    valgrind: str,
    log: str | Path,
    program: list[str],
    *,
    depth: int = RECORD_DEPTH,
    clflush_needs_fence: bool = False,
) -> list[str]:
    """The valgrind command that records ``program``'s complete store log into ``log``.

    - ``--log-stores=yes`` with stack traces ``depth`` frames deep (names the C caller);
    - ``--expect-fence-after-clflush`` stated: ``no`` (Intel: a clflush is ordered at its own
      position, so pmemcheck logs a FENCE after it), or ``yes`` (clflush treated like
      clflushopt, the conservative reading; AMD orders clflush only with mfence);
    - ``--flush-align=no``: flush instructions keep their operand's address; check-log knows
      a 64-byte FLUSH is one instruction flushing the line holding it (``yes`` makes
      pmemcheck round range requests' sizes and can drop a range's last line);
    - ``-q`` (no banner; check-log reads either) and ``--log-file`` so that the program's own
      output stays on the terminal;
    - ``--command-line-only=yes``: ~/.valgrindrc and $VALGRIND_OPTS cannot change any of it.
    """
    return [
        valgrind,
        "--tool=pmemcheck",
        "--command-line-only=yes",
        "-q",
        "--log-stores=yes",
        "--log-stores-stacktraces=yes",
        f"--log-stores-stacktraces-depth={depth}",
        f"--expect-fence-after-clflush={'yes' if clflush_needs_fence else 'no'}",
        "--flush-align=no",
        f"--log-file={log}",
        *program,
    ]


GRANULARITY_ENV = "PMEM2_FORCE_GRANULARITY"
#: libpmem 1.x's: "1" treats every mapping as persistent memory (line flushes), "0" as a file.
PMEM_FORCE_ENV = "PMEM_IS_PMEM_FORCE"


def record_env(
    env: Mapping[str, str] | None = None, granularity: str | None = None
) -> dict[str, str]:
    """``env`` with ``PMREORDER_EMIT_LOG=1`` (unless set): libpmem2 and PMDK then wrap their
    calls in markers (``pmem2_memmove.BEGIN`` ...); and libpmem2's store granularity forced
    to ``granularity`` ("cache_line", "byte" or "page"), by default (None) to CACHE_LINE
    unless ``env`` forces one itself.

    Why CACHE_LINE: the program is recorded to find what a power failure on persistent memory
    does to it. On a plain file libpmem2 works at PAGE granularity: its persist is an msync,
    logged as a flush from the page's start, which covers lines the program never flushed
    (hiding a missing flush) and, read as line flushes, allows images a page cache cannot
    leave (docs/c-programs.md has PMDK's redo example both ways). Forced, libpmem2 flushes
    lines as it does on persistent memory. "native" leaves libpmem2 to the file.

    libpmem (1.x, which libpmemobj flushes through) does the same on a plain file, and
    ``PMEM_IS_PMEM_FORCE=1`` makes it flush lines: set with CACHE_LINE, ``0`` (msync) with
    PAGE (BYTE has no libpmem counterpart; "native" removes it); when no granularity is
    given, only unless ``env`` sets it."""
    out = dict(os.environ if env is None else env)
    out.setdefault("PMREORDER_EMIT_LOG", "1")
    if granularity is None:
        out.setdefault(GRANULARITY_ENV, "CACHE_LINE")
    elif granularity == "native":
        out.pop(GRANULARITY_ENV, None)
        out.pop(PMEM_FORCE_ENV, None)
    else:
        out[GRANULARITY_ENV] = granularity.upper()
    pmem = {"CACHE_LINE": "1", "PAGE": "0"}.get(out.get(GRANULARITY_ENV, ""))
    if pmem is not None and (granularity is not None or PMEM_FORCE_ENV not in out):
        out[PMEM_FORCE_ENV] = pmem
    return out


@dataclass(frozen=True)
class Recording:
    """A finished recording: the log, and how the program ended."""

    log: Path
    #: the program's exit status, or None if a signal ended it
    status: int | None
    signal: int | None
    seconds: float

    @property
    def exit_code(self) -> int:
        """The shell's convention: the status, or 128 + the signal."""
        return self.status if self.status is not None else 128 + (self.signal or 0)


class RecordingFailed(RuntimeError):
    """valgrind wrote no log (it could not start the program); the message says why."""


def record(
    program: list[str],
    log: str | Path,
    *,
    valgrind: str,
    depth: int = RECORD_DEPTH,
    clflush_needs_fence: bool = False,
    env: Mapping[str, str] | None = None,
    granularity: str | None = None,
) -> Recording:
    """Run ``program`` under pmemcheck and leave its store log at ``log``; libpmem2's
    granularity as :func:`record_env` sets it.

    The log is written to a hidden file beside ``log`` and renamed into place only when
    valgrind has finished, so an interrupted recording (Ctrl-C, SIGTERM: any exception out
    of the wait) kills valgrind's whole process group and leaves no file behind.
    """
    target = Path(log)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    start = time.monotonic()
    try:
        _umask_mode(tmp)
        argv = record_argv(
            valgrind, tmp, program, depth=depth, clflush_needs_fence=clflush_needs_fence
        )
        code = _run_killable(argv, record_env(env, granularity))
        head = tmp.read_bytes()[:65536]
        if b"START" not in head:
            why = head.decode(errors="replace").strip() or "no output"
            raise RecordingFailed(f"pmemcheck wrote no store log for {program[0]}: {why}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.monotonic() - start
    if code < 0:
        return Recording(target, None, -code, seconds)
    return Recording(target, code, None, seconds)


def _run_killable(argv: list[str], env: dict[str, str]) -> int:
    """Run ``argv`` in its own session and wait; any exception while waiting (Ctrl-C,
    SIGTERM turned into one) kills its whole process group first."""
    # Its own session: the terminal's Ctrl-C reaches only us, and we end valgrind and
    # whatever the program started as one group. Signals wait while it starts, so that
    # none lands between the fork and our holding its pid.
    main = threading.current_thread() is threading.main_thread()
    old = (
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if main else None
    )

    def unblock() -> None:  # in the child: the program gets the signals it always had
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    try:
        proc = subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=unblock)
    finally:
        unblock()
    try:
        return proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def _umask_mode(path: Path) -> None:
    """The mode an ordinary new file gets (mkstemp makes it 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    path.chmod(0o666 & ~mask)


PAGE = 4096


def unexplained_offset(
    log: Log,
    path: str,
    base: str | Path | None = None,
    *,
    file: str | Path | None = None,
    limit: int = 1 << 30,
) -> int | None:
    """The first offset of the file registered as ``path`` (read from ``file`` if given)
    whose content is not ``base`` (a file, or zeros) with every store the log made to it
    applied; None when it all agrees (or the file is above ``limit`` bytes: not looked at).

    Right after a recording this tells whether the chosen starting image explains the
    program's file: a difference means the file held other data when it was registered
    (it existed before the run, or the program wrote it with write() rather than stores),
    and a check from that starting image would judge images the program never saw.
    """
    actual = Path(path if file is None else file)
    if not actual.is_file() or actual.stat().st_size > limit:
        return None
    regs = [r for r in log.files if r.path == path]
    base_file = open(base, "rb") if base is not None else None  # noqa: SIM115
    try:

        def base_page(p: int) -> bytes:
            if base_file is None:
                return bytes(PAGE)
            base_file.seek(p * PAGE)
            return base_file.read(PAGE).ljust(PAGE, b"\0")

        expected: dict[int, bytearray] = {}
        for op in log.iter_operations():
            if not isinstance(op, Store):
                continue
            for r in regs:
                if r.base <= op.address < r.base + r.size:
                    off = op.address - r.base + r.offset
                    for i, byte in enumerate(op.data[: r.base + r.size - op.address]):
                        p, at = divmod(off + i, PAGE)
                        if p not in expected:
                            expected[p] = bytearray(base_page(p))
                        expected[p][at] = byte
                    break
        with open(actual, "rb") as f:
            p = 0
            while chunk := f.read(PAGE):
                want = expected.get(p) or base_page(p)
                if chunk != bytes(want[: len(chunk)]):
                    at = next(
                        i for i, (a, b) in enumerate(zip(chunk, want, strict=False)) if a != b
                    )
                    return p * PAGE + at
                p += 1
    finally:
        if base_file is not None:
            base_file.close()
    return None
