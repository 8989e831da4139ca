"""Finding pmemcheck (valgrind's persistent-memory tool) and the flags that make a full log.

pmemcheck is not in any package registry: it lives in a fork of valgrind (github.com/pmem/
valgrind) that has to be built. A valgrind without the tool is of no use here, so a
candidate counts only if ``VALGRIND --tool=pmemcheck --version`` succeeds.

Lookup order: the path given explicitly (``--valgrind``), then ``$PMEMSIM_VALGRIND``, then
``valgrind`` on ``PATH``. Each may name the valgrind binary or a build's prefix folder
(``PREFIX/bin/valgrind``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ..errors import BackendUnavailableError, ErrorCode

__all__ = [
    "ENV_VAR",
    "PmemcheckNotFound",
    "find_pmemcheck",
    "include_dir",
    "pmemcheck_available",
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
