"""How many worker processes a check may start: one validator for ``pmemsim check``,
``check-log`` and the API, in a module light enough for the command line to import
before it knows whether any worker will run."""

from __future__ import annotations

from ..errors import ErrorCode, InvalidArgumentError

__all__ = ["MAX_JOBS", "check_jobs"]

#: The most worker processes one check starts: more than the cores of any one machine (past
#: that, a cluster: pmemsim.distributed), and few enough that their pipes stay far below
#: the usual limit of 1,024 open files.
MAX_JOBS = 256


def check_jobs(jobs: object) -> int:
    """``jobs`` if it is a number of worker processes a check may start."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or not 1 <= jobs <= MAX_JOBS:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"jobs must be an int from 1 to {MAX_JOBS}, not {jobs!r}"
        )
    return jobs
