"""``pmemsim validate``: write in this process, verify in a new one, report honestly.

Most tests run on the simulator standing in for libpmem2 (``--backend sim``), so that they
need no libpmem2; the last ones run the bundled scenarios on the real backend, on tmpfs and
ext4, at PAGE and with forced granularities (skipped without libpmem2, with the reason).
CrashChecks (a pool validate maps) and FileCrashChecks (a program that opens its own files
in a directory) are both covered.
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
from pmemsim.explore import FileCrashCheck
from pmemsim.validate import file_digests, filesystem_of, parse_granularity, validate

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


FILES = """
import pmemsim as pm
from pmemsim.explore import FileCrashCheck

PAGE = pm.Granularity.PAGE


def in_data(backend, d, flags, use):
    src = pm.Source.from_file(d / "data", flags)
    try:
        with pm.Set(pm.Config(granularity=PAGE, backend=backend)) as s:
            return use(s.view(s.map(pm.Part(src, 0, 4096))))
    finally:
        src.close()


def write_files(backend, d):
    # A pool of the program's own, and a plain file in a subfolder.
    in_data(backend, d, pm.SourceFlag.CREATE_IF_NEEDED, write_pid)
    (d / "sub").mkdir()
    (d / "sub" / "note").write_text("written with plain file I/O")


def read_files(backend, d):
    note = (d / "sub" / "note").read_text()
    return in_data(backend, d, pm.SourceFlag.DO_NOT_GROW, other_process) and note.startswith("wr")
