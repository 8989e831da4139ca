"""Shutdown data state and bad blocks on real persistent memory (a DAX file system).

Machines without persistent memory answer "not supported" for both (test_real_errors.py
pins that). These tests run where ``PMEMSIM_DAX_DIR`` names a folder on a DAX mount
(``mount -o dax``) and skip, saying so, everywhere else, so the DAX path stays testable.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pmemsim_backends.real import unavailable_reason

import pmemsim as pm

G = pm.Granularity


@pytest.fixture
def dax_dir() -> Path:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    where = os.environ.get("PMEMSIM_DAX_DIR")
    if not where:
        pytest.skip("set PMEMSIM_DAX_DIR to a folder on a DAX file system to run these")
    return Path(where)


def _pool(folder: Path, name: str) -> pm.Source:
    path = folder / name
    path.unlink(missing_ok=True)
    src = pm.Source.from_file(path, pm.SourceFlag.CREATE_IF_NEEDED)
    os.truncate(path, 1 << 21)
    return src


def test_a_dax_file_gets_cache_line_or_byte(dax_dir: Path) -> None:
    src = _pool(dax_dir, "pmemsim-dax-granularity")
    with pm.Set(pm.Config(granularity=G.CACHE_LINE, backend="real")) as s:
        d = s.map(pm.Part(src, 0, 1 << 21))
        assert s.granularity in (G.CACHE_LINE, G.BYTE)
        s.memcpy(d.address, b"durable")
        assert s.read(d.address, 7) == b"durable"
    src.close()


def test_shutdown_data_state_round_trip_on_a_device(dax_dir: Path) -> None:
    src = _pool(dax_dir, "pmemsim-dax-sds")
    src.set_sds()
    events: list[pm.Event] = []
    cfg = pm.Config(
        granularity=G.CACHE_LINE, backend="real", event_callback=lambda _s, e, _a: events.append(e)
    )
    with pm.Set(cfg) as s:
        s.map(pm.Part(src, 0, 1 << 21))
        assert src.part_state == pm.PartState.OK
        record = src.sds
        assert record is not None and record.refcount == 1 and record.device_id
        assert any(isinstance(e, pm.SdsUpdateEvent) for e in events)
    src.close()


def test_bad_block_detection_runs_on_a_device(dax_dir: Path) -> None:
    src = _pool(dax_dir, "pmemsim-dax-badblocks")
    src.badblock_detection = True
    events: list[pm.Event] = []
    cfg = pm.Config(
        granularity=G.CACHE_LINE, backend="real", event_callback=lambda _s, e, _a: events.append(e)
    )
    with pm.Set(cfg) as s:
        s.map(pm.Part(src, 0, 1 << 21))  # a healthy device: no BADBLOCK event, no error
    assert not any(isinstance(e, pm.BadBlockEvent) for e in events)
    src.close()
