"""Crash exploration on a Dask cluster (``pip install 'pmemsim[dask]'``).

``check(c, executor=Dask("tcp://HOST:PORT"))`` explores a check's crash points on the
workers of a running Dask scheduler; ``Dask("local:N")`` starts a LocalCluster of N worker
processes for the run. The report is the same byte for byte as inline. ``pmemsim check``,
``pmemsim check-log`` and the pytest plugin take ``--scheduler`` / ``--pmemsim-scheduler``
or ``PMEMSIM_SCHEDULER``. docs/scale-out.md says how to start a cluster and what the
workers need.

Importing this package does not import Dask: that happens when a cluster is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cluster import INSTALL, SCHEDULER_ENV, DaskUnavailable, Scheduler, scheduler_from

if TYPE_CHECKING:
    from .executor import Dask

__all__ = ["INSTALL", "SCHEDULER_ENV", "Dask", "DaskUnavailable", "Scheduler", "scheduler_from"]


def __getattr__(name: str) -> Any:
    if name == "Dask":
        from .executor import Dask

        return Dask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
