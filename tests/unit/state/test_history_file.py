"""PATH.history beside --state.file: the picture's points kept across restarts, read as the
state file is (nothing in it trusted)."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import ksm_exporter.state.monitor as monitor_module
from ksm_exporter.model.chart import Series
from ksm_exporter.readers.meminfo import MemInfo
from ksm_exporter.readers.sysfs_ksm import KsmReading
from ksm_exporter.state.history import History, Tier
from ksm_exporter.state.history_file import (
    SAVE_EVERY_SECONDS,
    HistoryFile,
    history_path,
    parse_points,
)
from ksm_exporter.state.snapshot import Snapshot
from ksm_exporter.state.state_file import StateFile
from tests.support import copy_fixture, run_cli, write_ksm
from tests.support.in_process import built_daemon

GIB = 2**30
T0 = 1_700_000_000.0
NOW = T0 + 86400
TIERS = (Tier(5.0, 20), Tier(60.0, 30), Tier(600.0, 10))


def filled(n: int = 400) -> History:
    h = History(tiers=TIERS)
    for i in range(n):
        memory = None if i == 7 else MemInfo(total=32 * GIB, free=GIB + i * 4096)
        ksm = KsmReading(present=True, values={"run": i // 100 % 2, "pages_sharing": i})
        h.observe(Snapshot(T0 + 10 * i, ksm, memory, 4096))
    return h


def same(a: Series, b: Series) -> bool:
    def eq(x: list[float], y: list[float]) -> bool:
        return len(x) == len(y) and all(
            (math.isnan(p) and math.isnan(q)) or p == q for p, q in zip(x, y)
        )

    return eq(a.times, b.times) and all(eq(a.columns[c], b.columns[c]) for c in a.columns)


def test_saved_points_come_back_after_a_restart(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state")
    before = filled()
    assert HistoryFile(history_path(state.path), before, state).save()
    assert (tmp_path / "state.history").stat().st_mode & 0o777 == 0o640
    after = History(tiers=TIERS)
    HistoryFile(history_path(state.path), after, state).load()
    assert same(after.series(), before.series())
    assert state.errors == 0


def test_every_bad_line_is_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = [[5, T0, GIB, None, GIB, None, 0, 1], [5, T0 + 5, GIB, None, GIB, None, 0, 1]]
    lines = [json.dumps(p).encode() for p in good] + [
        b"garbage",
        b"[" * 5000 + b"]" * 5000,  # nested too deep (and too long)
        b"[5, 1e400, 1, 1, 1, 1, 1, 1]",  # an infinite time
        b"[5, 1, -1, 1, 1, 1, 1, 1]",  # negative memory
        b"[5, 99999999999, 1, 1, 1, 1, 1, 1]",  # years ahead of the clock
        b"[5, 1, 1, 1, 1, 1, 1, 1]",  # before the ring's line above: out of order
        b"[7, 1700000010, 1, 1, 1, 1, 1, 1]",  # no such ring
        b"[5, 1700000010, 1, 1, 1, 1, 1, true]",
        b"[5, 1700000010, 1, 1, 1, 1, 1]",
        b"\xff\xfe[1700000010]",
        b"[5, 1700000010, " + b"1" * 400 + b", 1, 1, 1, 1, 1]",
    ]
    points, dropped = parse_points(b"\n".join(lines), (5.0, 60.0, 600.0), NOW)
    assert [(step, p[0]) for step, p in points] == [(5.0, T0), (5.0, T0 + 5)]
    assert math.isnan(points[0][1][2]) and points[0][1][1] == GIB
    assert sum(dropped.values()) == 11, dropped
    assert {"not UTF-8", "too long", "not after the ring's line before"} <= set(dropped)
    state = StateFile(tmp_path / "state")
    (tmp_path / "state.history").write_bytes(b"\n".join(lines))
    h = History(tiers=TIERS)
    HistoryFile(tmp_path / "state.history", h, state).load()
    assert h.series().times == [T0, T0 + 5]
    assert state.errors == 11
    assert "11 lines dropped" in caplog.text


def test_a_fifo_in_its_place_is_refused_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "state.history"
    os.mkfifo(path)  # no writer: a read would block for good
    state = StateFile(tmp_path / "state")
    h = filled()
    f = HistoryFile(path, h, state)
    done = threading.Event()
    threading.Thread(target=lambda: (f.load(), done.set()), daemon=True).start()
    assert done.wait(10), "load blocked on a FIFO"
    assert state.errors == 1
    assert not f.save() and state.errors == 2
    assert path.is_fifo()


def test_the_daemon_saves_every_few_minutes_and_loads_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    clock = SimpleNamespace(time=lambda: T0)
    monkeypatch.setattr(monitor_module, "time", clock)
    state = f"--state.file={tmp_path}/state"
    with built_daemon(root, state) as d:
        d.watcher.poll_once()
        assert not (tmp_path / "state.history").exists()
        write_ksm(root, "run", 1)  # an edge, for the state file
        clock.time = lambda: T0 + SAVE_EVERY_SECONDS
        d.watcher.poll_once()  # five minutes on: saved
        saved = d.server.app.watched.history.series()
    assert len(saved.times) == 2
    # Two points in the 5 s and the 1 min rings, one 10 min bucket for both.
    assert (tmp_path / "state.history").read_text().count("\n") == 2 + 2 + 1
    with built_daemon(root, state) as d:
        assert same(d.server.app.watched.history.series(), saved)
    # And `transitions --plot` draws them beside the state file's edges.
    out = tmp_path / "ksm.svg"
    r = run_cli("transitions", state, f"--plot={out}")
    assert r.returncode == 0, r.stderr
    assert 'data-series="saved_bytes"' in out.read_text()
