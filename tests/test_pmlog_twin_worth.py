"""forked.worth_a_twin's order: the log's length, the cheap test that settles a short log,
before the environment (PMEMSIM_TWIN), the threads and the CPUs."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest

from pmemsim.pmlog import forked


class _Environ(dict[str, str]):
    """The environment, each key read noted."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.read.append(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.append(key)
        return super().__getitem__(key)


def _replay(operations: int) -> Any:
    return SimpleNamespace(log=SimpleNamespace(counts={"STORE": operations, "FENCE": 0}))


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What worth_a_twin asks: environment keys read, and "threads" / "cpus"."""
    env = _Environ(dict(os.environ))
    monkeypatch.setattr(forked.os, "environ", env)
    asked = env.read

    def alone() -> bool:
        asked.append("threads")
        return True

    def cpus() -> int:
        asked.append("cpus")
        return 2

    monkeypatch.setattr(forked, "_alone", alone)
    monkeypatch.setattr(forked, "_cpus", cpus)
    monkeypatch.delitem(env, forked.TWIN_ENV, raising=False)
    return asked


def test_a_short_log_asks_nothing_else(asked: list[str]) -> None:
    os.environ[forked.TWIN_ENV] = "1"  # (the spy: monkeypatch puts the real one back)
    assert forked.worth_a_twin(_replay(forked.TWIN_FROM - 1)) is False
    assert asked == []


def test_a_long_log_asks_the_rest_as_before(asked: list[str]) -> None:
    long = _replay(forked.TWIN_FROM)
    assert forked.worth_a_twin(long) is True
    assert asked == [forked.TWIN_ENV, "threads", "cpus"]
    for value, worth in (("0", False), (" 0\n", False), ("1", True), ("", True)):
        os.environ[forked.TWIN_ENV] = value
        assert forked.worth_a_twin(long) is worth, value
