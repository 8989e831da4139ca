"""The run timer outside the main thread (recovery in a Dask worker's thread, a check run
from a thread): the watchdog interrupts a run past its time only while the thread runs the
user's code, never inside pmemsim's own, where the exception could land between a lock's
acquire and the ``try`` that releases it; only after ``GRACE`` seconds does it interrupt
wherever the thread is."""

from __future__ import annotations

import os
import sysconfig
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pmemsim.explore import runtimer
from pmemsim.explore.report import RecoveryHang


def _as_if_in(filename: str) -> Any:
    """Bookkeeping that takes ``seconds`` and notes when it is through, whose code is in
    ``filename`` as far as the watchdog can tell."""
    body = (
        "def bookkeeping(seconds, through):\n"
        "    end = time.monotonic() + seconds\n"
        "    while time.monotonic() < end:\n"
        "        pass\n"
        "    through.append(True)\n"
    )
    scope: dict[str, Any] = {"time": time}
    exec(compile(body, filename, "exec"), scope)
    return scope["bookkeeping"]


#: pmemsim's own bookkeeping.
bookkeeping = _as_if_in(runtimer.__file__)


def interrupted(body: Callable[[], None], run_timeout: float = 0.05) -> float | None:
    """Run ``body`` under a run timer in a thread of its own; the seconds until RecoveryHang
    reached it (None: it never did). The thread is a daemon and ``body`` ends by itself, so
    a timer that never fires fails the test instead of hanging it."""
    timer = runtimer.RunTimer(run_timeout)
    took: list[float | None] = []

    def run() -> None:
        start = time.monotonic()
        with timer.installed():
            try:
                with timer.running():
                    body()
            except RecoveryHang:
                took.append(time.monotonic() - start)
                return
        took.append(None)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    assert took, "the thread did not end"
    return took[0]


def spin(seconds: float) -> None:
    """The user's code, busy for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_hang_waits_until_the_thread_is_back_in_the_users_code() -> None:
    through: list[bool] = []

    def body() -> None:
        bookkeeping(0.3, through)  # pmemsim's, well past the run's time
        spin(10)

    took = interrupted(body)
    assert through == [True]  # not interrupted inside pmemsim's code
    assert took is not None and 0.3 <= took < 5


@pytest.mark.parametrize("where", ["stdlib", "purelib"])
def test_nor_in_the_standard_library_or_an_installed_package(where: str) -> None:
    elsewhere = _as_if_in(os.path.join(sysconfig.get_paths()[where], "somewhere.py"))
    through: list[bool] = []

    def body() -> None:
        elsewhere(0.3, through)
        spin(10)

    took = interrupted(body)
    assert through == [True]
    assert took is not None and 0.3 <= took < 5


def test_in_the_users_code_a_hang_is_raised_at_once() -> None:
    took = interrupted(lambda: spin(10))
    assert took is not None and took < 2


def test_past_the_grace_a_hang_is_raised_even_in_pmemsims_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtimer, "GRACE", 0.2)
    through: list[bool] = []
    took = interrupted(lambda: bookkeeping(10, through))
    assert through == []
    assert took is not None and 0.2 <= took < 5
