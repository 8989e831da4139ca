"""Where the work goes: a running Dask scheduler, or a LocalCluster started for the run.

``--scheduler`` (or ``PMEMSIM_SCHEDULER``) takes ``tcp://HOST:PORT`` (any address Dask's
client accepts: ``tls://``, ``ws://``... or a bare ``HOST:PORT``), ``local`` (one worker
process per core) or ``local:N``. A LocalCluster runs one thread per worker process: the
simulator is pure Python, so threads would only take turns. Dask itself is imported only
here, and only when a cluster is asked for; without it the error says how to install it.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import TYPE_CHECKING, Any

from .._dataclass import dataclass
from ..errors import BackendUnavailableError, ErrorCode, InvalidArgumentError

if TYPE_CHECKING:
    from ..scratch import Scratch

__all__ = [
    "INSTALL",
    "SCHEDULER_ENV",
    "Connection",
    "DaskUnavailable",
    "Scheduler",
    "require_dask",
    "scheduler_from",
]

SCHEDULER_ENV = "PMEMSIM_SCHEDULER"
INSTALL = "pip install 'pmemsim[dask]'"
#: Seconds to reach a scheduler, and to wait for its first worker.
CONNECT_TIMEOUT = 20.0
WORKER_TIMEOUT = 60.0

_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
_HOST_PORT = re.compile(r"^[\w.\-\[\]:]+:\d+$")
_USAGE = (
    "expected tcp://HOST:PORT (a running Dask scheduler), local (a LocalCluster of one "
    "worker process per core) or local:N (N worker processes)"
)


class DaskUnavailable(BackendUnavailableError):
    """Dask was asked for but is not installed; the message says how to install it."""

    def __init__(self, missing: str) -> None:
        super().__init__(
            ErrorCode.NOSUPP,
            f"running on a Dask cluster needs dask and distributed ({missing} is missing): "
            f"{INSTALL}",
        )


def require_dask() -> None:
    """Raise :class:`DaskUnavailable` unless dask.distributed can be imported."""
    for module in ("dask", "distributed", "cloudpickle"):
        try:
            __import__(module)
        except ImportError:
            raise DaskUnavailable(module) from None


@dataclass(frozen=True)
class Scheduler:
    """A parsed ``--scheduler``: a scheduler's address, or a LocalCluster of ``workers``
    processes (None: one per core)."""

    address: str | None = None
    workers: int | None = None

    @property
    def local(self) -> bool:
        return self.address is None

    @classmethod
    def parse(cls, text: str, what: str = "--scheduler") -> Scheduler:
        spec = text.strip() if isinstance(text, str) else ""
        if spec == "local":
            return cls()
        if spec.startswith("local:"):
            count = spec.partition(":")[2]
            if not count.isdigit() or int(count) < 1:
                raise InvalidArgumentError(
                    ErrorCode.EINVAL, f"{what} {text!r}: local:N needs a number of workers >= 1"
                )
            return cls(workers=int(count))
        scheme, sep, rest = spec.partition("://")
        if sep and scheme in _SCHEMES and rest:
            return cls(address=spec)
        if not sep and _HOST_PORT.match(spec):
            return cls(address=f"tcp://{spec}")
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{what} {text!r}: {_USAGE}")

    def __str__(self) -> str:
        if self.address is not None:
            return self.address
        return "local" if self.workers is None else f"local:{self.workers}"


def scheduler_from(
    option: str | None, environ: Any = os.environ, what: str = "--scheduler"
) -> Scheduler | None:
    """The scheduler the option names, else ``PMEMSIM_SCHEDULER``'s, else None (no cluster).
    An empty option or variable means none."""
    if option is not None:
        return Scheduler.parse(option, what) if option.strip() else None
    text = environ.get(SCHEDULER_ENV, "")
    return Scheduler.parse(text, SCHEDULER_ENV) if text.strip() else None


def _probe() -> dict[str, str]:
    """What a worker runs to say which pmemsim it has (a worker without pmemsim fails to
    unpickle this function, which says the same)."""
    import sys

    import pmemsim

    return {"pmemsim": pmemsim.__version__, "python": sys.version.split()[0]}


class Connection:
    """A Dask client, and the LocalCluster it started if it started one (closed with it)."""

    def __init__(self, scheduler: Scheduler | str | Any) -> None:
        require_dask()
        from distributed import Client

        self._cluster: Any = None
        self._scratch: Scratch | None = None
        self._own = True
        if isinstance(scheduler, Client):
            self.client, self._own, self.scheduler = scheduler, False, str(scheduler.scheduler)
            self._check_workers()
            return
        if isinstance(scheduler, str):
            scheduler = Scheduler.parse(scheduler)
        self.scheduler = str(scheduler)
        try:
            if scheduler.local:
                self.client = self._start_local(scheduler.workers)
            else:
                self.client = self._connect(scheduler.address)
            self._check_workers()
        except BaseException:
            self.close()
            raise

    def _start_local(self, workers: int | None) -> Any:
        import logging
        import warnings

        from distributed import Client, LocalCluster

        from ..scratch import make

        n = workers if workers is not None else max(1, os.cpu_count() or 1)
        # The workers' scratch space (spilled data, the scheduler's files) goes to a
        # temporary folder, not the user's current folder.
        self._scratch = make("dask")
        with warnings.catch_warnings():
            # The scheduler's HTTP server (there is no dashboard) takes another port when
            # 8787 is taken, say by a second check running: nothing the user must know.
            warnings.filterwarnings("ignore", "Port 8787 is already in use", UserWarning)
            self._cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                local_directory=self._scratch.path,
                silence_logs=logging.ERROR,
            )
        return Client(self._cluster, set_as_default=False)  # type: ignore[no-untyped-call]

    def _connect(self, address: str | None) -> Any:
        from distributed import Client

        try:
            return Client(  # type: ignore[no-untyped-call]
                address, timeout=CONNECT_TIMEOUT, set_as_default=False
            )
        except (OSError, TimeoutError) as exc:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"cannot reach the Dask scheduler at {address}: {exc} (start one with "
                "`dask scheduler`, and workers with `dask worker ADDRESS`)",
            ) from None

    def _check_workers(self) -> None:
        try:
            self.client.wait_for_workers(1, timeout=WORKER_TIMEOUT)
        except TimeoutError:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"the Dask scheduler at {self.scheduler} has no worker after "
                f"{WORKER_TIMEOUT:g} s (start some with `dask worker {self.scheduler}`)",
            ) from None
        import pmemsim

        try:
            found = self.client.run(_probe)
        except Exception as exc:
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"the Dask workers of {self.scheduler} cannot run pmemsim "
                f"({type(exc).__name__}: {exc}): install pmemsim {pmemsim.__version__} on "
                "every worker",
            ) from None
        other = {w: v["pmemsim"] for w, v in found.items() if v["pmemsim"] != pmemsim.__version__}
        if other:
            listed = ", ".join(f"{w} has {v}" for w, v in sorted(other.items()))
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"the Dask workers of {self.scheduler} run another pmemsim than this one "
                f"({pmemsim.__version__}): {listed}",
            )

    @property
    def workers(self) -> int:
        """Workers the scheduler knows now."""
        try:
            info = self.client.scheduler_info(n_workers=0)  # the totals, not every worker
        except Exception:  # closing, or the scheduler is gone: nothing to count
            return 0
        return int(info.get("n_workers", 0))

    def describe(self) -> str:
        kind = "a LocalCluster" if self._cluster is not None else "the scheduler"
        address = getattr(self.client.scheduler, "address", self.scheduler)
        return f"{kind} at {address}, {self.workers} worker(s)"

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None and self._own:
            with contextlib.suppress(Exception):
                client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()
            self._cluster = None
        if self._scratch is not None:
            self._scratch.remove(ignore_errors=True)
            self._scratch = None
