"""Start-up: ``import pmemsim`` and a ``pmemsim`` command import only what they use."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pmemsim
from pmemsim import cli


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
    assert {m for m in loaded if m.startswith("pmemsim.")} == set()
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
