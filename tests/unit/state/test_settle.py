"""Settle detection over exact sequences of looks at run, full_scans and pages_sharing."""

from __future__ import annotations

from typing import Optional

import pytest

from ksm_exporter.readers.sysfs_ksm import KsmReading
from ksm_exporter.state.settle import SettleState, SettleTracker, stable
from ksm_exporter.state.snapshot import Snapshot

STOPPED, RUNNING, UNMERGING = 0, 1, 2

Look = tuple[
    float, Optional[int], Optional[int], Optional[int]
]  # time, run, full_scans, pages_sharing
After = tuple[bool, Optional[float]]  # settled, duration after the look
NOT = (False, None)


def check(tracker: SettleTracker, steps: list[tuple[Look, After]]) -> None:
    for look, after in steps:
        tracker.observe(*look)
        state = tracker.state()
        assert (state.settled, state.duration_seconds) == after, look


def test_settles_after_k_scans_within_one_percent() -> None:
    check(
        SettleTracker(full_scans=3),
        [
            ((0.0, STOPPED, 10, 0), NOT),
            ((1.0, RUNNING, 10, 0), NOT),  # the start: the reference sample
            ((2.0, RUNNING, 10, 800), NOT),  # mid-scan: not a sample
            ((3.0, RUNNING, 11, 5000), NOT),
            ((4.0, RUNNING, 12, 9000), NOT),
            ((5.0, RUNNING, 13, 9050), NOT),  # 3 scans since the reference (0): moved
            ((6.0, RUNNING, 14, 9080), NOT),  # window 5000..9080: moved
            ((7.0, RUNNING, 15, 9085), (True, 6.0)),  # 9000..9085: 85 < 1% of 9085
            ((8.0, RUNNING, 15, 20000), (True, 6.0)),  # mid-scan: held until the scan ends
            ((9.0, RUNNING, 16, 9100), (True, 6.0)),  # 20000 was no sample: 9050..9100
        ],
    )


def test_falls_back_when_pages_sharing_moves_again() -> None:
    tracker = SettleTracker(full_scans=2)
    check(
        tracker,
        [
            ((0.0, STOPPED, 0, 0), NOT),
            ((10.0, RUNNING, 0, 0), NOT),
            ((20.0, RUNNING, 1, 1000), NOT),
            ((30.0, RUNNING, 2, 1000), NOT),  # window 0, 1000, 1000: moved
            ((40.0, RUNNING, 3, 1005), (True, 30.0)),  # 1000, 1000, 1005
            ((50.0, RUNNING, 4, 2000), (False, 30.0)),  # a new VM: 1000, 1005, 2000
            ((60.0, RUNNING, 5, 2001), (False, 30.0)),
            ((70.0, RUNNING, 6, 2002), (True, 30.0)),  # the duration is the first settle's
        ],
    )
    assert tracker.state() == SettleState(settled=True, duration_seconds=30.0, full_scans=2)


def test_scans_faster_than_looks() -> None:
    check(
        SettleTracker(full_scans=3),
        [
            ((0.0, STOPPED, 100, 500), NOT),
            ((1.0, RUNNING, 100, 500), NOT),
            ((2.0, RUNNING, 104, 500), (True, 1.0)),  # four scans between two looks
        ],
    )


def test_nothing_to_merge_is_settled() -> None:
    check(
        SettleTracker(full_scans=1),
        [
            ((0.0, STOPPED, 0, 0), NOT),
            ((1.0, RUNNING, 0, 0), NOT),
            ((2.0, RUNNING, 1, 0), (True, 1.0)),
        ],
    )


def test_stop_and_restart() -> None:
    check(
        SettleTracker(full_scans=1),
        [
            ((0.0, STOPPED, 0, 0), NOT),
            ((1.0, RUNNING, 0, 0), NOT),
            ((2.0, RUNNING, 1, 0), (True, 1.0)),
            ((3.0, STOPPED, 1, 0), (False, 1.0)),  # not running: not settled; duration stays
            ((4.0, RUNNING, 1, 0), NOT),  # a new start: no duration until it settles
            ((5.0, RUNNING, 2, 300), NOT),
            ((6.0, RUNNING, 3, 301), (True, 2.0)),
            ((7.0, UNMERGING, 3, 0), (False, 2.0)),
        ],
    )


def test_started_before_the_exporter_settles_without_a_duration() -> None:
    check(
        SettleTracker(full_scans=2),
        [
            ((0.0, RUNNING, 50, 7000), NOT),
            ((1.0, RUNNING, 51, 7001), NOT),
            ((2.0, RUNNING, 52, 7002), (True, None)),
        ],
    )


def test_unreadable_values_and_a_counter_that_goes_back() -> None:
    check(
        SettleTracker(full_scans=1),
        [
            ((0.0, STOPPED, 5, 0), NOT),
            ((1.0, RUNNING, 5, 100), NOT),
            ((2.0, None, None, None), NOT),  # the KSM directory unreadable: nothing learnt
            ((3.0, RUNNING, 6, None), NOT),  # pages_sharing unreadable: no sample
            ((4.0, RUNNING, 2, 100), NOT),  # full_scans went back: start over from here
            ((5.0, RUNNING, 3, 100), (True, 4.0)),
        ],
    )


def test_a_late_look_is_ignored() -> None:
    tracker = SettleTracker(full_scans=1)
    for look in ((0.0, STOPPED, 0, 0), (2.0, RUNNING, 0, 10), (3.0, RUNNING, 1, 10)):
        tracker.observe(*look)
    tracker.observe(1.0, STOPPED, 0, 0)  # a scrape that started before the poll at 2.0
    assert tracker.state().settled


def test_fed_by_snapshots() -> None:
    tracker = SettleTracker(full_scans=1)
    for t, run, scans in ((0.0, 0, 0), (1.0, 1, 0), (2.0, 1, 1)):
        values = {"run": run, "full_scans": scans, "pages_sharing": 40}
        tracker.observe_snapshot(
            Snapshot(taken_at=t, ksm=KsmReading(True, values), memory=None, page_size=4096)
        )
    assert tracker.state() == SettleState(settled=True, duration_seconds=1.0, full_scans=1)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([100, 100], True),
        ([0, 0], True),
        ([1000, 1010], True),  # 10 < 1% of 1010
        ([1000, 1011], False),
        ([0, 1], False),
    ],
)
def test_stable(values: list[int], expected: bool) -> None:
    assert stable(values) is expected


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SettleTracker(full_scans=0)
