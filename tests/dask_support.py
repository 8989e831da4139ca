"""One LocalCluster of 2 worker processes per test module of Dask tests (closed after the
module: its threads would weigh on tests that measure memory), and a hard time limit on
everything that runs with it.

Loaded with ``pytest_plugins = ["dask_support"]``; tests ask for ``dask_cluster`` and skip,
with the reason, where dask is not installed.
"""

from __future__ import annotations

import faulthandler
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

WORKERS = 2
#: Seconds a test (or starting or closing the cluster) may take before the whole run stops
#: with every thread's traceback: a test that hangs must fail, not stall CI.
LIMIT = 180.0


@contextmanager
def hard_limit(seconds: float = LIMIT) -> Iterator[None]:
    """Past ``seconds``, dump every thread's traceback and end the process (exit 1)."""
    faulthandler.dump_traceback_later(seconds, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def dask_or_skip() -> None:
    pytest.importorskip("distributed", reason="dask is not installed: pip install 'pmemsim[dask]'")


@pytest.fixture(scope="module")
def dask_executor() -> Iterator[Any]:
    dask_or_skip()
    from pmemsim.distributed import Dask

    # batch=1: every crash point of some work is a batch of its own, so that even small
    # checks are cut into batches run by both workers.
    with hard_limit():
        ex = Dask(f"local:{WORKERS}", batch=1)
    try:
        yield ex
    finally:
        with hard_limit():
            ex.close()


@pytest.fixture
def dask_cluster(dask_executor: Any) -> Iterator[Any]:
    """The module's executor, with both workers up (a test may have killed one) and its
    settings as the module set them; the test runs under :func:`hard_limit`."""
    with hard_limit():
        dask_executor.client.wait_for_workers(WORKERS, timeout=120)
        dask_executor.batch, dask_executor.min_work, dask_executor.by_value = 1, 0, ()
        yield dask_executor
