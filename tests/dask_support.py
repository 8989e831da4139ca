"""One LocalCluster of 2 worker processes for every Dask test of the session.

Import the fixtures into a test module (``from dask_support import _dask_cluster,
_dask_session``) and ask for ``dask_cluster``; the tests skip, with the reason, where dask is
not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

WORKERS = 2


def dask_or_skip() -> None:
    pytest.importorskip("distributed", reason="dask is not installed: pip install 'pmemsim[dask]'")


@pytest.fixture(scope="session", name="dask_session")
def _dask_session() -> Iterator[Any]:
    dask_or_skip()
    from pmemsim.distributed import Dask

    # batch=1: every crash point of some work is a batch of its own, so that even small
    # checks are cut into batches run by both workers.
    with Dask(f"local:{WORKERS}", batch=1) as ex:
        yield ex


@pytest.fixture(name="dask_cluster")
def _dask_cluster(dask_session: Any) -> Any:
    """The session's executor, with both workers up (a test may have killed one) and its
    settings as the session set them."""
    dask_session.client.wait_for_workers(WORKERS, timeout=120)
    dask_session.batch, dask_session.min_work, dask_session.by_value = 1, 0, ()
    return dask_session
