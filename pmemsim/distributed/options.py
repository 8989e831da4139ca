"""``--scheduler`` for the commands that explore (``pmemsim check``, ``pmemsim check-log``).

The option, or ``PMEMSIM_SCHEDULER`` when it is not given, names a Dask cluster; the
commands open it once for the whole run (a LocalCluster starts once) and close it at the
end. A bad address, an unreachable scheduler or a missing Dask is a usage error (exit 2)
with a message that says what to do.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import PmemError
from .cluster import INSTALL, SCHEDULER_ENV, scheduler_from

if TYPE_CHECKING:
    from .executor import Dask

__all__ = ["add_scheduler_option", "cluster_for"]

HELP = (
    "explore on a Dask cluster: tcp://HOST:PORT (a running scheduler), local (a LocalCluster "
    f"of one worker process per core) or local:N; default ${SCHEDULER_ENV}, empty for none "
    f"(needs {INSTALL})"
)


def add_scheduler_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS", default=None, help=HELP)


@contextmanager
def cluster_for(option: str | None, jobs: int = 1) -> Iterator[Dask | None]:
    """The Dask executor ``--scheduler`` (else ``PMEMSIM_SCHEDULER``) names, open for the
    block; None when neither names one, or when only the variable does and ``--jobs``
    asks for local processes. Raises the CLI's UsageProblem for what the user can fix."""
    from ..cli.common import UsageProblem

    if jobs > 1 and option is not None and option.strip():
        raise UsageProblem("give --jobs or --scheduler, not both")
    executor = None
    try:
        scheduler = scheduler_from(option if jobs == 1 else "")
        if scheduler is not None:
            from .executor import Dask

            executor = Dask(scheduler)
    except PmemError as exc:
        raise UsageProblem(exc.message) from None
    try:
        yield executor
    finally:
        if executor is not None:
            executor.close()
