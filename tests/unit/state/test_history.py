"""The watcher's history for the chart: bounded, downsampled, NaN for what was not seen."""

from __future__ import annotations

import math
from typing import Optional

from ksm_exporter.model.chart import COLUMNS
from ksm_exporter.model.derived import RunState
from ksm_exporter.model.edge_cause import Cause, EdgeContext
from ksm_exporter.readers.meminfo import MemInfo
from ksm_exporter.readers.sysfs_ksm import KsmReading
from ksm_exporter.state.history import (
    TIERS,
    History,
    Tier,
    budget_bytes,
    marks_of,
    series_of_edges,
)
from ksm_exporter.state.snapshot import Snapshot
from ksm_exporter.state.transitions import TransitionTracker

GIB = 2**30
T0 = 1_700_000_000.0


def snap(t: float, free: int = 6 * GIB, run: int = 0, memory: bool = True) -> Snapshot:
    mem: Optional[MemInfo] = (
        MemInfo(total=32 * GIB, free=free, available=free + GIB, buffers=GIB, cached=2 * GIB)
        if memory
        else None
    )
    ksm = KsmReading(present=True, values={"run": run, "pages_sharing": 1000})
    return Snapshot(taken_at=t, ksm=ksm, memory=mem, page_size=4096)


def test_the_budget_is_fixed_and_covers_more_than_a_day() -> None:
    assert budget_bytes() == sum(t.points for t in TIERS) * 7 * 8 < 256 * 1024
    assert TIERS[0].step <= 5  # at most one point every few seconds
    assert max(t.step * t.points for t in TIERS) >= 7 * 86400


def test_polls_are_averaged_per_bucket_and_older_points_come_from_coarser_rings() -> None:
    h = History(tiers=(Tier(5.0, 12), Tier(60.0, 30)))
    for i in range(0, 1800):  # half an hour, one poll a second
        h.observe(snap(T0 + i, free=(6 * GIB if i < 900 else 7 * GIB)))
    s = h.series()
    times = s.times
    assert times == sorted(times)
    assert times[0] < T0 + 60  # the coarse ring still holds the start
    fine = [t for t in times if t >= T0 + 1800 - 60]
    assert len(fine) <= 13  # the last minute: 5 s points (and the open one)
    assert all(b - a >= 4.9 for a, b in zip(times, times[1:-1]))  # never finer than 5 s
    assert len(times) <= 12 + 1 + 30 + 1
    free = s.columns["mem_free_bytes"]
    assert free[0] == 6 * GIB and free[-1] == 7 * GIB
    # ksmtuned's free figure: MemFree + Buffers + Cached, as its script sums them.
    assert s.columns["ksmtuned_free_bytes"][-1] == 10 * GIB
    assert s.columns["saved_bytes"][-1] == 1000 * 4096
    assert s.columns["run"][-1] == 0


def test_a_ring_never_grows_past_its_points() -> None:
    h = History(tiers=(Tier(5.0, 10),))
    for i in range(1000):
        h.observe(snap(T0 + 5 * i))
    assert len(h.series().times) == 10 + 1  # ten closed, one open
    assert h.series(since=T0 + 5 * 995).times == [T0 + 5 * i for i in range(995, 1000)]


def test_what_was_not_read_is_nan_not_zero_and_the_threshold_only_after_an_edge() -> None:
    tracker = TransitionTracker()
    h = History(tiers=(Tier(5.0, 10),))
    h.observe(snap(T0, memory=False))
    assert math.isnan(h.series().columns["mem_free_bytes"][0])
    h.observe(snap(T0 + 10))
    assert math.isnan(h.series().columns["ksmtuned_threshold_bytes"][-1])  # not known yet
    tracker.observe(0, None, T0)
    context = EdgeContext(Cause.KSMTUNED, None, 6 * GIB, 20 * GIB, 5 * GIB)
    edge = tracker.observe(1, None, T0 + 11, context)
    assert edge is not None
    h.note_edge(edge)
    h.observe(snap(T0 + 20, run=1))
    assert h.series().columns["ksmtuned_threshold_bytes"][-1] == 6 * GIB
    # Restored edges give it at start, too.
    assert History(tracker.state().history)._threshold == 6 * GIB


def test_edges_become_marks_with_their_cause_and_a_state_file_alone_gives_points() -> None:
    tracker = TransitionTracker()
    mem = MemInfo(total=32 * GIB, free=5 * GIB, available=6 * GIB)
    tracker.observe(0, mem, T0)
    tracker.observe(1, mem, T0 + 60, EdgeContext(Cause.KSMTUNED, None, 6 * GIB, 0, 5 * GIB))
    tracker.observe(0, mem, T0 + 120, EdgeContext(Cause.OTHER, "mom<b>", None, None, None))
    history = tracker.state().history
    marks = marks_of(history)
    assert [(m.to_state, m.cause, m.free_bytes) for m in marks] == [
        (RunState.RUNNING.value, "ksmtuned", 5 * GIB),
        (RunState.STOPPED.value, "other", 5 * GIB),  # MemFree when ksmtuned's is unknown
    ]
    assert "cause: ksmtuned" in marks[0].label
    assert "free 5120 < threshold 6144" in marks[0].label
    assert "cause: other (mom<b>)" in marks[1].label  # escaped by the renderer, not here
    s = series_of_edges(history)
    assert s.times == [T0 + 60, T0 + 120]
    assert s.columns["ksmtuned_free_bytes"][0] == 5 * GIB
    assert math.isnan(s.columns["saved_bytes"][0])
    assert set(s.columns) == set(COLUMNS)
