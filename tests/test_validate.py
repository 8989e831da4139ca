"""``pmemsim validate``: write in this process, verify in a new one, report honestly.

Most tests run on the simulator standing in for libpmem2 (``--backend sim``), so that they
need no libpmem2; the last ones run the bundled scenarios on the real backend, on tmpfs and
ext4, at PAGE and with forced granularities (skipped without libpmem2, with the reason).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from differential import real_unavailable_reason, shm_dir

import pmemsim as pm
from pmemsim.cli import main
from pmemsim.cli.common import UsageProblem
from pmemsim.validate import filesystem_of, parse_granularity, validate

ROOT = Path(__file__).resolve().parent.parent
PREAMBLE = """
import os, time
from pmemsim.explore import CrashCheck

def write_pid(v):
    v.u64[0] = os.getpid()
    v.u64[1] = int(v.set.granularity)
    v.persist(0, 16)

def other_process(v):
    # The pool holds the writer's pid and granularity: this must be a new process that
    # reads what the writer persisted, at the same granularity.
    return v.u64[0] not in (0, os.getpid()) and v.u64[1] == int(v.set.granularity)
"""


def scenario(tmp_path: Path, body: str, name: str = "s.py") -> Path:
    p = tmp_path / "scen" / name
    p.parent.mkdir(exist_ok=True)
    p.write_text(PREAMBLE + textwrap.dedent(body))
    return p


@pytest.fixture
def pools(tmp_path: Path) -> Path:
    d = tmp_path / "pools"
    d.mkdir()
    return d


def by_name(results: list[object]) -> dict[str, object]:
    return {r.name: r for r in results}  # type: ignore[attr-defined]


class TestOnTheSimulator:
    def test_correct_runs_pass_and_buggy_variants_are_skipped(
        self, tmp_path: Path, pools: Path
    ) -> None:
        s = scenario(
            tmp_path,
            """
            good = CrashCheck("good", write_pid, other_process)
            buggy = CrashCheck("buggy", write_pid, other_process, expect="inconsistent")
            """,
        )
        rs = by_name(validate(s, pools, backend="sim"))
        assert rs["good"].status == "passed"  # type: ignore[attr-defined]
        assert rs["good"].granularity == "PAGE"  # type: ignore[attr-defined]
        assert rs["buggy"].status == "skipped"  # type: ignore[attr-defined]
        assert list(pools.iterdir()) == []  # a passing run's pool is removed

    def test_recovery_refusing_fails_and_keeps_the_pool(self, tmp_path: Path, pools: Path) -> None:
        s = scenario(
            tmp_path,
            """
            refuses = CrashCheck("refuses", write_pid, lambda v: False)
            raises = CrashCheck("raises", write_pid, lambda v: 1 / 0)
            workload_raises = CrashCheck("workload raises", lambda v: v.u64[999], other_process)
            """,
        )
        rs = by_name(validate(s, pools, backend="sim"))
        for name, detail in (
            ("refuses", "recovery returned False"),
            ("raises", "recovery raised ZeroDivisionError"),
            ("workload raises", "the workload raised RangeError"),
        ):
            r = rs[name]
            assert (r.status, r.detail[: len(detail)]) == ("FAILED", detail)  # type: ignore[attr-defined]
            assert Path(r.path).exists()  # type: ignore[attr-defined]

    def test_forced_granularity_reaches_both_processes(self, tmp_path: Path, pools: Path) -> None:
        s = scenario(
            tmp_path,
            """
            def forced_here(v):
                return other_process(v) and os.environ["PMEM2_FORCE_GRANULARITY"] == "BYTE"

            c = CrashCheck("c", write_pid, forced_here)
            """,
        )
        before = os.environ.get("PMEM2_FORCE_GRANULARITY")
        [r] = validate(s, pools, backend="sim", force="byte")
        assert (r.status, r.granularity) == ("passed", "BYTE")
        assert os.environ.get("PMEM2_FORCE_GRANULARITY") == before  # restored

    def test_required_granularity_the_platform_lacks(self, tmp_path: Path, pools: Path) -> None:
        s = scenario(tmp_path, 'c = CrashCheck("c", write_pid, other_process)')
        if os.environ.get("PMEM2_FORCE_GRANULARITY"):
            pytest.skip("the environment forces a granularity")
        with pytest.raises(UsageProblem, match="cannot give BYTE granularity"):
            validate(s, pools, backend="sim", granularity="byte")
        assert list(pools.iterdir()) == []

    def test_a_dying_verifier_keeps_the_verdicts_it_reached(
        self, tmp_path: Path, pools: Path
    ) -> None:
        s = scenario(
            tmp_path,
            """
            first = CrashCheck("first", write_pid, other_process)
            dies = CrashCheck("dies", write_pid, lambda v: os._exit(3))
            never = CrashCheck("never", write_pid, other_process)
            """,
        )
        rs = by_name(validate(s, pools, backend="sim"))
        assert rs["first"].status == "passed"  # type: ignore[attr-defined]
        for name in ("dies", "never"):
            assert rs[name].status == "error"  # type: ignore[attr-defined]
            assert "exited with 3" in rs[name].detail  # type: ignore[attr-defined]

    def test_a_verifier_that_hangs_times_out(self, tmp_path: Path, pools: Path) -> None:
        s = scenario(tmp_path, 'c = CrashCheck("c", write_pid, lambda v: time.sleep(60))')
        [r] = validate(s, pools, backend="sim", timeout=1.0)
        assert (r.status, r.detail) == ("error", "the verifying process ran over 1 s")

    def test_the_verifier_compares_the_content(self, tmp_path: Path, pools: Path) -> None:
        """A pool that does not hold what the writer saw fails, even if recovery accepts it."""
        s = scenario(tmp_path, 'c = CrashCheck("c", write_pid, lambda v: True)')
        [r] = validate(s, pools, backend="sim", keep=True)
        assert r.status == "passed" and r.path is not None
        job = {
            "job": 0,
            "origin": str(s),
            "name": "c",
            "occurrence": 0,
            "path": r.path,
            "size": 4096,
            "digest": "0" * 32,
        }
        proc = subprocess.run(
            [sys.executable, "-m", "pmemsim.validate", "--backend", "sim"],
            input=json.dumps([job]),
            capture_output=True,
            text=True,
            check=False,
        )
        out = json.loads(proc.stdout)
        assert proc.returncode == 1
        assert (out["passed"], out["detail"]) == (
            False,
            "the file does not hold what the writer persisted",
        )

    def test_everything_is_persisted_before_close(self, tmp_path: Path, pools: Path) -> None:
        """The sim writes only persisted data into the file, so a store the workload never
        persisted reaches the verifier only because validate persists the whole pool."""
        s = scenario(
            tmp_path,
            """
            def store_only(v):
                v.write(100, b"not persisted by the workload")

            c = CrashCheck("c", store_only, lambda v: v.read(100, 3) == b"not")
            """,
        )
        [r] = validate(s, pools, backend="sim")
        assert r.status == "passed"


class TestCommand:
    def test_exit_statuses_and_json(
        self, tmp_path: Path, pools: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        good = scenario(tmp_path, 'c = CrashCheck("c", write_pid, other_process)', "good.py")
        out = tmp_path / "out.json"
        args = ["validate", str(pools), "--scenarios", str(good), "--backend", "sim"]
        assert main([*args, "--json", str(out)]) == 0
        text = capsys.readouterr().out
        assert "backend sim, required PAGE" in text and "1 passed, 0 failed" in text
        data = json.loads(out.read_text())
        assert (data["backend"], data["required"], data["forced"]) == ("sim", "PAGE", None)
        assert [(r["name"], r["status"]) for r in data["results"]] == [("c", "passed")]
        bad = scenario(tmp_path, 'c = CrashCheck("c", write_pid, lambda v: False)', "bad.py")
        assert main(["validate", str(pools), "--scenarios", str(bad), "--backend", "sim"]) == 1
        assert "recovery returned False" in capsys.readouterr().out

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            (["--granularity", "huge"], "granularity 'huge'"),
            (["--force-granularity", "huge"], "granularity 'huge'"),
            (["--scenarios", "/nonexistent"], "no such file or folder"),
        ],
    )
    def test_bad_input(
        self, pools: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["validate", str(pools), "--backend", "sim", *extra]) == 2
        assert message in capsys.readouterr().err

    def test_missing_directory(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["validate", str(tmp_path / "nope"), "--backend", "sim"]) == 2
        assert "no such directory" in capsys.readouterr().err

    def test_helpers(self, tmp_path: Path) -> None:
        assert parse_granularity("Cache-Line") == pm.Granularity.CACHE_LINE
        assert filesystem_of(tmp_path) != "unknown"
        if os.path.isdir("/dev/shm"):
            assert filesystem_of("/dev/shm") == "tmpfs"


# -- on libpmem2 ---------------------------------------------------------------------------


def _need_real() -> None:
    reason = real_unavailable_reason()
    if reason:
        pytest.skip(f"real backend unavailable: {reason}")


@pytest.mark.parametrize(
    ("fs", "force"), [("tmpfs", None), ("ext4", None), ("ext4", "cache_line"), ("tmpfs", "byte")]
)
def test_bundled_scenarios_on_libpmem2(
    tmp_path: Path, fs: str, force: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    _need_real()
    for shm in shm_dir():
        folder = shm if fs == "tmpfs" else tmp_path
        args = ["validate", str(folder), "--scenarios", str(ROOT / "scenarios")]
        if force:
            args += ["--force-granularity", force]
        status = main(args)
        text = capsys.readouterr().out
        assert status == 0, text
        expected = (force or "PAGE").upper()
        assert f"passed   {expected}" in text
        assert " 0 failed, 0 errors" in text
        assert [p.name for p in folder.iterdir() if p.suffix == ".pool"] == []


def test_libpmem2_refuses_a_granularity_ext4_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _need_real()
    if os.environ.get("PMEM2_FORCE_GRANULARITY"):
        pytest.skip("the environment forces a granularity")
    scen = str(ROOT / "scenarios" / "append_log.py")
    assert main(["validate", str(tmp_path), "--scenarios", scen, "--granularity", "byte"]) == 2
    assert "cannot give BYTE granularity" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