"""


def scenario(tmp_path: Path, body: str, name: str = "s.py", *, files: bool = False) -> Path:
    """A scenario file: the preamble (and the program over files), then ``body``."""
    p = tmp_path / "scen" / name
    p.parent.mkdir(exist_ok=True)
    p.write_text(PREAMBLE + (FILES if files else "") + textwrap.dedent(body))
    return p


@pytest.fixture
def pools(tmp_path: Path) -> Path:
    d = tmp_path / "pools"
    d.mkdir()
    return d


#: A granularity the environment already forces (the suite may run under one).
INHERITED = os.environ.get("PMEM2_FORCE_GRANULARITY") or None
#: What a file here gets without --force-granularity: PAGE, unless the environment forces.
OFFERED = (INHERITED or "PAGE").upper()


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
        assert rs["good"].granularity == OFFERED  # type: ignore[attr-defined]
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


class TestProgramsOverFiles:
    """FileCrashChecks: the program opens its own files in a fresh subdirectory."""

    def test_a_program_passes_and_its_folder_goes(self, tmp_path: Path, pools: Path) -> None:
        s = scenario(
            tmp_path,
            """
            good = FileCrashCheck("good", write_files, read_files)
            buggy = FileCrashCheck("buggy", write_files, read_files, expect="inconsistent")
            """,
            files=True,
        )
        rs = by_name(validate(s, pools, backend="sim"))
        good = rs["good"]
        assert (good.status, good.kind, good.granularity) == ("passed", "files", OFFERED)  # type: ignore[attr-defined]
        assert good.write_seconds > 0 and good.verify_seconds > 0  # type: ignore[attr-defined]
        assert (rs["buggy"].status, rs["buggy"].kind) == ("skipped", "files")  # type: ignore[attr-defined]
        assert list(pools.iterdir()) == []

    def test_kept_folder_holds_the_programs_files(self, tmp_path: Path, pools: Path) -> None:
        s = scenario(tmp_path, 'c = FileCrashCheck("c", write_files, read_files)', files=True)
        [r] = validate(s, pools, backend="sim", keep=True)
        assert r.status == "passed" and r.path is not None
        assert Path(r.path).parent == pools
        assert sorted(file_digests(r.path)) == ["data", "sub/note"]

    def test_failures_are_reported_and_keep_the_folder(self, tmp_path: Path, pools: Path) -> None:
        s = scenario(
            tmp_path,
            """
            refuses = FileCrashCheck("refuses", write_files, lambda b, d: False)
            raises = FileCrashCheck("raises", write_files, lambda b, d: (d / "nope").read_text())
            workload_raises = FileCrashCheck("workload raises", lambda b, d: 1 / 0, read_files)
            """,
            files=True,
        )
        rs = by_name(validate(s, pools, backend="sim"))
        for name, detail in (
            ("refuses", "recovery returned False"),
            ("raises", "recovery raised FileNotFoundError"),
            ("workload raises", "the workload raised ZeroDivisionError"),
        ):
            r = rs[name]
            assert (r.status, r.detail[: len(detail)]) == ("FAILED", detail)  # type: ignore[attr-defined]
            assert Path(r.path).is_dir()  # type: ignore[attr-defined]

    def test_the_verifier_compares_every_file(self, tmp_path: Path, pools: Path) -> None:
        """Files that do not hold what the writer left fail, even if recovery accepts them."""
        s = scenario(
            tmp_path, 'c = FileCrashCheck("c", write_files, lambda b, d: True)', files=True
        )
        [r] = validate(s, pools, backend="sim", keep=True)
        assert r.status == "passed" and r.path is not None
        written = file_digests(r.path)
        job = {
            "job": 0,
            "origin": str(s),
            "name": "c",
            "path": r.path,
            "size": 0,
            "digest": "",
            "kind": "files",
            "files": written,
        }

        def verify() -> tuple[int, dict[str, object]]:
            proc = subprocess.run(
                [sys.executable, "-m", "pmemsim.validate", "--backend", "sim"],
                input=json.dumps([job]),
                capture_output=True,
                text=True,
                check=False,
            )
            return proc.returncode, json.loads(proc.stdout)

        assert verify()[0] == 0  # the control: untouched, it passes
        (Path(r.path) / "sub" / "note").write_text("written with plain file I/O!")
        (Path(r.path) / "data").unlink()
        (Path(r.path) / "stray").write_bytes(b"")
        code, out = verify()
        assert code == 1
        assert (out["passed"], out["stage"], out["detail"]) == (
            False,
            "recover",
            "the files do not hold what the writer left: "
            "changed: sub/note; missing: data; new: stray",
        )

    def test_forced_granularity_reaches_both_processes(self, tmp_path: Path, pools: Path) -> None:
        s = scenario(
            tmp_path,
            """
            def forced_here(backend, d):
                return read_files(backend, d) and os.environ["PMEM2_FORCE_GRANULARITY"] == "BYTE"

            c = FileCrashCheck("c", write_files, forced_here)
            """,
            files=True,
        )
        [r] = validate(s, pools, backend="sim", force="byte")
        assert (r.status, r.granularity) == ("passed", "BYTE")

    def test_two_checks_of_one_name_are_an_error_as_in_check_and_replay(
        self, tmp_path: Path, pools: Path
    ) -> None:
        s = scenario(
            tmp_path,
            """
            pool = CrashCheck("same", write_pid, other_process)
            files = FileCrashCheck("same", write_files, read_files)
            other = FileCrashCheck("other", write_files, read_files)
            """,
            files=True,
        )
        rs = validate(s, pools, backend="sim")
        assert [(r.name, r.status) for r in rs] == [("same", "error"), ("other", "passed")]
        assert "(`pool` and `files`)" in rs[0].detail

    def test_maps_coarser_than_required(self, tmp_path: Path, pools: Path) -> None:
        if os.environ.get("PMEM2_FORCE_GRANULARITY"):
            pytest.skip("the environment forces a granularity")
        s = scenario(tmp_path, 'c = FileCrashCheck("c", write_files, read_files)', files=True)
        with pytest.raises(UsageProblem, match="PAGE granularity, coarser than the required BYTE"):
            validate(s, pools, backend="sim", granularity="byte")
        assert list(pools.iterdir()) == []

    def test_a_program_requiring_what_the_platform_lacks(self, tmp_path: Path, pools: Path) -> None:
        if os.environ.get("PMEM2_FORCE_GRANULARITY"):
            pytest.skip("the environment forces a granularity")
        s = scenario(
            tmp_path,
            """
            PAGE = pm.Granularity.CACHE_LINE
            pool = CrashCheck("first", write_pid, other_process)
            c = FileCrashCheck("c", write_files, read_files)
            """,
            files=True,
        )
        with pytest.raises(UsageProblem, match=r"c requires a granularity .* cannot give"):
            validate(s, pools, backend="sim")
        assert list(pools.iterdir()) == []  # the pool written before is gone too
        [r] = validate(s, pools, backend="sim", force="cache_line", select=["c"])
        assert (r.status, r.granularity) == ("passed", "CACHE_LINE")


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
        assert (data["backend"], data["required"], data["forced"]) == ("sim", "PAGE", INHERITED)
        assert [(r["name"], r["status"]) for r in data["results"]] == [("c", "passed")]
        bad = scenario(tmp_path, 'c = CrashCheck("c", write_pid, lambda v: False)', "bad.py")
        assert main(["validate", str(pools), "--scenarios", str(bad), "--backend", "sim"]) == 1
        assert "recovery returned False" in capsys.readouterr().out

    def test_a_failing_program(
        self, tmp_path: Path, pools: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        body = 'c = FileCrashCheck("c", write_files, lambda b, d: False)'
        bad = scenario(tmp_path, body, files=True)
        out = tmp_path / "out.json"
        args = ["validate", str(pools), "--scenarios", str(bad), "--backend", "sim"]
        assert main([*args, "--json", str(out)]) == 1
        text = capsys.readouterr().out
        [kept] = list(pools.iterdir())
        assert "recovery returned False" in text and f"kept at {kept}" in text
        [r] = json.loads(out.read_text())["results"]
        assert (r["kind"], r["status"], r["path"]) == ("files", "FAILED", str(kept))

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

    def test_the_default_catalogue_missing_is_named(
        self, pools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Run from outside the source tree, the default `scenarios` was "no such file or
        # folder", after the header, with nothing to say it was the default.
        monkeypatch.chdir(tmp_path)
        done = subprocess.run(
            [sys.executable, "-m", "pmemsim", "validate", str(pools), "--backend", "sim"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2 and done.stdout == ""
        assert "--scenarios scenarios: no such file or folder (the default" in done.stderr

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
    """Every correct check passes, sds_pool's program over files among them."""
    _need_real()
    from pmemsim.cli.check import load_checks

    checks = load_checks(ROOT / "scenarios", files=True)
    correct = sum(c.expect == "consistent" for c in checks)
    programs = [
        c.name for c in checks if isinstance(c, FileCrashCheck) and c.expect == "consistent"
    ]
    assert correct > len(programs) > 0
    for shm in shm_dir():
        folder = shm if fs == "tmpfs" else tmp_path
        args = ["validate", str(folder), "--scenarios", str(ROOT / "scenarios")]
        if force:
            args += ["--force-granularity", force]
        status = main(args)
        text = capsys.readouterr().out
        assert status == 0, text
        expected = (force or OFFERED).upper()
        rows = {line.split()[0]: line.split()[1:3] for line in text.splitlines() if "  " in line}
        for name in programs:
            assert rows[name] == ["passed", expected], text
        assert f"{correct} passed, 0 failed, 0 errors" in text
        assert [p.name for p in folder.iterdir() if p.name.startswith("pmemsim-validate")] == []


