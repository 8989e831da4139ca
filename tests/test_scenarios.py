"""The scenario catalogue (scenarios/*.py): every check gets the verdict it expects, on the
simulator, and each buggy variant's minimal failing crash points at the line it should.

Each buggy variant is pinned in its scenario's source by comments, found here by scanning
the file (line numbers are never written down):

* ``# pmemsim: lost-store VARIANT...``: the minimal failure lost a store issued on this line
  (the store whose flush or fence was forgotten, or the store that tore);
* ``# pmemsim: crash-at VARIANT...``: for a minimal failure that lost nothing (an ordering
  bug that eADR does not fix), the crash point is next to the operation on this line.

A pin at the end of a code line applies to that line; a pin on a line of its own applies to
the next code line. VARIANT is the module attribute of the check without its
``_cache_line`` / ``_byte`` suffix. FileCrashChecks (a program over files, sds_pool) are
pinned the same way.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import pmemsim as pm
from pmemsim.cli import main
from pmemsim.explore import CheckResult, CrashCheck, FileCrashCheck, check
from pmemsim.provenance import locations

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
#: Written before the naming convention; its check names are pinned by the README's tests.
LEGACY = {"append_log"}
SUFFIXES = {"_cache_line": pm.Granularity.CACHE_LINE, "_byte": pm.Granularity.BYTE}
PIN = re.compile(r"#\s*pmemsim:\s*(lost-store|crash-at)\s+([\w ]+?)\s*$")


def _load(path: Path) -> ModuleType:
    # The name `pmemsim check` uses, so both load the same module once.
    name = f"pmemsim_scenario_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


MODULES = {p.stem: _load(p) for p in sorted(SCENARIOS.glob("*.py")) if not p.name.startswith("_")}


def _variant(attr: str) -> str:
    for suffix in SUFFIXES:
        if attr.endswith(suffix):
            return attr[: -len(suffix)]
    return attr


CHECKS = [
    (stem, attr, c)
    for stem, module in MODULES.items()
    for attr, c in vars(module).items()
    if isinstance(c, CrashCheck | FileCrashCheck)
]


def pins(path: Path) -> dict[tuple[str, str], set[int]]:
    """``(kind, variant) -> line numbers`` from the pin comments of a scenario file."""
    out: dict[tuple[str, str], set[int]] = {}
    waiting: list[tuple[str, str]] = []
    for n, text in enumerate(path.read_text().splitlines(), 1):
        m = PIN.search(text)
        here = [(m[1], v) for v in m[2].split()] if m else []
        code = text.split("#", 1)[0].strip()
        if not code:
            waiting += here
            continue
        for key in waiting + here:
            out.setdefault(key, set()).add(n)
        waiting = []
    assert not waiting, f"{path.name}: a pin comment with no code line after it"
    return out


def test_catalogue_is_whole() -> None:
    """Every scenario has a correct version and buggy variants, each on both granularities
    (the append log's BYTE checks wait for the README to be updated), named
    ``scenario.variant[granularity]``; every pin names a variant that exists."""
    assert len(MODULES) >= 7
    for stem, module in MODULES.items():
        checks = {a: c for s, a, c in CHECKS if s == stem}
        if stem in LEGACY:
            assert checks
            continue
        variants = {_variant(a) for a in checks}
        assert "correct" in variants and len(variants) >= 3, stem
        for variant in variants:
            for suffix, granularity in SUFFIXES.items():
                c = checks[variant + suffix]
                assert c.granularity == granularity
                assert c.name == f"{stem}.{variant}[{granularity.name.lower()}]"
                assert c.description
                assert isinstance(c, FileCrashCheck) or c.size == 4096
            if variant == "correct":
                assert {checks["correct" + s].expect for s in SUFFIXES} == {"consistent"}
            else:
                assert checks[variant + "_cache_line"].expect == "inconsistent", variant
        pinned = {v for _, v in pins(Path(module.__file__ or ""))}
        assert pinned <= variants, f"{stem}: pins name unknown variants {pinned - variants}"


def _pinned_lines(path: Path, kind: str, variant: str) -> set[int]:
    return pins(path).get((kind, variant), set())


@pytest.mark.parametrize("stem,attr,c", CHECKS, ids=[c.name for _, _, c in CHECKS])
def test_verdict_and_the_line_it_points_at(
    stem: str, attr: str, c: CrashCheck | FileCrashCheck
) -> None:
    r = check(c, progress=None)
    assert r.verdict == c.expect, r.report()
    assert r.exact and r.images_checked > 0, r.summary()
    if c.expect == "consistent":
        return
    m = r.minimal
    assert m is not None
    path = SCENARIOS / f"{stem}.py"
    variant = _variant(attr)
    if m.lost:
        lines = _pinned_lines(path, "lost-store", variant)
        assert lines, f"{variant}: no `# pmemsim: lost-store {variant}` pin in {path.name}"
        hit = {
            loc.lineno
            for s in m.lost
            for loc in locations(s.provenance)
            if Path(loc.filename) == path
        }
        assert hit & lines, f"lost stores at lines {sorted(hit)}, pinned {sorted(lines)}\n" + (
            m.describe()
        )
    else:
        lines = _pinned_lines(path, "crash-at", variant)
        assert lines, f"{variant}: no `# pmemsim: crash-at {variant}` pin in {path.name}"
        where = [loc for loc in locations(m.point.provenance) if Path(loc.filename) == path]
        assert where and where[0].lineno in lines, m.describe()


def test_pmemsim_check_runs_the_whole_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(SCENARIOS)]) == 0
    out = capsys.readouterr().out
    n = len(CHECKS)
    assert f"{n} checks: {n} passed, 0 failed, 0 errored" in out


def _timeless(value: Any) -> Any:
    """A JSON report without what the clock gives (seconds, rates)."""
    if isinstance(value, dict):
        return {
            k: _timeless(v)
            for k, v in value.items()
            if k not in ("seconds", "images_per_second", "recovery_seconds")
        }
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def test_two_runs_of_the_catalogue_give_the_same_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Same seed, same result: a temporary folder's name in a FileCrashCheck's lint finding
    # made two runs' JSON differ.
    reports = []
    for run in ("a", "b"):
        assert main(["check", str(SCENARIOS), "--json", str(tmp_path / f"{run}.json")]) == 0
        reports.append(_timeless(json.loads((tmp_path / f"{run}.json").read_text())))
    capsys.readouterr()
    assert reports[0] == reports[1]


# -- claims the catalogue makes ----------------------------------------------------------------


def test_token_stored_early_needs_the_eviction_model() -> None:
    """Without eviction (only flushed stores may persist, as pmreorder assumes) the hash
    table's early token looks correct; with it, it is not."""
    from pmemsim.explore import Strategy
    from pmemsim.explore.strategy import Plan, PointContext

    class FlushedOnly(Strategy):
        exact = False
        name = "flushed-only"

        def plan(self, state: Any, ctx: PointContext) -> Plan:
            allowed = []
            for i, u in enumerate(state.units):
                options = u.options(state._bases[i])
                allowed.append([o for o, opt in enumerate(options) if opt.kept <= u.flushed])
            images: list[tuple[tuple[int, int], ...]] = [()]
            for i, opts in enumerate(allowed):
                images = [(*im, (i, o)) if o else im for im in images for o in opts]
            return Plan(images, 0)

    bug = MODULES["hash_table"].token_stored_early_cache_line
    assert check(bug, strategy=FlushedOnly(), progress=None).verdict == "consistent"
    assert check(bug, progress=None).verdict == "inconsistent"


def test_cmap_watcher_can_see_a_change_the_crash_lost() -> None:
    """The notification bug is caught as what it is (a watcher saw a lost change), not only
    through the torn records it also leaves."""
    cmap = MODULES["cmap"]
    r: CheckResult = check(cmap.notify_before_persist_cache_line, progress=None)
    kinds = {type(f.error) for f in r.failures}
    assert cmap.LostNotification in kinds


@pytest.mark.parametrize("stem,count_at", [("undo_log", "COUNT_AT"), ("redo_log", "HEADER_AT")])
def test_log_recovery_has_work_to_do(stem: str, count_at: str) -> None:
    """The correct logs are consistent (above) on images that hold a transaction in flight,
    so the verdict is not vacuous: some image has a non-zero log count for recovery."""
    module = MODULES[stem]
    c = module.correct_cache_line
    at = getattr(module, count_at)
    counts: list[int] = []

    def probe(view: pm.View) -> bool:
        counts.append(view.u64[at // 8])
        return True

    check(CrashCheck("probe", c.workload, probe, granularity=c.granularity), progress=None)
    assert any(counts), stem


def test_sds_pool_correct_refuses_exactly_after_unsafe_shutdowns_in_use() -> None:
    """The correct pool's verdict is not vacuous: across its crash images it is refused
    (CORRUPTED) only after unsafe shutdowns, opens after ordinary crashes while in use
    (OK_BUT_INTERRUPTED) with entries to check, and opens after an unsafe shutdown that came
    after a clean close (OK: nothing was in use)."""
    from pmemsim.explore import current_crash

    sp = MODULES["sds_pool"]
    c = sp.correct_cache_line
    seen: set[tuple[str, bool, str, bool]] = set()

    def classify(backend: Any, directory: Path) -> bool:
        crash = current_crash()
        unsafe = crash is not None and "unsafe_shutdown" in crash.faults
        try:
            pool = sp.Pool(*sp._paths(directory), backend=backend)
        except sp.PoolRefused as exc:
            seen.add(("refused", unsafe, exc.state.name, False))
            return True
        seen.add(("opened", unsafe, pool.state.name, bool(sp.entries(pool.view))))
        pool.close()
        return True

    probe = FileCrashCheck("probe", c.workload, classify, faults=c.faults)
    assert check(probe, progress=None).verdict == "consistent"
    assert {u for kind, u, _, _ in seen if kind == "refused"} == {True}
    assert {state for kind, _, state, _ in seen if kind == "refused"} == {"CORRUPTED"}
    assert ("opened", False, "OK_BUT_INTERRUPTED", True) in seen
    assert ("opened", True, "OK", True) in seen


@pytest.mark.parametrize("variant", ["no_deep_flush", "ignores_corrupted"])
def test_sds_pool_bugs_need_the_unsafe_shutdown_and_replay_from_the_command_line(
    variant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bug's minimal failure is an unsafe shutdown in which the journal's entry line
    went back to its deep-flushed content; only for no_deep_flush did the SDS record's line
    go back too (ignores_corrupted keeps its record and opens anyway). Without the fault
    both are consistent. The report's token replays the failure from the command line."""
    import dataclasses

    sp = MODULES["sds_pool"]
    c = getattr(sp, f"{variant}_cache_line")
    m = check(c, progress=None).minimal
    assert m is not None and m.crash.faults == ("unsafe_shutdown",)
    reverted = {m.sources[line.medium] for line in m.lines if line.reverted}
    assert "pool" in reverted
    assert ("pool.sds" in reverted) == (variant == "no_deep_flush")
    assert isinstance(m.error, sp.DamagedPool)
    plain = dataclasses.replace(c, faults=())
    assert check(plain, progress=None).verdict == "consistent"
    token = f"{SCENARIOS / 'sds_pool.py'}::{m.token}"
    assert main(["replay", token]) == 1
    assert "DamagedPool" in capsys.readouterr().err


def test_append_log_truncation_has_bad_records_to_truncate() -> None:
    """The correct bad-block recovery is consistent on images where it had to truncate: a
    cleared bad block below the tail, in the records' own sector."""
    al = MODULES["append_log"]
    truncated: list[int] = []

    def recover(log: pm.View) -> bool:
        tail = log.u64[al.TAIL // 8]
        values = al.open_log(log)
        if len(values) < tail:
            truncated.append(len(values))
        return bool(al.bad_block_truncated.recover(log))

    c = al.bad_block_truncated
    probe = CrashCheck("probe", c.workload, recover, faults=c.faults)
    assert check(probe, progress=None).verdict == "consistent"
    assert truncated and min(truncated) == 512 // al.RECORD - 1  # records from 0x200 on
    m = check(al.bad_block_trusted, progress=None).minimal
    assert m is not None and m.crash.faults == ("badblock.200",)


# -- the cmap's own semantics (Corosync's), without crashes ----------------------------------


@pytest.fixture
def cmap_pool(make_set: Callable[..., pm.Set]) -> pm.View:
    s = make_set()
    return s.view(s.map(pm.Part(pm.Source.anonymous(4096))))


def _cs(exc: pytest.ExceptionInfo[Any]) -> Any:
    return exc.value.error


def test_cmap_typed_values_round_trip_and_persist(cmap_pool: pm.View) -> None:
    cm = MODULES["cmap"]
    m = cm.Cmap(cmap_pool)
    values = {
        cm.ValueType.INT8: -5,
        cm.ValueType.UINT8: 255,
        cm.ValueType.INT16: -30000,
        cm.ValueType.UINT16: 65535,
        cm.ValueType.INT32: -(2**31),
        cm.ValueType.UINT32: 2**32 - 1,
        cm.ValueType.INT64: -(2**63),
        cm.ValueType.UINT64: 2**64 - 1,
        cm.ValueType.FLOAT: 0.5,
        cm.ValueType.DOUBLE: 1e300,
        cm.ValueType.STRING: "hello",
        cm.ValueType.BINARY: b"\x00\x01",
    }
    binary = values.pop(cm.ValueType.BINARY)  # the map holds 11 keys: this one comes later
    for t, v in values.items():
        m.set(f"key.{t.name.lower()}", v, t)
    m.delete("key.int8")
    del values[cm.ValueType.INT8]
    values[cm.ValueType.BINARY] = binary
    m.set("key.binary", binary, cm.ValueType.BINARY)
    again = cm.Cmap(cmap_pool)  # reopened: everything was durable
    for t, v in values.items():
        got = again.get(f"key.{t.name.lower()}")
        assert (got.type, got.decode()) == (t, v)
    assert again.get("key.string").len == len("hello") + 1  # NUL counted, as in Corosync
    assert again.names("key.u") == ["key.uint16", "key.uint32", "key.uint64", "key.uint8"]


def test_cmap_errors_are_cs_codes_and_change_nothing(cmap_pool: pm.View) -> None:
    cm = MODULES["cmap"]
    m = cm.Cmap(cmap_pool)
    m.set("totem.token", 3000, cm.ValueType.UINT32)
    before = cmap_pool.read(0, 4096)
    cases = [
        (lambda: m.get("totem.nope"), cm.CsError.ERR_NOT_EXIST),
        (lambda: m.delete("totem.nope"), cm.CsError.ERR_NOT_EXIST),
        (lambda: m.set("ab", 1, cm.ValueType.UINT8), cm.CsError.ERR_NAME_TOO_LONG),
        (lambda: m.set("a key", 1, cm.ValueType.UINT8), cm.CsError.ERR_NAME_TOO_LONG),
        (lambda: m.set("k" * 49, 1, cm.ValueType.UINT8), cm.CsError.ERR_NAME_TOO_LONG),
        (lambda: m.set("totem.x", 256, cm.ValueType.UINT8), cm.CsError.ERR_INVALID_PARAM),
        (lambda: m.set("totem.x", "1", cm.ValueType.INT32), cm.CsError.ERR_INVALID_PARAM),
        (lambda: m.set("totem.x", 1, 99), cm.CsError.ERR_INVALID_PARAM),
        (lambda: m.set("totem.x", b"x" * 65, cm.ValueType.BINARY), cm.CsError.ERR_INVALID_PARAM),
        (lambda: m.set("totem.x", "a\0b", cm.ValueType.STRING), cm.CsError.ERR_INVALID_PARAM),
        (lambda: m.track_add("totem.", cm.TRACK_ADD, None), cm.CsError.ERR_INVALID_PARAM),
        (lambda: m.track_add("totem.", 16, print), cm.CsError.ERR_INVALID_PARAM),
        (lambda: m.track_delete(12345), cm.CsError.ERR_BAD_HANDLE),
    ]
    for call, code in cases:
        with pytest.raises(cm.CmapError) as exc:
            call()
        assert _cs(exc) == code
    assert cmap_pool.read(0, 4096) == before
    for i in range(cm.SLOTS - 2):  # one key is there; one slot stays free for updates
        m.set(f"fill.{i:02}", i, cm.ValueType.UINT8)
    with pytest.raises(cm.CmapError) as exc:
        m.set("fill.last", 1, cm.ValueType.UINT8)
    assert _cs(exc) == cm.CsError.ERR_NO_MEMORY
    m.set("totem.token", 4000, cm.ValueType.UINT32)  # a full map still takes updates
    assert cm.Cmap(cmap_pool).get("totem.token").decode() == 4000


def test_cmap_tracking_exact_prefix_events_and_handles(cmap_pool: pm.View) -> None:
    cm = MODULES["cmap"]
    m = cm.Cmap(cmap_pool)
    seen: list[tuple[Any, ...]] = []

    def fn(cmap: Any, handle: int, event: int, key: str, new: Any, old: Any, data: Any) -> None:
        assert cmap is m
        seen.append((data, handle, event, key, new.decode(), old.decode(), new.type, old.type))

    everything = cm.TRACK_ADD | cm.TRACK_MODIFY | cm.TRACK_DELETE
    prefix = m.track_add("totem.", everything | cm.TRACK_PREFIX, fn, "prefix")
    exact = m.track_add("totem.token", cm.TRACK_MODIFY, fn, "exact")
    twice = m.track_add("totem.token", cm.TRACK_MODIFY, fn, "twice")
    m.track_add("totem", everything, fn, "exact-no-dot")  # an exact key, not a prefix
    u32 = cm.ValueType.UINT32
    m.set("totem.token", 1000, u32)
    m.set("totem.token", 1000, u32)  # same value: no event
    m.set("totem.token", 2000, u32)
    m.set("quorum.votes", 3, u32)  # tracked by nobody
    m.track_delete(twice)
    with pytest.raises(cm.CmapError) as exc:
        m.track_delete(twice)
    assert _cs(exc) == cm.CsError.ERR_BAD_HANDLE
    m.set("totem.token", "x", cm.ValueType.STRING)  # a type change is a MODIFY
    m.delete("totem.token")
    assert seen == [
        ("prefix", prefix, cm.TRACK_ADD, "totem.token", 1000, None, u32, 0),
        ("prefix", prefix, cm.TRACK_MODIFY, "totem.token", 2000, 1000, u32, u32),
        ("exact", exact, cm.TRACK_MODIFY, "totem.token", 2000, 1000, u32, u32),
        ("twice", twice, cm.TRACK_MODIFY, "totem.token", 2000, 1000, u32, u32),
        ("prefix", prefix, cm.TRACK_MODIFY, "totem.token", "x", 2000, cm.ValueType.STRING, u32),
        ("exact", exact, cm.TRACK_MODIFY, "totem.token", "x", 2000, cm.ValueType.STRING, u32),
        ("prefix", prefix, cm.TRACK_DELETE, "totem.token", None, "x", 0, cm.ValueType.STRING),
    ]


def test_cmap_notification_comes_once_the_change_is_durable() -> None:
    """In the callback, a crash would keep the change (correct map) or could lose it (bug)."""
    from pmemsim_backends.sim import SimBackend

    cm = MODULES["cmap"]
    cache_line = pm.Granularity.CACHE_LINE
    durable: dict[str, bool] = {}
    for kind in (cm.Cmap, cm.NotifyBeforePersist):
        sim = SimBackend(cache_line)
        with pm.Set(pm.Config(granularity=cache_line, backend=sim)) as s:
            m = kind(s.view(s.map(pm.Part(pm.Source.anonymous(4096)))))

            def fn(*args: Any, sim: SimBackend = sim, name: str = kind.__name__) -> None:
                image = sim.crash_state().guaranteed_image().snapshot()
                with pm.Set(pm.Config(granularity=cache_line, backend=SimBackend())) as r:
                    view = r.view(r.map(pm.Part(pm.Source.from_image(image))))
                    durable[name] = cm.Cmap(view).names() == ["totem.token"]

            m.track_add("totem.", cm.TRACK_ADD | cm.TRACK_PREFIX, fn)
            m.set("totem.token", 1, cm.ValueType.UINT32)
    assert durable == {"Cmap": True, "NotifyBeforePersist": False}


def test_cmap_open_finishes_an_interrupted_modify(cmap_pool: pm.View) -> None:
    """Two live records for one key (a crash between publishing the new record and freeing
    the old): opening keeps the newer and frees the older, durably."""
    cm = MODULES["cmap"]
    m = cm.Cmap(cmap_pool)
    m.set("totem.token", 1, cm.ValueType.UINT32)
    m.set("totem.token", 2, cm.ValueType.UINT32)
    old = cm.MAP_AT  # slot 0 held the first record; set() freed it and scrubbed it
    cmap_pool.u64[old // 8] = 1  # its sequence number, as if the free never happened
    cmap_pool.pack_into("<BBH4x11s", old + 8, cm.ValueType.UINT32, 11, 4, b"totem.token")
    cmap_pool.u32[(old + 64) // 4] = 1
    cmap_pool.persist(old, cm.SLOT)
    again = cm.Cmap(cmap_pool)
    assert again.get("totem.token").decode() == 2
    assert cmap_pool.u64[old // 8] == 0
    assert cm.Cmap(cmap_pool).names() == ["totem.token"]


# -- the SDS pool, without crashes ------------------------------------------------------------


def test_sds_pool_opens_after_clean_and_ordinary_ends_refuses_after_unsafe_shutdown(
    sim: Any, tmp_path: Path
) -> None:
    sp = MODULES["sds_pool"]
    data, state = tmp_path / "pool", tmp_path / "pool.sds"
    pool = sp.Pool(data, state, backend=sim)
    assert pool.state == pm.PartState.OK
    pool.view.u64[0] = 42
    pool.view.persist(0, 8)
    pool.close()

    pool = sp.Pool(data, state, backend=sim)  # a clean end: nobody was using it
    assert pool.state == pm.PartState.OK and pool.view.u64[0] == 42
    assert pool.store.load().refcount == 1
    pool._close_all()  # the process dies: nothing is unmapped, the record keeps its user

    pool = sp.Pool(data, state, backend=sim)  # an ordinary crash: ADR kept the queues
    assert pool.state == pm.PartState.OK_BUT_INTERRUPTED
    pool._close_all()

    sim.device_of(data).usc += 1  # this time ADR failed too
    with pytest.raises(sp.PoolRefused) as exc:
        sp.Pool(data, state, backend=sim)
    assert exc.value.state == pm.PartState.CORRUPTED


def test_sds_pool_usc_change_while_closed_is_harmless_and_torn_save_keeps_the_last(
    sim: Any, tmp_path: Path
) -> None:
    sp = MODULES["sds_pool"]
    data, state = tmp_path / "pool", tmp_path / "pool.sds"
    sp.Pool(data, state, backend=sim).close()
    sim.device_of(data).usc += 1
    pool = sp.Pool(data, state, backend=sim)
    assert pool.state == pm.PartState.OK
    dev = sim.device_of(data)
    assert pool.store.load() == pm.SdsRecord(dev.id, dev.usc, 1)
    # A save torn by a crash: the newest slot fails its checksum, the previous one stands.
    newest = max((0, 1), key=lambda i: pool.store.state.u64[i * sp.SLOT // 8])
    pool.store.state.u8[newest * sp.SLOT + sp.SLOT_HEADER.size] ^= 0xFF
    assert pool.store.load() == pm.SdsRecord(dev.id, dev.usc - 1, 0)  # the clean close
    pool.close()
