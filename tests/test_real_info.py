"""``pmemsim info``: the library, its capabilities, and the granularity a directory gets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pmemsim_backends.real import RealBackend

from pmemsim.cli import main

if TYPE_CHECKING:
    from real_support import RunPython

pytest_plugins = ["real_support"]


def _info(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["info", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_text_report(real: RealBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _info(capsys, "--dir", str(tmp_path))
    assert status == 0
    assert real.library.path in out
    assert "LIBPMEM2_1.0" in out
    for name in real.capabilities.as_dict():
        assert name in out
    assert "required BYTE       -> fails: PMEM2_E_GRANULARITY_NOT_SUPPORTED (-100009)" in out
    assert "required PAGE       -> PAGE" in out
    assert "a set here gets PAGE granularity" in out
    assert "PRETENDING" not in out


def test_json_report(real: RealBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _info(capsys, "--dir", str(tmp_path), "--json")
    assert status == 0
    report = json.loads(out)
    assert report["library"]["soname"] == "libpmem2.so.1"
    assert report["library"]["bound_functions"] == len(real.binding.bound)
    assert report["capabilities"] == real.capabilities.as_dict()
    d = report["directory"]
    assert d["granularity"] == "PAGE"
    assert [(p["required"], p["effective"], p["pmem2_code"]) for p in d["probes"]] == [
        ("BYTE", None, -100009),
        ("CACHE_LINE", None, -100009),
        ("PAGE", "PAGE", None),
    ]
    assert list(tmp_path.iterdir()) == []  # the probe's file was temporary


@pytest.mark.parametrize(("forced", "got"), [("BYTE", "BYTE"), ("cache_line", "CACHE_LINE")])
def test_forced_granularity_is_reported_as_pretending(
    real: RealBackend,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    forced: str,
    got: str,
) -> None:
    monkeypatch.setenv("PMEM2_FORCE_GRANULARITY", forced)
    status, out, _ = _info(capsys, "--dir", str(tmp_path))
    assert status == 0
    assert f"PMEM2_FORCE_GRANULARITY={forced}: libpmem2 is PRETENDING" in out
    assert f"a set here gets {got} granularity" in out


def test_not_a_directory(
    real: RealBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _info(capsys, "--dir", str(tmp_path / "missing"))
    assert status == 2
    assert "not a directory" in err


def test_missing_libpmem2_exits_2_with_the_remedy(run_python: RunPython) -> None:
    proc = run_python(
        "import sys; from pmemsim.cli import main; sys.exit(main(['info']))",
        PMEMSIM_LIBPMEM2="/nonexistent/libpmem2.so.1",
    )
    assert proc.returncode == 2, proc.stderr
    assert "unavailable" in proc.stderr and "apt-get install libpmem2" in proc.stderr
    assert proc.stdout == ""


def test_the_installed_command(real: RealBackend, tmp_path: Path) -> None:
    cmd = Path(sys.executable).parent / "pmemsim"
    if not cmd.exists():
        pytest.skip("the pmemsim script is not installed next to this interpreter")
    done = subprocess.run(
        [str(cmd), "info", "--dir", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["directory"]["granularity"] == "PAGE"