def test_a_program_over_files_on_libpmem2(tmp_path: Path) -> None:
    _need_real()
    s = scenario(tmp_path, 'c = FileCrashCheck("c", write_files, read_files)', files=True)
    for shm in shm_dir():
        [r] = validate(s, shm)
        assert (r.status, r.kind, r.granularity) == ("passed", "files", OFFERED), r.detail
        [r] = validate(s, shm, force="byte")
        assert (r.status, r.granularity) == ("passed", "BYTE"), r.detail


def test_sds_pool_on_a_platform_without_sds(tmp_path: Path) -> None:
    """libpmem2 has no shutdown data state for a file without DAX: the pool opens without an
    SDS record and leaves its state file as it was; the simulator standing in for the same
    machine has devices, so there the pool keeps its record."""
    _need_real()
    import importlib.util

    from pmemsim.validate import make_backend

    spec = importlib.util.spec_from_file_location("sds_pool_here", ROOT / "scenarios/sds_pool.py")
    assert spec is not None and spec.loader is not None
    sp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sp)
    for name in ("real", "sim"):
        d = tmp_path / name
        d.mkdir()
        backend = make_backend(name)
        sp.sessions(sp.Pool)(backend, d)
        pool = sp.Pool(d / "pool", d / "pool.sds", backend=backend)
        try:
            assert sp.entries(pool.view) == list(sp.VALUES)
            assert pool.sds == (name == "sim")
            assert (pool.state is None) == (name == "real")
            assert (pool.store.load() is None) == (name == "real")
        finally:
            pool.close()


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
