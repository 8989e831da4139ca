"""One LocalCluster of 2 worker processes per test module of Dask tests (closed after the
module: its threads would weigh on tests that measure memory).

Loaded with ``pytest_plugins = ["dask_support"]``; tests ask for ``dask_cluster`` and skip,
with the reason, where dask is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

WORKERS = 2


def dask_or_skip() -> None:
    pytest.importorskip("distributed", reason="dask is not installed: pip install 'pmemsim[dask]'")


@pytest.fixture(scope="module")
def dask_executor() -> Iterator[Any]:
    dask_or_skip()
    from pmemsim.distributed import Dask

    # batch=1: every crash point of some work is a batch of its own, so that even small
    # checks are cut into batches run by both workers.
    with Dask(f"local:{WORKERS}", batch=1) as ex:
        yield ex


@pytest.fixture
def dask_cluster(dask_executor: Any) -> Any:
    """The session's executor, with both workers up (a test may have killed one) and its
    settings as the session set them."""
    dask_executor.client.wait_for_workers(WORKERS, timeout=120)
    dask_executor.batch, dask_executor.min_work, dask_executor.by_value = 1, 0, ()
    return dask_executor
