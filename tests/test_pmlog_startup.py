"""Start-up: ``import pmemsim`` and a ``pmemsim`` command import only what they use."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from differential import real_unavailable_reason

import pmemsim
from pmemsim import cli

TESTS = Path(__file__).parent


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_pmemsim_imports_no_part_of_it() -> None:
    loaded = _modules_after("import pmemsim")
    # Only the loader of the names on first use (standard library only).
    assert {m for m in loaded if m.startswith("pmemsim.")} == {"pmemsim._lazy"}
    assert not {"cffi", "hypothesis", "pmemsim_backends"} & loaded


def test_every_public_name_is_there_on_first_use() -> None:
    for name in pmemsim.__all__:
        assert getattr(pmemsim, name) is not None, name
    assert set(pmemsim.__all__) <= set(dir(pmemsim))
    try:
        pmemsim.NoSuchName  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchName" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_each_command_registers_its_own_module_only() -> None:
    whole = cli.build_parser()
    sub = next(a for a in whole._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(cli.MODULE_OF)
    for command, module in cli.MODULE_OF.items():
        one = cli.build_parser(command)
        mine = next(a for a in one._actions if isinstance(a, argparse._SubParsersAction))
        assert command in mine.choices
        # Every command of that module, and no other.
        assert set(mine.choices) == {c for c, m in cli.MODULE_OF.items() if m == module}


def test_check_log_leaves_the_other_commands_unimported(tmp_path: object) -> None:
    log = "START|REGISTER_FILE;/nonexistent-pmemsim-x/p.bin;0x1000;0x1000;0x0|FENCE|STOP"
    loaded = _modules_after(
        "from pmemsim.cli import main\n"
        f"import pathlib, tempfile; p = pathlib.Path(tempfile.mkdtemp()) / 'a.log'\n"
        f"p.write_text({log!r})\n"
        "assert main(['check-log', str(p), '--', 'true']) == 0"
    )
    assert "pmemsim.pmlog" in loaded
    assert not {"pmemsim.cli.check", "pmemsim.cli.record", "hypothesis", "cffi"} & loaded


# Threads that first use pmemsim's names at the same moment, one of them closing and
# replacing reservations the others map into (the shape of tests/test_stress.py's
# reservations test, where names imported one module per thread deadlocked in 7 of 10 runs).
THREADS_FIRST_USE = """
import json, random, sys, threading
import pmemsim as pm
from differential import make_backend

sys.setswitchinterval(1e-5)
be = make_backend({backend!r})
shared = [pm.Reservation(8 * 4096, backend=be) for _ in range(4)]
done = []

def user(k):
    rng = random.Random(k)
    for _ in range(150):
        r = shared[rng.randrange(len(shared))]
        try:
            with pm.Set(pm.Config(granularity=pm.Granularity.BYTE, backend=be, reservation=r)) as s:
                d = s.map(pm.Part(pm.Source.anonymous(4096)))
                s.memcpy(d.address, b"x" * 64)
        except pm.PmemError:
            pass
    done.append(k)

def closer():
    rng = random.Random(99)
    for _ in range(150):
        i = rng.randrange(len(shared))
        try:
            shared[i].close()
            shared[i] = pm.Reservation(8 * 4096, backend=be)
        except pm.PmemError:
            pass
    done.append("closer")

threads = [threading.Thread(target=user, args=(k,)) for k in range(3)]
threads.append(threading.Thread(target=closer))
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(len(done)))
"""


@pytest.mark.parametrize("backend", ["real", "sim"])
def test_threads_that_first_use_the_names_together_do_not_deadlock(backend: str) -> None:
    reason = real_unavailable_reason() if backend == "real" else None
    if reason is not None:
        pytest.skip(f"real backend unavailable: {reason}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    for _ in range(5):
        done = subprocess.run(
            [sys.executable, "-c", THREADS_FIRST_USE.format(backend=backend)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[-1] == "4"
