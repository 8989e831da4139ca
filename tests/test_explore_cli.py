"""The crash check and the `pmemsim check` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pmemsim as pm
from pmemsim.cli import main
from pmemsim.explore import CrashCheck, check
from pmemsim.provenance import locations

ROOT = Path(__file__).resolve().parent.parent


def _flag_then_data(v: pm.View) -> None:
    v.u64[8] = 7
    v.u64[0] = 1  # the flag, in another line
    v.persist(0, 72)


def _flag_then_data_fixed(v: pm.View) -> None:
    v.u64[8] = 7
    v.persist(64, 8)
    v.u64[0] = 1
    v.persist(0, 8)


def _recover(v: pm.View) -> bool:
    return v.u64[0] == 0 or v.u64[8] == 7


def test_bug_found_with_minimal_failure_pointing_at_the_lost_store() -> None:
    r = check(CrashCheck("bug", _flag_then_data, _recover, expect="inconsistent"))
    assert r.verdict == "inconsistent" and r.as_expected and r.exact
    m = r.minimal
    assert m is not None
    assert len(m.lines) == 1 and len(m.lost) == 1
    assert m.lost[0].offset == 64
    (loc,) = locations(m.lost[0].provenance)
    assert loc.filename == __file__ and loc.function == "_flag_then_data"
    assert locations(m.point.provenance)[0].function == "_flag_then_data"


def test_fixed_version_is_clean_and_every_image_is_checked() -> None:
    r = check(CrashCheck("fixed", _flag_then_data_fixed, _recover))
    assert r.verdict == "consistent" and not r.failures
    # Two barriers after stores and the end; each pending line doubles the images.
    assert r.crash_points == 3
    assert r.exact and r.images_covered == r.images_possible >= 3


def test_recovery_exception_is_a_failure_and_kept() -> None:
    def boom(v: pm.View) -> bool:
        if v.u64[0] == 1 and v.u64[8] != 7:
            raise RuntimeError("torn")
        return True

    r = check(CrashCheck("raises", _flag_then_data, boom, expect="inconsistent"))
    assert r.minimal is not None and isinstance(r.minimal.error, RuntimeError)


def test_partial_exploration_is_labelled() -> None:
    def many(v: pm.View) -> None:
        for line in range(6):
            v.u64[line * 8] = line + 1
        v.persist(0, 6 * 64)

    r = check(CrashCheck("many", many, lambda v: True, max_images=10, strategy="exhaustive"))
    assert not r.exact and r.images_skipped > 0


def test_cli_check_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    code = main(["check", str(ROOT / "scenarios" / "append_log.py"), "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["checks"]
    assert {r["verdict"] for r in rows} == {"consistent", "inconsistent"}
    assert all(r["exact"] and r["images_checked"] > 0 for r in rows)


def test_cli_unexpected_verdict_exits_1(tmp_path: Path) -> None:
    f = tmp_path / "wrong.py"
    f.write_text(
        "from pmemsim.explore import CrashCheck\n"
        "def w(v):\n    v.u64[8] = 7\n    v.u64[0] = 1\n    v.persist(0, 72)\n"
        "def r(v):\n    return v.u64[0] == 0 or v.u64[8] == 7\n"
        "c = CrashCheck('claims correct', w, r)\n"
    )
    assert main(["check", str(f)]) == 1


@pytest.mark.parametrize("content", [None, "x = 1\n"])
def test_cli_bad_input_exits_2(
    tmp_path: Path, content: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "s.py"
    if content is not None:
        f.write_text(content)
    assert main(["check", str(f)]) == 2
    assert "pmemsim:" in capsys.readouterr().err


def test_cli_a_file_that_raises_is_an_error_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "s.py"
    f.write_text("raise ValueError('broken')\n")
    assert main(["check", str(f)]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and "ValueError: broken" in out and f"{f}:1" in out
